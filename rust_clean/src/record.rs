//! One input line to one outcome: a cleaned record, or the reason it is dropped.

use std::borrow::Cow;

use serde::Deserialize;

use crate::kinds::{self, Kind};
use crate::options::Filters;
use crate::text::{clean_text, same_alnum_key, strip_boilerplate, Changes};
use crate::timing::{self, Rule};

/// Why a record is not kept, named as in `stats.json` `dropped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Malformed,
    EmptyTitle,
    EmptyDescription,
    SameAsTitle,
    TooShort,
    TooLong,
    Duplicate,
    NearDuplicate,
    /// `--drop-kinds`: one reason a kind, so stats.json names what was dropped.
    KindDescription,
    KindReviewQuotes,
    KindAuthorBio,
    KindMetadataOnly,
    KindMixed,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Malformed,
        Reason::EmptyTitle,
        Reason::EmptyDescription,
        Reason::SameAsTitle,
        Reason::TooShort,
        Reason::TooLong,
        Reason::Duplicate,
        Reason::NearDuplicate,
        Reason::KindDescription,
        Reason::KindReviewQuotes,
        Reason::KindAuthorBio,
        Reason::KindMetadataOnly,
        Reason::KindMixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::EmptyTitle => "empty_title",
            Reason::EmptyDescription => "empty_description",
            Reason::SameAsTitle => "same_as_title",
            Reason::TooShort => "too_short",
            Reason::TooLong => "too_long",
            Reason::Duplicate => "duplicate",
            Reason::NearDuplicate => "near_duplicate",
            Reason::KindDescription => "kind_description",
            Reason::KindReviewQuotes => "kind_review_quotes",
            Reason::KindAuthorBio => "kind_author_bio",
            Reason::KindMetadataOnly => "kind_metadata_only",
            Reason::KindMixed => "kind_mixed",
        }
    }

    fn dropped_kind(kind: Kind) -> Reason {
        match kind {
            Kind::Description => Reason::KindDescription,
            Kind::ReviewQuotes => Reason::KindReviewQuotes,
            Kind::AuthorBio => Reason::KindAuthorBio,
            Kind::MetadataOnly => Reason::KindMetadataOnly,
            Kind::Mixed => Reason::KindMixed,
        }
    }
}

/// What was wrong with a malformed line, counted in `stats.json` `malformed_kinds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedKind {
    InvalidUtf8,
    InvalidJson,
    NotObject,
    BadFieldType,
}

impl MalformedKind {
    pub const ALL: [MalformedKind; 4] =
        [MalformedKind::InvalidUtf8, MalformedKind::InvalidJson, MalformedKind::NotObject, MalformedKind::BadFieldType];

    pub fn name(self) -> &'static str {
        match self {
            MalformedKind::InvalidUtf8 => "invalid_utf8",
            MalformedKind::InvalidJson => "invalid_json",
            MalformedKind::NotObject => "not_object",
            MalformedKind::BadFieldType => "bad_field_type",
        }
    }
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow, default)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

/// A record that passed every per-record filter (dedup comes later, in input order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleaned {
    pub uid: Option<String>,
    pub title: String,
    pub description: String,
    pub kind: Kind,
}

impl Cleaned {
    pub fn borrowed(&self) -> CleanedRef<'_> {
        CleanedRef { uid: self.uid.as_deref(), title: &self.title, description: &self.description, kind: self.kind }
    }
}

/// A cleaned record's fields, borrowed: what the output columns take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanedRef<'a> {
    pub uid: Option<&'a str>,
    pub title: &'a str,
    pub description: &'a str,
    pub kind: Kind,
}

impl CleanedRef<'_> {
    pub fn to_cleaned(self) -> Cleaned {
        Cleaned { uid: self.uid.map(str::to_owned), title: self.title.to_owned(), description: self.description.to_owned(), kind: self.kind }
    }
}

/// The fields of a line as read, kept for the rejects file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Original {
    pub uid: Option<String>,
    pub title: Option<String>,
    pub content: Option<String>,
}

#[derive(Debug)]
pub enum Outcome {
    Kept { record: Cleaned, changes: Changes },
    /// `original` is kept only when asked for (the rejects file), to spare the copies otherwise.
    Dropped { reason: Reason, changes: Changes, original: Option<Original> },
    Malformed { kind: MalformedKind, error: String },
}

/// Parses one line (without its line ending) and applies cleaning and the per-record filters.
pub fn process_line(line: &[u8], filters: &Filters, keep_original: bool) -> Outcome {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => return Outcome::Malformed { kind: MalformedKind::InvalidUtf8, error: e.to_string() },
    };
    // serde would also read a struct from a JSON array: only an object is a record.
    if !text.trim_start().starts_with('{') {
        let valid_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
        let kind = if valid_json { MalformedKind::NotObject } else { MalformedKind::InvalidJson };
        return Outcome::Malformed { kind, error: "a record must be a JSON object".into() };
    }
    let raw: RawRecord = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return Outcome::Malformed { kind: malformed_kind(&e), error: e.to_string() },
    };
    clean_fields(raw.uid, raw.title, raw.content, filters, keep_original)
}

/// Cleaning and the per-record filters on fields already read (from JSON or from an Arrow batch).
pub fn clean_fields(
    uid: Option<Cow<'_, str>>,
    title: Option<Cow<'_, str>>,
    content: Option<Cow<'_, str>>,
    filters: &Filters,
    keep_original: bool,
) -> Outcome {
    let mut changes = Changes::default();
    let clean_title = title.as_deref().map(|t| timing::time(Rule::Text, || clean_text(t, &mut changes))).unwrap_or_default();
    let description = content
        .as_deref()
        .map(|c| {
            let cleaned = timing::time(Rule::Text, || clean_text(c, &mut changes));
            let text = strip_boilerplate(cleaned, &filters.drop_patterns, &mut changes);
            match filters.strip_attributed_quotes.then(|| kinds::strip_attributed_quotes(&text)).flatten() {
                Some(stripped) => {
                    changes.0 |= Changes::ATTRIBUTED_QUOTES;
                    stripped
                }
                None => text,
            }
        })
        .unwrap_or_default();
    // The kind is only worked out for records the other filters keep.
    let verdict = match judge(&clean_title, &description, filters) {
        Some(reason) => Err(reason),
        None => match timing::time(Rule::Kinds, || kinds::classify(&description)) {
            kind if filters.drop_kinds.contains(&kind) => Err(Reason::dropped_kind(kind)),
            kind => Ok(kind),
        },
    };
    match verdict {
        Ok(kind) => {
            Outcome::Kept { record: Cleaned { uid: uid.map(Cow::into_owned), title: clean_title, description, kind }, changes }
        }
        Err(reason) => Outcome::Dropped {
            reason,
            changes,
            original: keep_original.then(|| Original {
                uid: uid.map(Cow::into_owned),
                title: title.map(Cow::into_owned),
                content: content.map(Cow::into_owned),
            }),
        },
    }
}

/// The first per-record filter a cleaned (title, description) pair fails, if any.
pub fn judge(title: &str, description: &str, f: &Filters) -> Option<Reason> {
    if title.is_empty() {
        return Some(Reason::EmptyTitle);
    }
    if description.is_empty() {
        return Some(Reason::EmptyDescription);
    }
    for (text, min, max) in [(title, f.min_title_chars, f.max_title_chars), (description, f.min_desc_chars, f.max_desc_chars)] {
        let n = text.chars().count();
        if n < min {
            return Some(Reason::TooShort);
        }
        if n > max {
            return Some(Reason::TooLong);
        }
    }
    same_alnum_key(title, description).then_some(Reason::SameAsTitle)
}

fn malformed_kind(e: &serde_json::Error) -> MalformedKind {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => MalformedKind::BadFieldType,
        _ => MalformedKind::InvalidJson,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(line: &str) -> Outcome {
        process_line(line.as_bytes(), &Filters::default(), true)
    }

    fn reason(line: &str) -> Reason {
        match outcome(line) {
            Outcome::Dropped { reason, .. } => reason,
            Outcome::Malformed { .. } => Reason::Malformed,
            Outcome::Kept { record, .. } => panic!("kept {record:?}"),
        }
    }

    fn kind(line: &[u8]) -> MalformedKind {
        match process_line(line, &Filters::default(), false) {
            Outcome::Malformed { kind, .. } => kind,
            other => panic!("not malformed: {other:?}"),
        }
    }

    const DESC: &str = "A sturdy board book about a cat and her many kittens, for ages 1 to 3.";

    #[test]
    fn keeps_a_good_record_and_ignores_other_fields() {
        let line = format!(r#"{{"uid": "0001360000", "title": "Mog&#8217;s Kittens", "content": "{DESC}", "target_ind": [1, 2], "target_rel": [1.0, 1.0]}}"#);
        match outcome(&line) {
            Outcome::Kept { record, changes } => {
                assert_eq!(record.uid.as_deref(), Some("0001360000"));
                assert_eq!(record.title, "Mog\u{2019}s Kittens");
                assert_eq!(record.description, DESC);
                assert!(changes.has(0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_reason() {
        assert_eq!(reason(&format!(r#"{{"uid": "a", "title": "", "content": "{DESC}"}}"#)), Reason::EmptyTitle);
        assert_eq!(reason(&format!(r#"{{"uid": "a", "title": null, "content": "{DESC}"}}"#)), Reason::EmptyTitle);
        assert_eq!(reason(r#"{"uid": "a", "title": "Some title"}"#), Reason::EmptyDescription);
        assert_eq!(reason(r#"{"uid": "a", "title": "Some title", "content": "--This text refers to thePaperbackedition."}"#), Reason::EmptyDescription);
        assert_eq!(reason(&format!(r#"{{"uid": "a", "title": "ab", "content": "{DESC}"}}"#)), Reason::TooShort);
        assert_eq!(reason(r#"{"uid": "a", "title": "Some title", "content": "VHS Tape"}"#), Reason::TooShort);
        let long = "x".repeat(5001);
        assert_eq!(reason(&format!(r#"{{"uid": "a", "title": "Some title", "content": "{long}"}}"#)), Reason::TooLong);
        let title = "Worship with Don Moen and many friends [VHS] live";
        assert_eq!(reason(&format!(r#"{{"title": "{title}", "content": "worship with don moen, and many friends (VHS) LIVE!"}}"#)), Reason::SameAsTitle);
    }

    #[test]
    fn kinds_are_given_dropped_or_stripped() {
        let quotes = "'A triumph of storytelling, tense and beautifully paced.' Sunday Times 'Gripping.' Observer";
        let line = format!(r#"{{"uid": "q", "title": "Autumn Story", "content": "{quotes}"}}"#);
        match outcome(&line) {
            Outcome::Kept { record, .. } => assert_eq!(record.kind, Kind::ReviewQuotes),
            other => panic!("{other:?}"),
        }
        let drop = Filters { drop_kinds: vec![Kind::ReviewQuotes], ..Filters::default() };
        assert!(matches!(process_line(line.as_bytes(), &drop, false), Outcome::Dropped { reason: Reason::KindReviewQuotes, .. }));
        let strip = Filters { strip_attributed_quotes: true, ..Filters::default() };
        let mixed = format!(r#"{{"title": "Lion Triumphant", "content": "{DESC} {quotes}"}}"#);
        match process_line(mixed.as_bytes(), &strip, false) {
            Outcome::Kept { record, changes } => {
                assert_eq!((record.description.as_str(), record.kind), (DESC, Kind::Description));
                assert!(changes.has(9) && crate::text::RULES[9] == "attributed_quotes");
            }
            other => panic!("{other:?}"),
        }
        // Nothing but praise: nothing left, dropped with a reason.
        assert!(matches!(process_line(line.as_bytes(), &strip, false), Outcome::Dropped { reason: Reason::EmptyDescription, .. }));
    }

    #[test]
    fn malformed_kinds() {
        assert_eq!(kind(b"{\"title\": \"a\xff\"}"), MalformedKind::InvalidUtf8);
        assert_eq!(kind(br#"{"title": "a", "content": "b""#), MalformedKind::InvalidJson);
        assert_eq!(kind(br#"{"title": "a"} trailing"#), MalformedKind::InvalidJson);
        assert_eq!(kind(br#"{"title": "\ud800 lone"}"#), MalformedKind::InvalidJson);
        assert_eq!(kind(br#"["title", "content"]"#), MalformedKind::NotObject);
        assert_eq!(kind(br#""just a string""#), MalformedKind::NotObject);
        assert_eq!(kind(b"not json"), MalformedKind::InvalidJson);
        assert_eq!(kind(br#"{"title": 5, "content": "x"}"#), MalformedKind::BadFieldType);
        assert_eq!(kind(br#"{"title": "t", "content": ["x"]}"#), MalformedKind::BadFieldType);
    }

    #[test]
    fn escapes_and_surrogate_pairs() {
        let line = format!(r#"{{"title": "Caf\u00e9 \ud83d\ude00", "content": "{DESC}\n\u00a0"}}"#);
        match outcome(&line) {
            Outcome::Kept { record, .. } => {
                assert_eq!(record.title, "Café 😀");
                assert_eq!(record.description, DESC);
            }
            other => panic!("{other:?}"),
        }
    }
}
