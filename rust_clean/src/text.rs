//! The cleaning rules of docs/cleaning.md, one function a rule, each reporting whether it changed the text.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::unescape::unescape_twice;

static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<!--.*?-->|</?[A-Za-z][^<>]*>").unwrap());
static THIS_TEXT_REFERS_TO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)-*\s*this text refers to\b.*\z").unwrap());
static REED_FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:(?:copyright|\(c\)|©)[\s\d,.()-]*)+(?:by\s+)?reed business information(?:,?\s*inc\.?|,?\s*a division of reed elsevier,?\s*inc\.?)?(?:\s*all rights reserved\.?)?",
    )
    .unwrap()
});

/// Names of the rules, as counted in `stats.json` `cleaned`, in the order they run.
pub const RULES: [&str; 7] =
    ["html_entities", "double_escaped", "html_tags", "whitespace", "this_text_refers_to", "reed_footer", "drop_pattern"];

/// Which rules changed a record (title or description), one bit a rule of `RULES`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Changes(pub u8);

impl Changes {
    pub const HTML_ENTITIES: u8 = 1 << 0;
    pub const DOUBLE_ESCAPED: u8 = 1 << 1;
    pub const HTML_TAGS: u8 = 1 << 2;
    pub const WHITESPACE: u8 = 1 << 3;
    pub const THIS_TEXT_REFERS_TO: u8 = 1 << 4;
    pub const REED_FOOTER: u8 = 1 << 5;
    pub const DROP_PATTERN: u8 = 1 << 6;

    fn mark(&mut self, rule: u8, changed: bool) {
        if changed {
            self.0 |= rule;
        }
    }

    pub fn has(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

/// Rules 1-3, shared by title and description: entities, tags, white space.
pub fn clean_text(s: &str, changes: &mut Changes) -> String {
    let (unescaped, twice) = unescape_twice(s);
    changes.mark(Changes::HTML_ENTITIES, matches!(unescaped, Cow::Owned(_)));
    changes.mark(Changes::DOUBLE_ESCAPED, twice);
    let untagged = TAG.replace_all(&unescaped, " ");
    changes.mark(Changes::HTML_TAGS, matches!(untagged, Cow::Owned(_)));
    let spaced = normalize_space(&untagged);
    changes.mark(Changes::WHITESPACE, spaced != untagged);
    spaced
}

/// Rules 4-7 on an already `clean_text`-ed description: boilerplate removed, white space settled again.
pub fn strip_boilerplate(desc: String, drop_patterns: &[Regex], changes: &mut Changes) -> String {
    let mut text = desc;
    let mut removed = false;
    for (rule, pattern) in [(Changes::THIS_TEXT_REFERS_TO, &*THIS_TEXT_REFERS_TO), (Changes::REED_FOOTER, &*REED_FOOTER)]
        .into_iter()
        .chain(drop_patterns.iter().map(|p| (Changes::DROP_PATTERN, p)))
    {
        if let Cow::Owned(s) = pattern.replace_all(&text, "") {
            changes.mark(rule, true);
            text = s;
            removed = true;
        }
    }
    if removed {
        normalize_space(&text)
    } else {
        text
    }
}

/// Every white space, control or zero-width character becomes a space; runs collapse; ends trimmed.
pub fn normalize_space(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if is_space_like(c) {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

fn is_space_like(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

/// Lower-cased with every non-alphanumeric character removed: the key of `same_as_title` and exact dedup.
pub fn alnum_key(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Lower-cased alphanumeric words, the units of near-duplicate shingles.
pub fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> (String, Changes) {
        let mut c = Changes::default();
        (clean_text(s, &mut c), c)
    }

    fn description(s: &str, drop: &[Regex]) -> (String, Changes) {
        let mut c = Changes::default();
        let t = clean_text(s, &mut c);
        (strip_boilerplate(t, drop, &mut c), c)
    }

    #[test]
    fn entities_then_tags_then_space() {
        let (t, c) = clean("A&nbsp;<b>bold</b>&#160; &lt;i&gt;x&lt;/i&gt;\tend ");
        assert_eq!(t, "A bold x end");
        assert!(c.has(0) && c.has(2) && c.has(3) && !c.has(1));
    }

    #[test]
    fn tags_need_a_letter_so_comparisons_stay() {
        assert_eq!(clean("a < b and c > d").0, "a < b and c > d");
        assert_eq!(clean("x<!-- note\nmore -->y<br/>z").0, "x y z");
    }

    #[test]
    fn double_escape_is_counted() {
        let (t, c) = clean("AT&amp;amp;T");
        assert_eq!(t, "AT&T");
        assert!(c.has(0) && c.has(1));
    }

    #[test]
    fn unicode_spaces_and_controls() {
        assert_eq!(normalize_space("\u{feff} a\u{a0}\u{2003}b\u{200b}\u{0}c\r\n\u{85}d \u{3000}"), "a b c d");
        assert_eq!(normalize_space(""), "");
        assert_eq!(normalize_space(" \t "), "");
    }

    #[test]
    fn this_text_refers_to_suffix() {
        let (t, c) = description("Great book.--Brian Bruya--This text refers to theHardcoveredition.", &[]);
        assert_eq!(t, "Great book.--Brian Bruya");
        assert!(c.has(4));
        assert_eq!(description("--This text refers to thePaperbackedition.", &[]).0, "");
    }

    #[test]
    fn reed_footers() {
        for footer in [
            "Copyright 1995 Reed Business Information, Inc.",
            "Copyright &copy; Reed Business Information, a division of Reed Elsevier Inc. All rights reserved.",
            "(c) Copyright 2004 Reed Business Information",
        ] {
            let (t, c) = description(&format!("A fine novel. (Jan.){footer}"), &[]);
            assert_eq!(t, "A fine novel. (Jan.)", "{footer}");
            assert!(c.has(5));
        }
        let both = "Photos.Copyright 1991 Reed Business Information, Inc.--This text refers to an out of print edition.";
        assert_eq!(description(both, &[]).0, "Photos.");
    }

    #[test]
    fn drop_patterns_and_second_trim() {
        let drop = [Regex::new(r"(?i)free shipping!?").unwrap()];
        let (t, c) = description("Free shipping! Sturdy  tutu.", &drop);
        assert_eq!(t, "Sturdy tutu.");
        assert!(c.has(6) && !c.has(4));
    }

    #[test]
    fn keys() {
        assert_eq!(alnum_key("The  Prophet!! (Hardcover)"), "theprophethardcover");
        assert_eq!(words("Ab, cd-EF  1").collect::<Vec<_>>(), ["ab", "cd", "ef", "1"]);
    }
}
