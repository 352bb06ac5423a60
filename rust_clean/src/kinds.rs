//! What a cleaned description is: a product description, stacked review quotes with their sources,
//! an author's biography, metadata only, or a mix (docs/cleaning.md, "Content kinds").
//!
//! Plain rules on the cleaned text, no model: quoted spans are paired by their marks, a quote counts as
//! attributed when the text after it (up to the next quote) reads like a source name, and a kind is
//! decided from the share of the text that is attributed praise, from biography cues per sentence,
//! and from a short list of metadata shapes.

use std::sync::LazyLock;

use crate::pattern::Pattern;

/// The `kind` column of the output, in the order of `stats.json` `kinds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Description,
    ReviewQuotes,
    AuthorBio,
    MetadataOnly,
    Mixed,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Description, Kind::ReviewQuotes, Kind::AuthorBio, Kind::MetadataOnly, Kind::Mixed];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Description => "description",
            Kind::ReviewQuotes => "review_quotes",
            Kind::AuthorBio => "author_bio",
            Kind::MetadataOnly => "metadata_only",
            Kind::Mixed => "mixed",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A share of the text that is attributed praise at or above this makes it `review_quotes`.
const REVIEW_SHARE: f64 = 0.6;
/// Below `REVIEW_SHARE`, at least this share makes it `review_quotes` too, unless a long quote-free run
/// of prose (`MIXED_PLAIN_CHARS`) shows text of the record's own: then it is `mixed`.
const MIXED_SHARE: f64 = 0.3;
const MIXED_PLAIN_CHARS: usize = 250;
/// Metadata is short: longer text is prose even when it starts with "By ...".
const METADATA_MAX_CHARS: usize = 160;

static METADATA: LazyLock<Pattern> = LazyLock::new(|| {
    Pattern::new(
        r"^(?:By [A-Z][^.]*?(?:,\s*Illustrated by [^.]*)?|Text: .*|Original Language: .*|(?:Paperback|Hardcover|VHS Tape|DVD|Audio ?CD|Audio Cassette|Board book|Mass Market Paperback)\.?)$",
    )
});

/// A biography cue, in three parts: phrases, and "is a ... writer" and "was a ... founder" with a gap
/// of up to 80 or 60 characters without a full stop (a test puts them back in one pattern). In one
/// pattern the gaps made the regex crate's lazy DFA rebuild its states all the time.
const BIO_PHRASES: &str = r"\b(?:was born|born in|grew up|was educated|died\b|served in|is the author of|has written|has published|(?:he|she) (?:lives|lived|died|is married|has|divides)|lives (?:in|with|near|outside)|(?:his|her) (?:books|novels|bestsellers|works|first novel) (?:include|have)|founded in|has been (?:teaching|a|an))";
const IS_A: &str = r"\b(?:is|was) (?:now |currently |also )?(?:an?|the|one of)\b";
const IS_A_GAP: usize = 80;
const PROFESSIONS: &[&str] = &[
    "writer", "author", "novelist", "journalist", "professor", "teacher", "illustrator", "photographer", "consultant",
    "expert", "chef", "editor", "artist", "publisher", "leader", "physician", "attorney", "archaeologist", "cartoonist",
    "founder",
];
const WAS_A: &str = r"\bwas (?:a|an) ";
const WAS_A_GAP: usize = 60;
const WAS_A_PROFESSIONS: &[&str] = &["writer", "author", "physician", "founder"];

/// A head, a gap of at most so many characters without a full stop, and one of the words after it,
/// which start at a word boundary or anywhere.
struct Gapped {
    head: Pattern,
    gap: usize,
    words: Pattern,
    longest_word: usize,
}

impl Gapped {
    fn new(head: &str, gap: usize, words: &[&str], boundary: bool) -> Self {
        let start = if boundary { r"\b" } else { "" };
        Gapped {
            head: Pattern::new(head),
            gap,
            words: Pattern::new(&format!("{start}(?:{})", words.join("|"))),
            longest_word: words.iter().map(|w| w.len()).max().unwrap_or(0),
        }
    }

    /// Whether the lowercase ASCII `text` matches `{head}[^.]{0,gap}{words}`. A match of the head
    /// never starts inside another one, so its matches one after the other are all there are.
    fn is_match(&self, text: &str) -> bool {
        let words = self.words.local();
        self.head.local().find_iter(text).any(|h| {
            // The gap ends at the first full stop within it (the text is ASCII: bytes are characters).
            let gap = &text.as_bytes()[h.end()..(h.end() + self.gap).min(text.len())];
            let last_start = h.end() + memchr::memchr(b'.', gap).unwrap_or(gap.len());
            // A word starting by `last_start` ends within the slice; the search looks no further.
            let window = &text[..(last_start + self.longest_word).min(text.len())];
            words.find_at(window, h.end()).is_some_and(|w| w.start() <= last_start)
        })
    }
}

struct BioCue {
    phrases: Pattern,
    is_a: Gapped,
    was_a: Gapped,
}

static BIO_CUE: LazyLock<BioCue> = LazyLock::new(|| BioCue {
    phrases: Pattern::new(BIO_PHRASES),
    is_a: Gapped::new(IS_A, IS_A_GAP, PROFESSIONS, true),
    was_a: Gapped::new(WAS_A, WAS_A_GAP, WAS_A_PROFESSIONS, false),
});

/// Whether `text` holds a biography cue, ignoring case. The regex crate's fast engine gives up on
/// Unicode `\b` at the first non-ASCII byte, and the engine it falls back to made this search most of
/// tc3-prep's time; the search runs on `ascii_shadow(text)` instead, with the same answer, and with
/// lowercase patterns, which the regex crate can find by their literals.
fn has_bio_cue(text: &str) -> bool {
    let text = ascii_shadow(text);
    let cue = &*BIO_CUE;
    cue.phrases.is_match(&text) || cue.is_a.is_match(&text) || cue.was_a.is_match(&text)
}

/// `text` in lowercase, with each non-ASCII character replaced by one ASCII character that matches
/// the same parts of the bio patterns: a letter it equals ignoring case (`ſ` is `s`, the Kelvin sign `K`
/// is `k`), else `_` for a word character (`\w`, which decides `\b`) and `#` for any other.
/// Characters are counted as before, so a gap spans the same text.
fn ascii_shadow(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut shadow = String::with_capacity(text.len());
    let mut rest = text;
    // ASCII runs, most of any text, are copied whole; each other character is replaced.
    while let Some(at) = rest.bytes().position(|b| !b.is_ascii()) {
        shadow.push_str(&rest[..at]);
        let c = rest[at..].chars().next().expect("a char boundary");
        shadow.push(match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c if regex_syntax::is_word_character(c) => '_',
            _ => '#',
        });
        rest = &rest[at + c.len_utf8()..];
    }
    shadow.push_str(rest);
    shadow.make_ascii_lowercase();
    shadow
}

static PRONOUN_START: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(r"^(?:He|She|His|Her|They)\b"));

/// A first sentence whose subject is a person's name: "Jill Barklem was born ...".
static NAME_SUBJECT: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(r"^(?:[\w ,]{0,30}, )?[A-Z][\w.-]+(?: [A-Z][\w.-]*){1,4}(?: \([\d-]+\))?,? (?:is|was|has|had|grew|served|wrote|brought|died|published|lives)\b"));

/// Words that show the text is about the product, so not a biography.
static PRODUCT_CUE: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(r"(?i)\bthis (?:book|novel|volume|collection|guide|edition|series|title|story|thriller|cookbook)\b"));

/// A lead-in to the praise: "Praise for Philippa Gregory:", "Reviews of the first edition".
static PRAISE_LEAD: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(r#"^(?:[^.!?'"‘“]{0,60}:|Reviews? (?:of|for) [^'"‘“]{0,60}|Praise for [^'"‘“]{0,60})\s*$"#));

/// Sentence ends inside a would-be source name: "... Times. He spins ..." is prose, not a source.
static SENTENCE_INSIDE: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(r"[.!?]\s+[A-Z][a-z]+\s+[a-z]"));

/// Quote marks other than an apostrophe inside a word.
static QUOTE_MARK: LazyLock<Pattern> =
    LazyLock::new(|| Pattern::new(r#"["“”‘]|(?:^|[^A-Za-z])['’]|['’](?:[^A-Za-z]|$)"#));

/// Attributed praise found in a text: byte ranges of the praise (each quote with its source, and a
/// lead-in), and of each source alone (with the dashes and punctuation around it).
#[derive(Debug, Default, PartialEq)]
pub struct Praise {
    pub spans: Vec<(usize, usize)>,
    pub sources: Vec<(usize, usize)>,
    pub attributions: usize,
}

/// The source names credited after quotes in `text` ("Sunday Times", "Washington Post"), in order.
pub fn attribution_sources(text: &str) -> Vec<&str> {
    attributed_praise(text)
        .sources
        .iter()
        .map(|&(a, b)| text[a..b].trim_matches(|c: char| !c.is_alphanumeric() && c != ')' && c != '('))
        .collect()
}

/// The kind of a cleaned description (the title is not used).
pub fn classify(text: &str) -> Kind {
    let chars = text.chars().count();
    if chars <= METADATA_MAX_CHARS && METADATA.is_match(text) {
        return Kind::MetadataOnly;
    }
    let praise = attributed_praise(text);
    if praise.attributions > 0 {
        let share = covered(&praise.spans) as f64 / text.len().max(1) as f64;
        // Prose of the record's own: a long stretch outside the praise with no quote marks in it.
        let own_prose = longest_plain_run(text, &praise.spans) >= MIXED_PLAIN_CHARS;
        if share >= REVIEW_SHARE || (share >= MIXED_SHARE && !own_prose) {
            return Kind::ReviewQuotes;
        }
        if share >= MIXED_SHARE {
            return Kind::Mixed;
        }
    } else if text.starts_with(['"', '“', '‘', '\'']) && quote_spans(text) == [(0, text.len())] {
        // The whole text one quotation with no source: praise whose source was lost.
        return Kind::ReviewQuotes;
    }
    if PRODUCT_CUE.is_match(text) {
        return Kind::Description;
    }
    // A sentence about a person: a biography cue, or one starting with a pronoun, or a first
    // sentence whose subject is a name. A pronoun alone does not make a biography.
    // A cue in a sentence is a cue in the whole text (where a match may also run over a sentence end),
    // so one search over the text rules out most texts.
    let bio_anywhere = has_bio_cue(text);
    if !bio_anywhere && !sentences(text).next().is_some_and(|s| NAME_SUBJECT.is_match(s)) {
        return Kind::Description;
    }
    let sentences: Vec<&str> = sentences(text).collect();
    let (mut about_person, mut cued) = (0, false);
    for (k, s) in sentences.iter().enumerate() {
        let cue = (bio_anywhere && has_bio_cue(s)) || (k == 0 && NAME_SUBJECT.is_match(s));
        cued |= cue;
        about_person += usize::from(cue || PRONOUN_START.is_match(s));
    }
    if cued && about_person * 2 >= sentences.len() {
        return Kind::AuthorBio;
    }
    Kind::Description
}

/// Removes attributed praise (each quote with its source, and a "Praise for ...:" lead-in), keeping the
/// rest with its spacing tidied. Returns `None` when there is nothing to remove.
pub fn strip_attributed_quotes(text: &str) -> Option<String> {
    let praise = attributed_praise(text);
    if praise.attributions == 0 {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for &(a, b) in &praise.spans {
        if a > pos {
            out.push_str(&text[pos..a]);
            out.push(' ');
        }
        pos = pos.max(b);
    }
    out.push_str(&text[pos..]);
    Some(out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Finds quotes followed by a source name, over the whole text (or inside one quote that wraps it all).
pub fn attributed_praise(text: &str) -> Praise {
    let quotes = quote_spans(text);
    if let [(0, end)] = quotes[..] {
        if end == text.len() {
            // The whole text in one pair of quotes: look inside it.
            let open = text.chars().next().map_or(0, char::len_utf8);
            let close = text.chars().next_back().map_or(0, char::len_utf8);
            let inner = attributed_praise(&text[open..text.len() - close]);
            let shift = |v: &[(usize, usize)]| v.iter().map(|&(a, b)| (a + open, b + open)).collect();
            return Praise { spans: shift(&inner.spans), sources: shift(&inner.sources), attributions: inner.attributions };
        }
    }
    let mut praise = Praise::default();
    let next_start = |k: usize| quotes.get(k).map_or(text.len(), |q| q.0);
    let mut k = 0;
    while k < quotes.len() {
        let (a, b) = quotes[k];
        let gap = &text[b..next_start(k + 1)];
        // A quoted source name: "..." --"Washington Post"
        if k + 1 < quotes.len() && !gap.trim().is_empty() && gap.trim_matches(|c: char| c == ' ' || is_dash(c)).is_empty() {
            let (c, d) = quotes[k + 1];
            let after = next_start(k + 2);
            let tail = &text[d..after];
            // What follows the quoted name is part of the source ("New York" magazine).
            if d - c <= 40 && tail.split_whitespace().count() <= 12 && !SENTENCE_INSIDE.is_match(tail) {
                praise.spans.push((a, after));
                praise.sources.push((c, after));
                praise.attributions += 1;
                k += 2;
                continue;
            }
        }
        if is_source(gap, false) {
            praise.spans.push((a, next_start(k + 1)));
            praise.sources.push((b, next_start(k + 1)));
            praise.attributions += 1;
        }
        k += 1;
    }
    if let (Some(&(first, _)), true) = (quotes.first(), praise.attributions > 0) {
        if first > 0 && PRAISE_LEAD.is_match(&text[..first]) {
            praise.spans.insert(0, (0, first));
        }
    }
    praise
}

fn is_dash(c: char) -> bool {
    matches!(c, '-' | '–' | '—')
}

/// Whether the text between a closing quote and the next quote reads like a source name: short (16
/// words, 120 characters: "Dr Leong Yin Ching M Ed PhD Professor of Education, University of Malaysia"),
/// past four words at least half of them capitalised,
/// starting with a capital, a digit or "(", no sentence inside. After a dash it may be longer
/// ("- John Hull is Professor of Practical Theology at ...").
fn is_source(gap: &str, dashed: bool) -> bool {
    let trimmed = gap.trim();
    let dashed = dashed || trimmed.starts_with(is_dash);
    let name = trimmed
        .trim_start_matches(|c: char| is_dash(c) || matches!(c, ',' | ':' | ';' | ' '))
        .trim_end_matches(['.', ',', ';', ' ']);
    let Some(first) = name.chars().next() else { return false };
    let (max_words, max_chars) = if dashed { (25, 200) } else { (16, 120) };
    // The gap may be the rest of a long text: its length is checked first, counting no further.
    if name.chars().nth(max_chars).is_some() {
        return false;
    }
    let words = name.split_whitespace().count();
    // A name is mostly capitalised words; prose after a quoted phrase is not.
    let capitalised = name.split_whitespace().filter(|w| w.starts_with(|c: char| c.is_uppercase() || c.is_ascii_digit())).count();
    words <= max_words
        && (words <= 4 || capitalised * 2 >= words)
        && (first.is_uppercase() || first.is_ascii_digit() || first == '(')
        && !SENTENCE_INSIDE.is_match(name)
}

/// Byte ranges of quoted text, marks included: each opening mark looks for a closing mark of its
/// family (double or single).
fn quote_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut marks = quote_marks(text, 0);
    while let Some((start, c)) = marks.next() {
        let Some(close) = closing_mark(c).filter(|_| can_open(text, start, c)) else { continue };
        // The closing mark comes one character after the first quoted one at the earliest.
        let first = start + c.len_utf8();
        let body = first + text[first..].chars().next().map_or(0, char::len_utf8);
        if let Some((end, mark)) = quote_marks(text, body).find(|&(j, m)| can_close(text, j, m, close)) {
            spans.push((start, end + mark.len_utf8()));
            marks = quote_marks(text, end + mark.len_utf8());
        }
    }
    spans
}

/// The quote marks of `text` from byte `from` on, with their byte offsets: found by a byte search for
/// their first bytes, since most of a text holds none.
fn quote_marks(text: &str, from: usize) -> impl Iterator<Item = (usize, char)> + '_ {
    memchr::memchr3_iter(b'"', b'\'', 0xE2, &text.as_bytes()[from..])
        .map(move |i| (from + i, text[from + i..].chars().next().expect("a char boundary")))
        .filter(|&(_, c)| matches!(c, '"' | '\'' | '“' | '”' | '‘' | '’'))
}

fn closing_mark(open: char) -> Option<char> {
    match open {
        '"' | '“' => Some('”'),
        '‘' | '\'' => Some('’'),
        _ => None,
    }
}

/// Whether the mark `c` at byte `i` opens a quote.
fn can_open(text: &str, i: usize, c: char) -> bool {
    let Some(next) = text[i + c.len_utf8()..].chars().next() else { return false };
    if next.is_whitespace() {
        // `" Richard Scarry's brilliant books ..."`: a stray space after the opening mark of the text.
        return i == 0 && c == '"';
    }
    if c != '\'' {
        return true;
    }
    // A straight single quote opens at a word start, or glued to a source before a capital
    // ("THE EXPRESS'Tony Buzan"), but not in a name such as O'Brien.
    let mut before = text[..i].chars().rev();
    let prev = before.next().unwrap_or(' ');
    let initial = prev.is_uppercase() && before.next().is_none_or(|c| !c.is_alphanumeric());
    !prev.is_alphanumeric() || (next.is_uppercase() && !initial)
}

/// Whether the mark `c` at byte `j` closes a quote opened with a mark whose closing mark is `close`.
/// Straight and curly marks close each other's quotes (`“...…"Phil Catalfo`); a single one closes
/// only where an apostrophe could not be (not before a lowercase word: "Dobbs' books").
fn can_close(text: &str, j: usize, c: char, close: char) -> bool {
    let same_family = match close {
        '”' => c == '"' || c == '”',
        _ => c == '\'' || c == '’',
    };
    if !same_family || text[..j].chars().next_back().is_some_and(char::is_whitespace) {
        return false;
    }
    if close == '”' {
        return true;
    }
    let next = text[j + c.len_utf8()..].chars().find(|&c| c != ' ');
    !next.is_some_and(char::is_lowercase)
}

/// Bytes covered by sorted, possibly touching ranges.
fn covered(spans: &[(usize, usize)]) -> usize {
    spans.iter().map(|(a, b)| b - a).sum()
}

/// The longest stretch outside the praise that holds no quote mark: prose of the record's own.
fn longest_plain_run(text: &str, spans: &[(usize, usize)]) -> usize {
    let mut longest = 0;
    let mut pos = 0;
    for &(a, b) in spans.iter().chain([(text.len(), text.len())].iter()) {
        let run = text[pos..a.max(pos)].trim();
        if !QUOTE_MARK.is_match(run) {
            longest = longest.max(run.chars().count());
        }
        pos = pos.max(b);
    }
    longest
}

fn sentences(text: &str) -> impl Iterator<Item = &str> {
    static END: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(r#"[.!?]["”’']?\s+[A-Z]"#));
    // Each sentence ends before the capital that starts the next. The iterator owns this thread's clone of
    // the pattern and searches on from each match (`find_iter` would borrow the clone).
    let end = END.local();
    let mut from = 0;
    let ends = std::iter::from_fn(move || {
        let m = end.find_at(text, from)?;
        from = m.end();
        Some(m.end() - 1)
    });
    let mut start = 0;
    ends.chain([text.len()]).map(move |end| {
        let sentence = text[start..end].trim();
        start = end;
        sentence
    })
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;

    #[test]
    fn review_quotes_with_their_sources() {
        assert_eq!(classify("\"!the most research-crammed fantasy ever set before small children!\" Sunday Times Magazine"), Kind::ReviewQuotes);
        let stacked = "'Breathless, bloody and detailed.' Daily Telegraph 'Swift-moving, with a tremendous climactic scene on the snow-swept roof of a trans-Hungarian express.' Glasgow Herald";
        assert_eq!(classify(stacked), Kind::ReviewQuotes);
        // Curly quotes glued to their sources, and a quoted source name after a dash.
        assert_eq!(classify("‘Astonishingly original and compelling… A gifted creator of wonder’RAYMOND E. FEIST‘It ought to be illegal for one person to have so much talent’STEPHEN DONALDSON"), Kind::ReviewQuotes);
        assert_eq!(classify("\"A pioneering book of real value and wide appeal.\"--\"Washington Post\" \"A brilliant best seller.\"--\"New York\" magazine"), Kind::ReviewQuotes);
        // Straight quotes glued between a source and the next quote; a curly quote closed by a straight one.
        assert_eq!(attribution_sources("'The whole world should Mind Map.'THE EXPRESS'Tony Buzan will do for the brain what Hawking did.'THE TIMES"), ["THE EXPRESS", "THE TIMES"]);
        assert_eq!(attribution_sources("“Patanjali's Yoga Sutras is the bible of yoga…”Godfrey Devereux“His commentary speaks to every yogi.\"Phil Catalfo, Yoga Journal"), ["Godfrey Devereux", "Phil Catalfo, Yoga Journal"]);
        // A long source name, mostly capitalised; a long run of prose after a quoted phrase is not a source.
        assert_eq!(attribution_sources("\"Outstanding and spellbinding!\" Dr Leong Yin Ching M Ed PhD Professor of Education, University of Malaysia").len(), 1);
        assert!(attribution_sources("the description \"divinely inspired.\" Free of dogma, consider these poetic aphorisms a supplement to all traditions.").is_empty());
        // An apostrophe in a name does not open a quote.
        assert!(quote_spans("Patrick O'Brian's sea stories").is_empty());
        // A lead-in and an apostrophe inside a quote ("Dobbs' books") do not break the pairing.
        let lead = "Praise for Michael Dobbs: 'A good romp. Dobbs' books grab because of their authenticity.' The Times 'A model of its kind.' Daily Mail";
        assert_eq!(classify(lead), Kind::ReviewQuotes);
        assert_eq!(attributed_praise(lead).spans.first(), Some(&(0, 26)));
        assert_eq!(attribution_sources(lead), ["The Times", "Daily Mail"]);
        assert_eq!(attribution_sources("\"Wide appeal.\"--\"Washington Post\" \"Thrilling.\" -- Daily Mail."), ["Washington Post", "Daily Mail"]);
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one property test over every non-ASCII character, case by case
    fn the_ascii_shadow_finds_what_the_pattern_finds() {
        // Only these two characters equal an ASCII letter ignoring case, and `_` stands for exactly the
        // word characters.
        let letter = Regex::new(r"(?i)^[a-z]$").unwrap();
        let word = Regex::new(r"^\w$").unwrap();
        for c in ('\u{80}'..=char::MAX).map(String::from) {
            let shadow = ascii_shadow(&c);
            assert_eq!(letter.is_match(&c), matches!(c.as_str(), "\u{17F}" | "\u{212A}"), "{c:?}");
            assert_eq!(word.is_match(&c), letter.is_match(&c) || shadow == "_", "{c:?}");
        }
        let one_pattern = Regex::new(&format!(
            r"(?i){BIO_PHRASES}|{IS_A}[^.]{{0,{IS_A_GAP}}}\b(?:{})|{WAS_A}[^.]{{0,{WAS_A_GAP}}}(?:{})",
            PROFESSIONS.join("|"),
            WAS_A_PROFESSIONS.join("|")
        ))
        .unwrap();
        for text in [
            "Café owner who was born in Lyon",
            "Cafèwas born there",
            "She was born éverywhere",
            "he ſerved in the navy",
            "He served\u{A0}in the navy",
            "She is the ΑUTHOR of many books",
            "was a \u{212A}ind and famous writer",
            "is one of the most célèbre writers",
            "is one ofé writers",
            "He is a — so they say — gifted cartoonist",
            "She is a gifted and wonderful, and still very much loved, teacher of many, many, many children in a town by the sea",
            "Es war ein Autor. Er starb 1950.",
            "He is a man. He is not a writer",
            &format!("He is a {} writer", "x".repeat(78)),
            &format!("He is a {} writer", "x".repeat(79)),
            &format!("She was an {}founder", "é".repeat(60)),
            &format!("She was an {}founder", "é".repeat(61)),
        ] {
            assert_eq!(has_bio_cue(text), one_pattern.is_match(text), "{text:?}");
        }
        // And on the bundled real records, whole and sentence by sentence.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../python/tc3/samples/amazon_titles_sample500.jsonl.gz");
        let mut lines = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()), &mut lines).unwrap();
        let mut cues = 0;
        for line in lines.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = crate::text::clean_text(record["content"].as_str().unwrap_or(""), &mut Default::default());
            for part in sentences(&text).chain([text.as_str()]) {
                assert_eq!(has_bio_cue(part), one_pattern.is_match(part), "{part:?}");
                cues += usize::from(has_bio_cue(part));
            }
        }
        assert!(cues > 20, "{cues} cues");
        assert!(has_bio_cue("Renée was born in Québec") && !has_bio_cue("Renée wasborn in Québec"));
        // And on random texts made of cue words, their neighbours and the characters that matter.
        let pieces = [
            "was", "is", "born", "in", "a", "an", "the", "one of", "now", "also", "writer", "founder", "died", "he", "she",
            "lives", "has", "been", "teaching", "author", "of", "his", "books", "include", "ſ", "\u{212A}", "é", "Ω", "_",
            "xx", "WAS", "Is", "X",
        ];
        let separators = [" ", " ", " ", " ", " ", "", ".", "\u{A0}", "-"];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut cues = 0;
        for _ in 0..20_000 {
            let len = 1 + next(40);
            let text: String = (0..len).map(|_| [pieces[next(pieces.len())], separators[next(separators.len())]].concat()).collect();
            assert_eq!(has_bio_cue(&text), one_pattern.is_match(&text), "{text:?}");
            cues += usize::from(has_bio_cue(&text));
        }
        assert!(cues > 1000, "{cues} of 20,000 random texts hold a cue");
    }

    #[test]
    fn a_description_with_quoted_words_is_a_description() {
        let text = "In a distant, timeless place, a mysterious prophet walks the sands. His words have a power that would have provoked the description \"divinely inspired.\" Free of dogma, consider these poetic aphorisms a supplement to all sacred traditions.";
        assert_eq!(classify(text), Kind::Description);
        assert_eq!(classify("Dance tutu for girls ages 2-8 years. Perfect for dance practice, recitals and performances!"), Kind::Description);
    }

    #[test]
    fn author_bio_and_metadata() {
        let bio = "Jill Barklem was born in Epping in 1951. After an accident when she was thirteen, she developed her talent for drawing. Jill is now a full-time illustrator.";
        assert_eq!(classify(bio), Kind::AuthorBio);
        assert_eq!(classify("By Marilyn Sadler, Illustrated by Roger Bollen"), Kind::MetadataOnly);
        assert_eq!(classify("Text: English (translation)Original Language: German"), Kind::MetadataOnly);
        // The product named as the subject is not a biography.
        assert_eq!(classify("Recently divorced Anna cheers herself up with a Nile cruise. She takes her great-grandmother's diary. This novel is an eerie tale."), Kind::Description);
    }

    #[test]
    fn mixed_has_quotes_and_prose_of_its_own() {
        let prose = "The book first looks at how mercenaries came to play a key role in the struggle for the Congo in the 1960s, and how the end of the war in Vietnam coincided with the start of the war in Rhodesia, attracting a new generation of volunteers with stories of their own.";
        let text = format!("{prose} 'Hard-hitting and honest, a book that shoots down the Hollywood stereotypes of the soldier of fortune for good.' The Times 'Gripping.' Observer 'A fine, angry and necessary account of modern war and the people paid to fight it, told without any glamour at all.' Daily Mail");
        assert_eq!(classify(&text), Kind::Mixed);
    }

    #[test]
    fn strip_keeps_the_rest() {
        let text = "A tale of love and revenge in Elizabethan England. 'A triumph...' Sunday Times 'Gripping.' Observer";
        assert_eq!(strip_attributed_quotes(text).as_deref(), Some("A tale of love and revenge in Elizabethan England."));
        assert_eq!(strip_attributed_quotes("No quotes here at all."), None);
        // A quote not followed by a source is the record's own text and stays.
        assert_eq!(strip_attributed_quotes("He \"browns out\" and then finds himself far over the desert."), None);
    }
}
