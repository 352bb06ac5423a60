//! The report of a run (`stats.json`) and the dataset card (`README.md`) that `datasets` reads.

use std::fs;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::kinds::Kind;
use crate::markers::holds_template_marker;
use crate::record::{CleanedRef, MalformedKind, Reason};
use crate::text::{Changes, RULES};
use crate::timing::{self, Nanos, Rule};
use crate::error::PrepError;
use crate::options::Options;
use crate::source::Source;

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub inputs: Vec<(String, Option<u64>)>,
    /// Bytes read from the inputs as stored (before gzip is undone): known for standard input and pipes too.
    pub bytes_read: u64,
    pub lines: u64,
    pub blank_lines: u64,
    /// Non-blank lines: the records read, malformed ones included.
    pub records: u64,
    pub kept_before_sampling: u64,
    pub kept_train: u64,
    pub kept_validation: u64,
    pub sampled_out: u64,
    pub dropped: [u64; Reason::ALL.len()],
    pub malformed_kinds: [u64; MalformedKind::ALL.len()],
    pub cleaned: [u64; RULES.len()],
    /// Written records of each kind (after dedup and sampling), in `Kind::ALL` order.
    pub kinds: [u64; Kind::ALL.len()],
    /// Written records whose title or description holds a chat-template marker (`markers.rs`); kept.
    pub template_markers: u64,
    pub first_malformed: Option<String>,
    pub files: Vec<String>,
    pub options: Value,
    pub seconds: f64,
    /// Time in each hot rule summed over threads, when asked for (`Options::rule_times`).
    pub rule_nanos: Option<Nanos>,
}

impl Stats {
    pub fn new(inputs: &[Source], opts: &Options) -> Self {
        Stats {
            inputs: inputs.iter().map(|s| (s.name(), s.size())).collect(),
            options: opts.to_json(),
            rule_nanos: opts.rule_times.then_some([0; Rule::ALL.len()]),
            ..Stats::default()
        }
    }

    pub fn malformed(&mut self, kind: MalformedKind) {
        self.dropped[Reason::Malformed as usize] += 1;
        self.malformed_kinds[kind as usize] += 1;
    }

    /// Counts a written record: its kind, and whether it holds a chat-template marker.
    pub fn written(&mut self, record: &CleanedRef) {
        self.kinds[record.kind as usize] += 1;
        let marked = holds_template_marker(record.title) || holds_template_marker(record.description);
        self.template_markers += marked as u64;
    }

    pub fn changed(&mut self, changes: Changes) {
        for (i, count) in self.cleaned.iter_mut().enumerate() {
            *count += changes.has(i) as u64;
        }
    }

    pub fn add_rule_times(&mut self, more: Nanos) {
        if let Some(total) = &mut self.rule_nanos {
            timing::add(total, more);
        }
    }

    pub fn to_json(&self) -> Value {
        let named = |names: &[&str], counts: &[u64]| -> Map<String, Value> {
            names.iter().zip(counts).map(|(n, c)| (n.to_string(), json!(c))).collect()
        };
        let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
        let kinds: Vec<&str> = MalformedKind::ALL.iter().map(|k| k.name()).collect();
        let mut report = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "inputs": self.inputs.iter().map(|(name, bytes)| json!({"path": name, "bytes": bytes})).collect::<Vec<_>>(),
            "bytes": self.bytes_read,
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "records": self.records,
            "kept": {"train": self.kept_train, "validation": self.kept_validation, "total": self.kept_train + self.kept_validation},
            "sampled_out": self.sampled_out,
            "dropped": named(&reasons, &self.dropped),
            "malformed_kinds": named(&kinds, &self.malformed_kinds),
            "first_malformed": self.first_malformed,
            "cleaned": named(&RULES, &self.cleaned),
            "kinds": named(&Kind::ALL.map(Kind::name), &self.kinds),
            "template_markers": self.template_markers,
            "files": self.files.iter().map(|f| format!("data/{f}")).collect::<Vec<_>>(),
            "options": self.options,
            "seconds": millis(self.seconds),
        });
        if let Some(nanos) = self.rule_nanos {
            let seconds: Map<String, Value> =
                Rule::ALL.iter().zip(nanos).map(|(r, n)| (r.name().to_string(), json!(millis(n as f64 / 1e9)))).collect();
            report["rule_seconds"] = Value::Object(seconds);
        }
        report
    }

    pub fn write_json(&self, path: &Path) -> Result<(), PrepError> {
        let text = serde_json::to_string_pretty(&self.to_json()).expect("stats serialize") + "\n";
        fs::write(path, text).map_err(|e| PrepError::Io(format!("writing {}: {e}", path.display())))
    }
}

/// Seconds to the millisecond, as stats.json gives times.
fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// A Hub dataset card whose `configs:` block makes `datasets.load_dataset(dir)` find both splits.
/// Nothing run-dependent (time, thread count) goes in, so it is as reproducible as the data.
pub fn write_dataset_card(dir: &Path, stats: &Stats, notes: &str) -> Result<(), PrepError> {
    let mut options = stats.options.clone();
    if let Some(o) = options.as_object_mut() {
        o.remove("threads");
    }
    let dropped: String = Reason::ALL
        .iter()
        .zip(&stats.dropped)
        .map(|(r, n)| format!("| {} | {n} |\n", r.name()))
        .collect();
    let cleaned: String = RULES.iter().zip(&stats.cleaned).map(|(rule, n)| format!("| {rule} | {n} |\n")).collect();
    let kinds: String = Kind::ALL.iter().zip(&stats.kinds).map(|(k, n)| format!("| {} | {n} |\n", k.name())).collect();
    let header = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*",
        "  - split: validation",
        "    path: data/validation-*",
        "task_categories:",
        "- text-generation",
        "language:",
        "- en",
        "pretty_name: LF-Amazon-1.3M titles and descriptions, cleaned by tc3-prep",
        "---",
    ]
    .join("\n");
    let card = format!(
        "{header}\n\n# Product titles and descriptions (tc3-prep)\n\n\
         Cleaned from the LF-Amazon-1.3M `trn.json` (\"The AmazonTitles-1.3MM\") by `tc3-prep` {version}.\n\
         Columns: `uid` (the product's ASIN), `title`, `description`, `kind` (what the description is: \
         `description`, `review_quotes`, `author_bio`, `metadata_only` or `mixed`). Rows keep input order.\n\n\
         | split | rows |\n|---|---|\n| train | {train} |\n| validation | {validation} |\n\n\
         Read {lines} lines ({blank} blank, {sampled} left out by `--sample`). Dropped records by reason:\n\n\
         | reason | records |\n|---|---|\n{dropped}\n\
         Records changed by each cleaning rule: HTML character references decoded (a name without `;` only \
         where a browser would decode it), HTML comments and tags with HTML element names removed (other \
         `<...>` is text), Unicode NFC, white space, boilerplate, attributed quotes (when asked):\n\n\
         | rule | records |\n|---|---|\n{cleaned}\n\
         Rows of each content kind (rules in tc3's docs/cleaning.md):\n\n\
         | kind | rows |\n|---|---|\n{kinds}\n\
         Options: `{options}`\n\n\
         The text is Amazon product metadata as redistributed by the Extreme Classification Repository.\n{notes}",
        version = env!("CARGO_PKG_VERSION"),
        train = stats.kept_train,
        validation = stats.kept_validation,
        lines = stats.lines,
        blank = stats.blank_lines,
        sampled = stats.sampled_out,
        options = options,
        notes = if notes.is_empty() { String::new() } else { format!("\n{}\n", notes.trim_end()) },
    );
    let path = dir.join("README.md");
    fs::write(&path, card).map_err(|e| PrepError::Io(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_front_matter_keeps_its_indentation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_dataset_card(dir, &Stats::default(), "## Notes\nfrom the caller").unwrap();
        let card = fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(card.starts_with("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"));
        assert!(card.contains("\n| train | 0 |\n"));
        assert!(card.contains("\n| entity_without_semicolon | 0 |\n| double_escaped | 0 |\n"));
        assert!(card.contains("\n| nfc_normalised | 0 |\n"));
        assert!(card.ends_with("Repository.\n\n## Notes\nfrom the caller\n"));
    }
}
