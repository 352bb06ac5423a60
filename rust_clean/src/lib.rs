//! tc3-prep's engine: LF-Amazon-1.3M `trn.json` lines in, clean Parquet splits and a report out.
//!
//! Plain Rust throughout; the Python binding lives in `python.rs` behind the `python` feature.

pub mod batch;
pub mod dedup;
mod entities;
pub mod kinds;
pub mod markers;
pub mod output;
mod pattern;
pub mod pipeline;
pub mod record;
pub mod stats;
pub mod text;
pub mod unescape;

#[cfg(feature = "python")]
mod python;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use regex::Regex;
use serde_json::{json, Value};

pub use pipeline::{run, Progress};
pub use record::Filters;
pub use stats::Stats;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepError {
    /// A mistake in how the run was asked for (bad option, existing output).
    Usage(String),
    /// The input cannot be read as asked (missing, truncated, corrupt, too many malformed lines).
    Input(String),
    /// Writing the output failed.
    Io(String),
    /// The caller asked to stop (Ctrl-C).
    Interrupted,
}

impl fmt::Display for PrepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepError::Usage(m) | PrepError::Input(m) | PrepError::Io(m) => f.write_str(m),
            PrepError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for PrepError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dedup {
    None,
    Exact,
    Near,
}

impl Dedup {
    pub fn parse(s: &str) -> Result<Self, PrepError> {
        match s {
            "none" => Ok(Dedup::None),
            "exact" => Ok(Dedup::Exact),
            "near" => Ok(Dedup::Near),
            other => Err(PrepError::Usage(format!("--dedup must be none, exact or near, not {other:?}"))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dedup::None => "none",
            Dedup::Exact => "exact",
            Dedup::Near => "near",
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
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            card_notes: String::new(),
        }
    }
}

impl Options {
    /// Checks values a user could get wrong, before any work is done.
    pub fn validate(&self) -> Result<(), PrepError> {
        let f = &self.filters;
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

/// Compiles `--drop-pattern` values, naming the one that does not parse.
pub fn compile_patterns(patterns: &[String]) -> Result<Vec<Regex>, PrepError> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| PrepError::Usage(format!("--drop-pattern {p:?} is not a valid regex: {e}"))))
        .collect()
}

/// Reads `--drop-kinds` values, naming the one that is not a kind.
pub fn parse_kinds(names: &[String]) -> Result<Vec<kinds::Kind>, PrepError> {
    names
        .iter()
        .map(|n| {
            kinds::Kind::parse(n).ok_or_else(|| {
                let known: Vec<&str> = kinds::Kind::ALL.iter().map(|k| k.name()).collect();
                PrepError::Usage(format!("--drop-kinds: {n:?} is not a kind (one of {})", known.join(", ")))
            })
        })
        .collect()
}

/// An input: a file (plain or gzip, told apart by content) or standard input.
#[derive(Clone, Debug)]
pub enum Source {
    Path(PathBuf),
    Stdin,
}

impl Source {
    pub fn parse(arg: &str) -> Self {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::Path(PathBuf::from(arg))
        }
    }

    pub fn name(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Stdin => "<stdin>".into(),
        }
    }

    /// Bytes in a regular file; `None` for standard input and pipes, whose size is not known in advance.
    pub fn size(&self) -> Option<u64> {
        match self {
            Source::Path(p) => std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len()),
            Source::Stdin => None,
        }
    }

    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Source::Path(p) => Ok(Box::new(File::open(p)?)),
            Source::Stdin => Ok(Box::new(io::stdin())),
        }
    }

    /// Fails early, naming the file, when an input is missing or unreadable.
    pub fn check(&self) -> Result<(), PrepError> {
        let Source::Path(p) = self else { return Ok(()) };
        let cannot_read = |e: io::Error| PrepError::Usage(format!("cannot read {}: {e}", p.display()));
        match std::fs::metadata(p).map_err(cannot_read)? {
            m if m.is_dir() => Err(PrepError::Usage(format!("{} is a directory, not an input file", p.display()))),
            // A named pipe (or `<(...)`) is opened once, by the reader: opening it here would wait for its
            // writer, and closing it again would end the writer's output before the reader opens it.
            m if !m.is_file() => Ok(()),
            _ => File::open(p).map(drop).map_err(cannot_read),
        }
    }
}
