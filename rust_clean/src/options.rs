//! What a run is asked to do: the one place the options' defaults are written and the one place they are checked.
//!
//! Every caller (Rust, the Python binding, the `tc3-prep` command line built from it) starts from
//! `Options::default()` and ends with `Options::validate`; messages name the command-line flag.

use std::path::PathBuf;

use regex::Regex;
use serde_json::{json, Value};

use crate::error::PrepError;
use crate::kinds::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dedup {
    None,
    Exact,
    Near,
}

impl Dedup {
    pub const ALL: [Dedup; 3] = [Dedup::None, Dedup::Exact, Dedup::Near];

    pub fn parse(s: &str) -> Result<Self, PrepError> {
        Dedup::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| PrepError::Usage(format!("--dedup must be none, exact or near, not {s:?}")))
    }

    pub fn name(self) -> &'static str {
        match self {
            Dedup::None => "none",
            Dedup::Exact => "exact",
            Dedup::Near => "near",
        }
    }
}

/// Length bounds and extra patterns: the options that decide one record on its own.
#[derive(Clone, Debug)]
pub struct Filters {
    pub min_title_chars: usize,
    pub max_title_chars: usize,
    pub min_desc_chars: usize,
    pub max_desc_chars: usize,
    pub drop_patterns: Vec<Regex>,
    /// `--drop-kinds`: kept records of these kinds are dropped instead.
    pub drop_kinds: Vec<Kind>,
    /// `--strip-attributed-quotes`: remove quoted praise with its source before the length filters.
    pub strip_attributed_quotes: bool,
}

impl Default for Filters {
    fn default() -> Self {
        Filters {
            min_title_chars: 3,
            max_title_chars: 400,
            min_desc_chars: 40,
            max_desc_chars: 5000,
            drop_patterns: vec![],
            drop_kinds: vec![],
            strip_attributed_quotes: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub filters: Filters,
    pub val_fraction: f64,
    pub seed: u64,
    pub limit: Option<u64>,
    pub sample: Option<u64>,
    pub dedup: Dedup,
    pub rejects: Option<PathBuf>,
    pub max_errors: Option<u64>,
    pub threads: usize,
    /// Markdown appended to the dataset card (the Python layer puts the training prompts there).
    pub card_notes: String,
    /// Adds `rule_seconds` (time spent in each hot rule, summed over threads) to `stats.json`. Off by default:
    /// times vary from run to run, and everything else in a run's output does not.
    pub rule_times: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            filters: Filters::default(),
            val_fraction: 0.01,
            seed: 3407,
            limit: None,
            sample: None,
            dedup: Dedup::Exact,
            rejects: None,
            max_errors: None,
            threads: default_threads(),
            card_notes: String::new(),
            rule_times: false,
        }
    }
}

/// One worker a core: the thread count when none is asked for.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Options {
    /// Checks values a user could get wrong, before any work is done.
    pub fn validate(&self) -> Result<(), PrepError> {
        let f = &self.filters;
        for (name, value) in [("limit", self.limit), ("sample", self.sample), ("threads", Some(self.threads as u64))] {
            value.map_or(Ok(()), |v| check_whole(name, v.into()))?;
        }
        if !(0.0..=1.0).contains(&self.val_fraction) {
            return Err(PrepError::Usage(format!("--val-fraction must be between 0 and 1, not {}", self.val_fraction)));
        }
        if f.min_title_chars > f.max_title_chars {
            return Err(PrepError::Usage("--min-title-chars is larger than --max-title-chars".into()));
        }
        if f.min_desc_chars > f.max_desc_chars {
            return Err(PrepError::Usage("--min-desc-chars is larger than --max-desc-chars".into()));
        }
        Ok(())
    }

    /// The options as `stats.json` and the dataset card record them (`rule_times` and `card_notes` change no output).
    pub fn to_json(&self) -> Value {
        let f = &self.filters;
        json!({
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "limit": self.limit,
            "sample": self.sample,
            "min_title_chars": f.min_title_chars,
            "max_title_chars": f.max_title_chars,
            "min_desc_chars": f.min_desc_chars,
            "max_desc_chars": f.max_desc_chars,
            "dedup": self.dedup.name(),
            "drop_patterns": f.drop_patterns.iter().map(Regex::as_str).collect::<Vec<_>>(),
            "drop_kinds": f.drop_kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "strip_attributed_quotes": f.strip_attributed_quotes,
            "max_errors": self.max_errors,
            "threads": self.threads,
        })
    }
}

/// Refuses a whole-number option (named as in `to_json`) below the least it takes: 1 for `limit`, `sample` and
/// `threads` (0 would do nothing), else 0. Signed, so that a caller holding a negative number gets this message.
pub fn check_whole(name: &str, value: i128) -> Result<(), PrepError> {
    let least = if matches!(name, "limit" | "sample" | "threads") { 1 } else { 0 };
    if value >= least {
        return Ok(());
    }
    let must = if least == 1 { "at least 1" } else { "zero or more" };
    Err(PrepError::Usage(format!("--{} must be {must}, not {value}", name.replace('_', "-"))))
}

/// Compiles `--drop-pattern` values, naming the one that does not parse.
pub fn compile_patterns(patterns: &[String]) -> Result<Vec<Regex>, PrepError> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| PrepError::Usage(format!("--drop-pattern {p:?} is not a valid regex: {e}"))))
        .collect()
}

/// Reads `--drop-kinds` values, naming the one that is not a kind.
pub fn parse_kinds(names: &[String]) -> Result<Vec<Kind>, PrepError> {
    names
        .iter()
        .map(|n| {
            Kind::parse(n).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                PrepError::Usage(format!("--drop-kinds: {n:?} is not a kind (one of {})", known.join(", ")))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(e: PrepError) -> String {
        match e {
            PrepError::Usage(m) => m,
            other => panic!("not a usage error: {other:?}"),
        }
    }

    #[test]
    fn the_defaults_validate() {
        Options::default().validate().unwrap();
        assert!(Options::default().threads >= 1);
    }

    #[test]
    fn each_mistake_names_its_flag() {
        let bad = |o: Options| usage(o.validate().unwrap_err());
        assert_eq!(bad(Options { threads: 0, ..Options::default() }), "--threads must be at least 1, not 0");
        assert_eq!(bad(Options { limit: Some(0), ..Options::default() }), "--limit must be at least 1, not 0");
        assert_eq!(bad(Options { val_fraction: 2.0, ..Options::default() }), "--val-fraction must be between 0 and 1, not 2");
        let filters = Filters { min_desc_chars: 6000, ..Filters::default() };
        assert_eq!(bad(Options { filters, ..Options::default() }), "--min-desc-chars is larger than --max-desc-chars");
        assert_eq!(usage(check_whole("max_errors", -3).unwrap_err()), "--max-errors must be zero or more, not -3");
        assert_eq!(usage(check_whole("sample", -3).unwrap_err()), "--sample must be at least 1, not -3");
        check_whole("seed", 0).unwrap();
    }

    #[test]
    fn names_parse_back() {
        for d in Dedup::ALL {
            assert_eq!(Dedup::parse(d.name()), Ok(d));
        }
        assert_eq!(usage(Dedup::parse("fuzzy").unwrap_err()), "--dedup must be none, exact or near, not \"fuzzy\"");
        assert!(usage(parse_kinds(&["nope".into()]).unwrap_err()).starts_with("--drop-kinds: \"nope\" is not a kind"));
        assert!(usage(compile_patterns(&["(".into()]).unwrap_err()).starts_with("--drop-pattern \"(\" is not a valid regex"));
    }
}
