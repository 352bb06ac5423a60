//! The cleaning rules of docs/cleaning.md, one function a rule, each reporting whether it changed the text.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::unescape::unescape_twice;

static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<!--.*?-->|</?[A-Za-z][^<>]*>").unwrap());
/// The literal of rule 4; the rule removes from the dashes and spaces before its first match to the end.
static THIS_TEXT_REFERS_TO: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)this text refers to").unwrap());
/// Rule 5 runs only where this literal is: a cheap scan instead of the full pattern on every text.
static REED_LITERAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)reed business information").unwrap());
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
    changes.mark(Changes::WHITESPACE, matches!(spaced, Cow::Owned(_)));
    spaced.into_owned()
}

/// Rules 4-7 on an already `clean_text`-ed description: boilerplate removed, white space settled again.
pub fn strip_boilerplate(desc: String, drop_patterns: &[Regex], changes: &mut Changes) -> String {
    let mut text = desc;
    let mut removed = false;
    if let Some(m) = THIS_TEXT_REFERS_TO.find(&text) {
        let end = text[..m.start()].trim_end_matches(is_space_like).trim_end_matches('-').len();
        text.truncate(end);
        changes.mark(Changes::THIS_TEXT_REFERS_TO, true);
        removed = true;
    }
    let reed = REED_LITERAL.is_match(&text).then_some((Changes::REED_FOOTER, &*REED_FOOTER));
    for (rule, pattern) in reed.into_iter().chain(drop_patterns.iter().map(|p| (Changes::DROP_PATTERN, p))) {
        if let Cow::Owned(s) = pattern.replace_all(&text, "") {
            changes.mark(rule, true);
            text = s;
            removed = true;
        }
    }
    if removed {
        normalize_space(&text).into_owned()
    } else {
        text
    }
}

/// Every white space, control or zero-width character becomes a space; runs collapse; ends trimmed.
/// Borrowed when there was nothing to change.
pub fn normalize_space(s: &str) -> Cow<'_, str> {
    if is_normal_ascii(s.as_bytes()) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut word_start = None;
    let mut i = 0;
    while i < bytes.len() {
        // ASCII bytes decide alone (space-like: controls, space, DEL); others decode one char.
        let (space, len) = match bytes[i] {
            b @ 0..0x80 => (b <= b' ' || b == 0x7f, 1),
            _ => {
                let c = s[i..].chars().next().expect("i is a char boundary");
                (is_space_like(c), c.len_utf8())
            }
        };
        match (space, word_start) {
            (true, Some(start)) => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&s[start..i]);
                word_start = None;
            }
            (false, None) => word_start = Some(i),
            _ => {}
        }
        i += len;
    }
    if let Some(start) = word_start {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&s[start..]);
    }
    if out == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(out)
    }
}

/// The common case, checked without decoding: printable ASCII with single inner spaces.
fn is_normal_ascii(b: &[u8]) -> bool {
    b.first() != Some(&b' ')
        && b.last() != Some(&b' ')
        // A fold without early exit, so that it vectorizes.
        && b.iter().fold(true, |ok, &c| ok & (c.wrapping_sub(0x20) < 0x5f))
        && memchr::memmem::find(b, b"  ").is_none()
}

fn is_space_like(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

/// ASCII byte to its lower-cased alphanumeric self, or 0 when it is not alphanumeric.
pub static ASCII_KEY: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            table[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    table
};

/// Lower-cased with every non-alphanumeric character removed: the key of `same_as_title` and exact dedup.
pub fn alnum_key(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut key = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        // ASCII through the table; only other characters are decoded.
        if bytes[i] < 0x80 {
            let k = ASCII_KEY[bytes[i] as usize];
            if k != 0 {
                key.push(k as char);
            }
            i += 1;
        } else {
            let c = s[i..].chars().next().expect("i is a char boundary");
            if c.is_alphanumeric() {
                key.extend(c.to_lowercase());
            }
            i += c.len_utf8();
        }
    }
    key
}

/// Whether two texts have the same `alnum_key`, stopping at the first difference.
pub fn same_alnum_key(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        ascii_key_bytes(a.as_bytes()).eq(ascii_key_bytes(b.as_bytes()))
    } else {
        alnum_chars(a).eq(alnum_chars(b))
    }
}

/// The bytes of `alnum_key` of an ASCII text, without building it.
pub fn ascii_key_bytes(s: &[u8]) -> impl Iterator<Item = u8> + '_ {
    s.iter().map(|&c| ASCII_KEY[c as usize]).filter(|&k| k != 0)
}

fn alnum_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase)
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
        assert!(matches!(normalize_space("already fine, é too"), Cow::Borrowed(_)));
        assert!(matches!(normalize_space("two  spaces"), Cow::Owned(_)));
    }

    #[test]
    fn this_text_refers_to_suffix() {
        let (t, c) = description("Great book.--Brian Bruya--This text refers to theHardcoveredition.", &[]);
        assert_eq!(t, "Great book.--Brian Bruya");
        assert!(c.has(4));
        assert_eq!(description("--This text refers to thePaperbackedition.", &[]).0, "");
        assert_eq!(description("Intro - -- THIS TEXT REFERS TO x. this text refers to y", &[]).0, "Intro -");
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
        assert_eq!(alnum_key("Ça Va, ÉTÉ 2"), "çavaété2");
        assert!(same_alnum_key("Ça va", "ÇA-VA!") && !same_alnum_key("abc", "abd"));
    }
}
