//! A port of Python's `html.unescape`, character for character.
//!
//! Python matches `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` and replaces each match;
//! this scanner walks the same grammar without a regex so that text without `&` is returned untouched.

use std::borrow::Cow;

use crate::entities::{HTML5, INVALID_CHARREFS, INVALID_CODEPOINTS};

/// Unescapes every character reference in `s` as `html.unescape` does.
pub fn unescape(s: &str) -> Cow<'_, str> {
    let Some(first) = memchr::memchr(b'&', s.as_bytes()) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..first]);
    let mut rest = &s[first..];
    while let Some(amp) = memchr::memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let consumed = if after.starts_with('#') {
            numeric_reference(&after[1..], &mut out).map(|n| n + 1)
        } else {
            named_reference(after, &mut out)
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
    if out == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(out)
    }
}

/// `unescape` applied a second time when the first pass produced a new reference (`&amp;amp;` -> `&`).
/// Returns the text and whether the second pass changed it.
pub fn unescape_twice(s: &str) -> (Cow<'_, str>, bool) {
    match unescape(s) {
        Cow::Borrowed(b) => (Cow::Borrowed(b), false),
        Cow::Owned(once) => match unescape(&once) {
            Cow::Borrowed(_) => (Cow::Owned(once), false),
            Cow::Owned(twice) => (Cow::Owned(twice), true),
        },
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
/// Returns bytes consumed after `&`.
fn named_reference(s: &str, out: &mut String) -> Option<usize> {
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
    if let Some(value) = lookup(name) {
        out.push_str(value);
        return Some(end);
    }
    // The longest prefix of at least two characters that is a legacy name (e.g. `&ampT` -> `&T`).
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in boundaries.iter().rev() {
        if let Some(value) = lookup(&name[..cut]) {
            out.push_str(value);
            out.push_str(&name[cut..]);
            return Some(end);
        }
    }
    out.push('&');
    out.push_str(name);
    Some(end)
}

fn lookup(name: &str) -> Option<&'static str> {
    HTML5.binary_search_by(|&(k, _)| k.cmp(name)).ok().map(|i| HTML5[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> String {
        unescape(s).into_owned()
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
    fn without_semicolon_and_longest_prefix() {
        assert_eq!(u("&amp"), "&");
        assert_eq!(u("&ampT &copy2019"), "&T \u{a9}2019");
        assert_eq!(u("&notit;"), "\u{ac}it;");
        assert_eq!(u("&#65x &#x41"), "Ax A");
    }

    #[test]
    fn not_references_stay() {
        assert_eq!(u("AT&T & co &; &#; &#x; &zz; &"), "AT&T & co &; &#; &#x; &zz; &");
        assert_eq!(u("no entity"), "no entity");
        assert!(matches!(unescape("plain"), Cow::Borrowed(_)));
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
        assert_eq!(unescape_twice("AT&amp;amp;T").0, "AT&T");
        assert_eq!(unescape_twice("&amp;quot;hi&amp;quot;"), (Cow::Owned("\"hi\"".to_string()), true));
        assert_eq!(unescape_twice("AT&amp;T"), (Cow::Owned("AT&T".to_string()), false));
    }
}
