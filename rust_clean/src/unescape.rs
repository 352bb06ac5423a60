//! HTML character references decoded as Python's `html.unescape` does, but for one departure: a named
//! reference without `;` is decoded only where a browser would in an attribute value.
//!
//! Python matches `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` and replaces each match;
//! this scanner walks the same grammar without a regex so that text without `&` is returned untouched.
//! Python decodes the longest legacy name that begins the match (`&microphone` -> `µphone`); here that
//! name stays text when an ASCII letter, digit or `=` follows it (`Headset&microphone`, `&copy2020`).

use std::borrow::Cow;

use crate::entities::{HTML5, INVALID_CHARREFS, INVALID_CODEPOINTS};

/// The result of `unescape`: the text, and whether a named reference without `;` was decoded in it.
#[derive(Debug, PartialEq, Eq)]
pub struct Unescaped<'a> {
    pub text: Cow<'a, str>,
    pub without_semicolon: bool,
}

/// Decodes every character reference in `s` (one pass); borrowed when nothing changed.
pub fn unescape(s: &str) -> Unescaped<'_> {
    let mut without_semicolon = false;
    let Some(first) = memchr::memchr(b'&', s.as_bytes()) else {
        return Unescaped { text: Cow::Borrowed(s), without_semicolon };
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..first]);
    let mut rest = &s[first..];
    while let Some(amp) = memchr::memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let consumed = match after.strip_prefix('#') {
            Some(number) => numeric_reference(number, &mut out).map(|n| n + 1),
            None => named_reference(after, &mut out, &mut without_semicolon),
        };
        match consumed {
            Some(n) => rest = &after[n..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    // `&` that starts no reference (`AT&T`) leaves the text as it was: report it unchanged.
    let text = if out == s { Cow::Borrowed(s) } else { Cow::Owned(out) };
    Unescaped { text, without_semicolon }
}

/// The text after `unescape`, applied a second time when the first pass produced a new reference
/// (`&amp;amp;` -> `&`).
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub text: Cow<'a, str>,
    /// The second pass changed the text.
    pub twice: bool,
    /// A named reference without `;` was decoded, in either pass.
    pub without_semicolon: bool,
}

/// `unescape`, then `unescape` again on a text the first pass changed.
pub fn unescape_twice(s: &str) -> Decoded<'_> {
    let once = unescape(s);
    let Cow::Owned(first) = once.text else {
        return Decoded { text: once.text, twice: false, without_semicolon: false };
    };
    let again = unescape(&first);
    let without_semicolon = once.without_semicolon || again.without_semicolon;
    match again.text {
        Cow::Borrowed(_) => Decoded { text: Cow::Owned(first), twice: false, without_semicolon },
        Cow::Owned(second) => Decoded { text: Cow::Owned(second), twice: true, without_semicolon },
    }
}

/// After `&#`: decimal `[0-9]+;?` or hex `[xX][0-9a-fA-F]+;?`. Returns bytes consumed after `#`.
fn numeric_reference(s: &str, out: &mut String) -> Option<usize> {
    let bytes = s.as_bytes();
    let (radix, start) = match bytes.first() {
        Some(b'x' | b'X') => (16, 1),
        _ => (10, 0),
    };
    let digits = bytes[start..]
        .iter()
        .take_while(|b| if radix == 16 { b.is_ascii_hexdigit() } else { b.is_ascii_digit() })
        .count();
    if digits == 0 {
        return None;
    }
    let mut end = start + digits;
    // Python's int() has no overflow; every value past U+10FFFF gives U+FFFD, so saturating is exact.
    let num = bytes[start..end]
        .iter()
        .fold(0u32, |acc, &b| acc.saturating_mul(radix).saturating_add((b as char).to_digit(radix).unwrap()));
    if bytes.get(end) == Some(&b';') {
        end += 1;
    }
    if let Ok(i) = INVALID_CHARREFS.binary_search_by_key(&num, |&(k, _)| k) {
        out.push(INVALID_CHARREFS[i].1);
    } else if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        out.push('\u{FFFD}');
    } else if INVALID_CODEPOINTS.binary_search(&num).is_err() {
        out.push(char::from_u32(num).expect("surrogates and out-of-range handled above"));
    }
    Some(end)
}

/// After `&`: a name of 1 to 32 characters outside `\t\n\f <&#;`, then an optional `;`.
/// Returns bytes consumed after `&`; sets `without_semicolon` when it decodes a legacy name without `;`.
fn named_reference(s: &str, out: &mut String, without_semicolon: &mut bool) -> Option<usize> {
    let name_end = s
        .char_indices()
        .take(32)
        .find(|&(_, c)| matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
        .map(|(i, _)| i)
        .unwrap_or_else(|| s.char_indices().nth(32).map_or(s.len(), |(i, _)| i));
    if name_end == 0 {
        return None;
    }
    let end = if s[name_end..].starts_with(';') { name_end + 1 } else { name_end };
    let name = &s[..end];
    // The whole name, else the longest prefix of at least two characters that is a name (only the
    // legacy names without `;` can be a proper prefix: `&copy2020`, `&ampT`).
    let mut cuts: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    cuts.push(end);
    let found = cuts.into_iter().rev().find_map(|cut| lookup(&name[..cut]).map(|value| (cut, value)));
    match found {
        Some((cut, value)) if name[..cut].ends_with(';') || !s[cut..].starts_with(attribute_continues) => {
            *without_semicolon |= !name[..cut].ends_with(';');
            out.push_str(value);
            out.push_str(&name[cut..]);
        }
        // No name, or a name without `;` that a browser would leave as text in an attribute value.
        _ => {
            out.push('&');
            out.push_str(name);
        }
    }
    Some(end)
}

/// What keeps a browser from decoding a reference without `;` in an attribute value (HTML's
/// "named character reference state"): an ASCII letter or digit, or `=`, right after the name.
fn attribute_continues(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '='
}

fn lookup(name: &str) -> Option<&'static str> {
    HTML5.binary_search_by(|&(k, _)| k.cmp(name)).ok().map(|i| HTML5[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> String {
        unescape(s).text.into_owned()
    }

    #[test]
    fn decimal_hex_and_named() {
        assert_eq!(u("Kerr&#8217;s best&#x2013;selling &mdash; &copy; &amp; &quot;x&quot;"), "Kerr\u{2019}s best\u{2013}selling \u{2014} \u{a9} & \"x\"");
        assert_eq!(u("a&#160;b&#xA0;c"), "a\u{a0}b\u{a0}c");
    }

    #[test]
    fn cp1252_remapping_and_invalid_codepoints() {
        assert_eq!(u("&#x92;&#150;&#x80;"), "\u{2019}\u{2013}\u{20ac}");
        assert_eq!(u("&#0;&#xD800;&#1114112;&#99999999999999999999;"), "\u{fffd}\u{fffd}\u{fffd}\u{fffd}");
        assert_eq!(u("a&#1;b&#xFFFF;c"), "abc");
        assert_eq!(u("&#13;"), "\r");
    }

    #[test]
    fn without_semicolon_where_a_browser_decodes_it() {
        for (raw, want) in [("&amp", "&"), ("&copy 2019", "\u{a9} 2019"), ("&copy.", "\u{a9}."), ("&lt-&gt", "<->"),
                            ("&eacute&amp", "\u{e9}&"), ("&copy\u{e9}", "\u{a9}\u{e9}"), ("&AElig<", "\u{c6}<")] {
            let r = unescape(raw);
            assert_eq!((r.text.as_ref(), r.without_semicolon), (want, true), "{raw}");
        }
        assert_eq!(u("&#65x &#x41"), "Ax A"); // numeric references need no `;` and are not counted
        assert!(!unescape("&#65x").without_semicolon && !unescape("&amp;").without_semicolon);
    }

    #[test]
    fn without_semicolon_before_a_letter_digit_or_equals_stays() {
        // Python's html.unescape gives `Headsetµphone`, `©2020`, `&T`, `¬it;`, `&=`.
        for raw in ["Headset&microphone", "&copy2020", "&ampT", "&notit;", "&notit", "&amp=", "x&reg=1&para2", "&Eacute9"] {
            let r = unescape(raw);
            assert_eq!((r.text.as_ref(), r.without_semicolon), (raw, false), "{raw}");
            assert!(matches!(r.text, Cow::Borrowed(_)), "{raw}");
        }
        assert_eq!(u("&microphone &micro;phone &micro phone"), "&microphone \u{b5}phone \u{b5} phone");
    }

    #[test]
    fn not_references_stay() {
        assert_eq!(u("AT&T R&D & co &; &#; &#x; &zz; &"), "AT&T R&D & co &; &#; &#x; &zz; &");
        assert_eq!(u("no entity"), "no entity");
        assert!(matches!(unescape("plain").text, Cow::Borrowed(_)));
    }

    #[test]
    fn name_stops_after_32_characters() {
        let long = format!("&{}amp;", "a".repeat(40));
        assert_eq!(u(&long), long);
    }

    #[test]
    fn non_ascii_in_names() {
        assert_eq!(u("&é;x &amé"), "&é;x &amé");
    }

    #[test]
    fn double_escaping() {
        let twice = |s| {
            let d = unescape_twice(s);
            (d.text.into_owned(), d.twice, d.without_semicolon)
        };
        assert_eq!(twice("AT&amp;amp;T"), ("AT&T".into(), true, false));
        assert_eq!(twice("&amp;quot;hi&amp;quot;"), ("\"hi\"".into(), true, false));
        assert_eq!(twice("AT&amp;T"), ("AT&T".into(), false, false));
        assert_eq!(twice("&amp;copy 1999"), ("\u{a9} 1999".into(), true, true));
        assert_eq!(twice("&amp;copy2020 List&amp;lt;int&amp;gt;"), ("&copy2020 List<int>".into(), true, false));
        assert_eq!(twice("plain"), ("plain".into(), false, false));
    }
}
