"""The Python reference (benches/reference_python.py) against docs/cleaning.md, and tc3-prep against it."""
import gzip
import json
import re
import sys
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

BENCHES = Path(__file__).resolve().parent.parent / "benches"
sys.path.insert(0, str(BENCHES))
import gen_trn  # noqa: E402
import reference_python as ref  # noqa: E402

LONG = "A description long enough to pass the forty character minimum."


@pytest.mark.parametrize("raw, text, rules", [
    ("Judith Kerr&#8217;s best&#8211;selling", "Judith Kerr\u2019s best\u2013selling", {"html_entities"}),
    ("&#x92;quoted&#x2019; &mdash; &copy", "\u2019quoted\u2019 \u2014 \xa9",  # cp1252; a name without ';' at the end
     {"html_entities", "entity_without_semicolon"}),
    ("&notit; &amp;", "&notit; &", {"html_entities"}),  # html.unescape: "\xacit; &"
    ("AT&amp;amp;T &amp;quot;x&amp;quot;", 'AT&T "x"', {"html_entities", "double_escaped"}),
    ("a<b>bold</b>  c<br />d<P class=x>e", "a bold c d e", {"html_tags", "whitespace"}),
    ("x<!-- a\ncomment -->y", "x y", {"html_tags"}),
    ("a < b > c <3", "a < b > c <3", set()),
    ("&lt;i&gt;t&lt;/i&gt;", "t", {"html_entities", "html_tags", "whitespace"}),
    (" a\u00a0b\u200bc\x85d\te\u2060f\ufeffg\x01h\u2028i\u2029j ", "a b c d e f g h i j", {"whitespace"}),
    ("&#160;x&#xA0;", "x", {"html_entities", "whitespace"}),
    ("plain text", "plain text", set()),
    # Seen (issue 11): escaped angle brackets and unknown tags are text.
    ("Explains List&lt;String&gt; and vector<int> for programmers", "Explains List<String> and vector<int> for programmers",
     {"html_entities"}),
    ("<<Series>> <Product> <name@x.com> x<y>z a<b and c>d <td nowrap>", "<<Series>> <Product> <name@x.com> x<y>z a<b and c>d <td nowrap>",
     set()),
    ("&lt;!-- note --&gt;a&lt;BR/&gt;b&amp;lt;li&amp;gt;c", "a b c",
     {"html_entities", "double_escaped", "html_tags", "whitespace"}),
    ('<font face="Arial" size=2>x</font><a href=/p?a=b title=\'t > u\'>y</a>', "x y", {"html_tags", "whitespace"}),
    # Seen (issue 29): script and style elements go with their content; one never closed loses its tags only.
    ("Hat<script>track('a b')</script> <STYLE type=x>p{}</style >Pink", "Hat Pink", {"html_tags", "whitespace"}),
    ("&lt;script&gt;x()&lt;/script&gt;Hat <script>y", "Hat y", {"html_entities", "html_tags", "whitespace"}),
    # Seen: a name without ';' before a letter, digit or '=' stays.
    ("Headset&microphone AT&T R&D &copy2020 &amp= &ampT", "Headset&microphone AT&T R&D &copy2020 &amp= &ampT", set()),
    ("&copy 2020 Tom&amp Jerry&eacute.", "\xa9 2020 Tom& Jerry\xe9.", {"html_entities", "entity_without_semicolon"}),
    ("&amp;copy2020 &amp;copy;", "&copy2020 \xa9", {"html_entities", "double_escaped"}),
    # Seen: NFC, also of what entities produce.
    ("Cafe\u0301 e&#769;", "Caf\xe9 \xe9", {"html_entities", "nfc_normalised"}),
    ("q\u0303 \u212b", "q\u0303 \xc5", {"nfc_normalised"}),
])
def test_clean_text(raw, text, rules):
    assert ref.clean_text(raw) == (text, rules)


@pytest.mark.parametrize("raw, text, rules", [
    ("Great book.--This text refers to thePaperbackedition.", "Great book.", {"this_text_refers_to"}),
    ("--This text refers to an out of print or unavailable edition of this title.", "", {"this_text_refers_to"}),
    ("Good -- THIS TEXT REFERS TO\nthe\nHardcover", "Good", {"this_text_refers_to", "whitespace"}),
    ("Nice.--This text refers tothePaperbackedition.", "Nice.", {"this_text_refers_to"}),  # glued: no \b
    ("Fine.(Jan.)Copyright 1995 Reed Business Information, Inc.", "Fine.(Jan.)", {"reed_footer"}),
    (("Fine.Copyright &copy; Reed Business Information, a division of Reed Elsevier Inc. All rights reserved."
      "--This text refers to an out of print or unavailable edition of this title."), "Fine.",
     {"html_entities", "this_text_refers_to", "reed_footer"}),
    ("Text. (c) 1999 by Reed Business Information. More.", "Text. . More.", {"reed_footer"}),
    ("Ok. Copyright (c) &copy; 1996, Reed Business Information, Inc.All rights reserved", "Ok.",
     {"html_entities", "reed_footer"}),
    ("Copyright 2001 Penguin.", "Copyright 2001 Penguin.", set()),
    ("A long text.--This text refers to x\u0301 y", "A long text.", {"this_text_refers_to"}),
])
def test_clean_description(raw, text, rules):
    assert ref.clean_description(raw) == (text, rules)


def test_drop_pattern():
    assert ref.clean_description("Buy now! Great. Buy now!", [re.compile(r"Buy now!")]) == ("Great.", {"drop_pattern"})
    # A removal that puts a combining mark after a letter: composed again.
    assert ref.clean_description("The cafeXX\u0301 here", [re.compile("XX")]) == ("The caf\xe9 here",
                                                                                 {"drop_pattern", "nfc_normalised"})


@pytest.mark.parametrize("raw, want", [
    ("Headset&microphone", ("Headset&microphone", False)), ("&copy2020", ("&copy2020", False)),
    ("&amp=", ("&amp=", False)), ("&notit;", ("&notit;", False)), ("&amp", ("&", True)), ("&copy.", ("\xa9.", True)),
    ("&copy\xe9", ("\xa9\xe9", True)), ("&#65x&#x42", ("AxB", False)), ("&micro;phone", ("\xb5phone", False)),
])
def test_unescape_departs_from_html_unescape_only_before_a_letter_digit_or_equals(raw, want):
    assert ref.unescape(raw) == want


def test_dedup_key_keeps_accents_and_folds_final_sigma():
    assert ref.dedup_key("The Caf\xe9, 2!") == "thecaf\xe92"
    assert ref.dedup_key("q\u0303-\u0130") == "q\u0303i\u0307"
    assert ref.dedup_key("\u039f\u0394\u039f\u03a3") == ref.dedup_key("\u03bf\u03b4\u03bf\u03c2") == "\u03bf\u03b4\u03bf\u03c3"


def test_cafe_composed_decomposed_and_plain():
    """Seen: the decomposed spelling was a second record, and plain `cafe` then a duplicate of it."""
    lines = [record(f"Title {i}", LONG + " caf" + d, uid=f"u{i}") for i, d in enumerate(["\xe9", "e\u0301", "e"])]
    rows, stats = ref.process(lines, ref.Options(val_fraction=0.0))
    assert [r.uid for r in rows] == ["u0", "u2"] and rows[0].description.endswith("caf\xe9")
    assert stats["dropped"]["duplicate"] == 1 and stats["cleaned"]["nfc_normalised"] == 1


def record(title, content, uid="u1"):
    return json.dumps({"uid": uid, "title": title, "content": content, "target_ind": [1], "target_rel": [1.0]}).encode()


def test_process_filters_malformed_and_stats():
    lines = [b"", b"  \t", record("A Title", LONG), b"[1, 2]", b'{"title": 5, "content": "x"}', b"\xff{}",
             b'{"title": "t", "content": "\\ud800"}', b'{"title": "t", "content": NaN}', b'{"a": 1} x',
             record("", LONG), record(None, LONG), record("A Title", None), record("ab", LONG),
             record("A Title", "short"), record("A Title", "x" * 5001), record(LONG, LONG.lower() + "!!"),
             record("Another", LONG.upper(), uid="u2"), record("Third", LONG + " More.", uid=None)]
    rows, stats = ref.process(lines, ref.Options(val_fraction=0.0))
    assert [(r.uid, r.title, r.split) for r in rows] == [("u1", "A Title", "train"), (None, "Third", "train")]
    assert stats["lines"] == 18 and stats["blank_lines"] == 2
    assert stats["malformed_kinds"] == {"invalid_utf8": 1, "invalid_json": 3, "not_object": 1, "bad_field_type": 1}
    assert stats["dropped"] == {"malformed": 6, "empty_title": 2, "empty_description": 1, "same_as_title": 1,
                                "too_short": 2, "too_long": 1, "duplicate": 1, "near_duplicate": 0}
    assert stats["kept"] == {"train": 2, "validation": 0}


def test_split_hashes_uid_or_cleaned_title():
    lines = [record(f"Title {i}", f"{LONG} {i}", uid=f"u{i}") for i in range(200)]
    lines.append(record("&lt;b&gt;No uid&lt;/b&gt;", LONG + " nouid", uid=None))
    rows, stats = ref.process(lines, ref.Options(val_fraction=0.3, seed=11))
    for r in rows:
        h = xxhash.xxh3_64_intdigest((r.uid or r.title).encode(), seed=11)
        assert r.split == ("validation" if h / 2**64 < 0.3 else "train")
    assert rows[-1].title == "No uid" and 30 < stats["kept"]["validation"] < 90


def test_only_a_newline_ends_a_line(tmp_path):
    path = tmp_path / "seps.json"
    raw = json.dumps({"title": "T\u2028i\u2029t\x85le", "content": LONG}, ensure_ascii=False).encode()
    assert b"\xe2\x80\xa8" in raw and b"\xc2\x85" in raw  # written raw, not escaped
    path.write_bytes(raw + b"\n"
                     + b'{"title": "a\x0bb", "content": "x"}\n{"title": "a\x0cb"}\r\n')
    lines = list(ref.read_lines([path]))
    assert len(lines) == 3
    rows, stats = ref.process(lines)
    assert [r.title for r in rows] == ["T i t le"] and stats["malformed_kinds"]["invalid_json"] == 2


def test_read_lines_bom_crlf_gzip_members_and_limit(tmp_path):
    plain, packed = tmp_path / "a.json", tmp_path / "b.json.gz"
    plain.write_bytes(b"\xef\xbb\xbf" + record("A Title", LONG) + b"\r\n\r\n" + record("B Title", LONG + "b"))
    packed.write_bytes(gzip.compress(b"\xef\xbb\xbf" + record("C Title", LONG + "c") + b"\n")
                       + gzip.compress(record("D Title", LONG + "d") + b"\n"))
    rows, stats = ref.process(ref.read_lines([plain, packed]))
    assert [r.title for r in rows] == ["A Title", "B Title", "C Title", "D Title"]
    assert (stats["lines"], stats["blank_lines"], stats["dropped"]["malformed"]) == (5, 1, 0)
    rows, stats = ref.process(ref.read_lines([plain, packed]), ref.Options(limit=3))
    assert [r.title for r in rows] == ["A Title", "B Title", "C Title"] and stats["lines"] == 4


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3000 generated records with malformed and edge-case lines, plain and gzip."""
    path = tmp_path_factory.mktemp("trn") / "trn.json"
    gen_trn.generate(path, 3000, seed=7, quirks=0.03, gz_too=True)
    return path


def test_generator_is_deterministic(synthetic, tmp_path):
    again = tmp_path / "again.json"
    gen_trn.generate(again, 3000, seed=7, quirks=0.03)
    assert again.read_bytes() == synthetic.read_bytes()
    assert gzip.decompress(synthetic.with_name("trn.json.gz").read_bytes()) == synthetic.read_bytes()


def test_reference_on_synthetic(synthetic):
    rows, stats = ref.process(ref.read_lines([synthetic]))
    assert stats["dropped"]["malformed"] == sum(stats["malformed_kinds"].values()) > 0
    assert stats["blank_lines"] > 0 and stats["kept"]["validation"] > 0
    assert all(stats["cleaned"][rule] > 0 for rule in ref.RULES if rule != "drop_pattern")
    assert all(r.description and len(r.title) >= 3 for r in rows)


def read_rows(out: Path, split: str) -> list[tuple]:
    import pyarrow.parquet as pq

    files = sorted(out.glob(f"data/{split}-*.parquet"))
    return [(r["uid"], r["title"], r["description"]) for f in files for r in pq.read_table(f).to_pylist()]


OPTIONS = {"val_fraction": 0.25, "seed": 11, "limit": 2500, "min_title_chars": 5, "max_desc_chars": 2000,
           "drop_patterns": (r"(?i)\bfirst printing\b", r"Photos\.")}


@pytest.mark.parametrize("names, options", [
    (["trn.json"], {}), (["trn.json.gz"], {}), (["trn.json", "trn.json.gz"], {}), (["trn.json"], OPTIONS),
    (["trn.json"], {"drop_patterns": ("x*",)}),  # matches empty strings everywhere: removes and counts only the x
], ids=["plain", "gzip", "two-inputs", "options", "empty-matches"])
def test_rust_matches_reference(synthetic, tmp_path, names, options):
    pytest.importorskip("tc3._rust_clean")
    from tc3 import prep

    inputs = [synthetic.with_name(n) for n in names]
    result = prep.run(inputs=inputs, out_dir=tmp_path, threads=2, **options)
    stats_file = tmp_path / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else result
    rows, want = ref.process(ref.read_lines(inputs), ref.Options(**options))
    for split in ("train", "validation"):
        assert read_rows(tmp_path, split) == [(r.uid, r.title, r.description) for r in rows if r.split == split]
    assert counts(stats) == counts(want)


# Content kinds (rust_clean/src/kinds.rs) are the engine's alone: the reference leaves out the kind column,
# the kind_* drops and the attributed_quotes rule; parity runs never ask for them, so they must count 0.
def engine_only(section: str, name: str) -> bool:
    return (section, name) == ("cleaned", "attributed_quotes") or (section == "dropped" and name.startswith("kind_"))


def counts_of(stats: dict, section: str) -> dict:
    """A section of the counts without the engine-only names, which must be 0."""
    assert all(n == 0 for name, n in stats[section].items() if engine_only(section, name))
    return {name: n for name, n in stats[section].items() if not engine_only(section, name)}


def counts(stats: dict) -> dict:
    """The counts docs/cleaning.md defines (tc3-prep's stats.json has more: options, timings, kept.total)."""
    keys = ("lines", "blank_lines", "dropped", "malformed_kinds", "sampled_out", "cleaned")
    out = {k: stats[k] for k in keys} | {"kept": {s: stats["kept"][s] for s in ("train", "validation")}}
    return out | {section: counts_of(stats, section) for section in ("dropped", "cleaned")}


EDGE_TEXTS = [
    "Explains List&lt;String&gt; and vector<int> for programmers", "Headset&microphone", "Caf\u00e9", "Cafe\u0301",
    "Cafe", "a < b and c > d", "a<b and c>d", "I <3 it", "<<Series>>", "<name@x.com>", "x<y>z", "<Product>",
    "&lt;br&gt;x&lt;!-- c --&gt;", "&copy2020 &copy 2020 &amp= AT&T R&D &notit &notit;", "&amp;lt;b&amp;gt;x",
    "List&amp;lt;T&amp;gt;", "T\u2028i\u2029t\x85le", "q\u0303", "\u039f\u0394\u039f\u03a3", "\u03bf\u03b4\u03bf\u03c2",
    "<td nowrap>a</td>", "<p style='a > b'>y</p>", "&eacute&amp", "\u212b and e&#769;",
]


def test_rust_matches_reference_on_edge_cases(tmp_path):
    """Each text as a title (with a distinct description) and as a description (so dedup keys meet too)."""
    pytest.importorskip("tc3._rust_clean")
    from tc3 import prep

    path = tmp_path / "edge.json"
    lines = [json.dumps({"uid": f"t{i}", "title": t, "content": f"{LONG} {i}"}, ensure_ascii=False)
             for i, t in enumerate(EDGE_TEXTS)]
    lines += [json.dumps({"uid": f"d{i}", "title": f"Title {i}", "content": f"{LONG} {t}"}, ensure_ascii=False)
              for i, t in enumerate(EDGE_TEXTS)]
    path.write_text("\n".join(lines) + "\n")
    stats = prep.run(inputs=[path], out_dir=tmp_path / "out", threads=2, val_fraction=0.0)
    rows, want = ref.process(ref.read_lines([path]), ref.Options(val_fraction=0.0))
    assert read_rows(tmp_path / "out", "train") == [(r.uid, r.title, r.description) for r in rows]
    assert counts(stats) == counts(want)
    # Café twice, ΟΔΟΣ/οδος, the two comparisons, the two markup-only texts ("x"); plain Cafe is kept.
    assert want["dropped"]["duplicate"] == 4
    assert all(want["cleaned"][rule] for rule in ("entity_without_semicolon", "nfc_normalised", "html_tags"))


entity_text = st.lists(
    st.one_of(
        st.sampled_from(["&amp;", "&amp", "&lt;", "&copy", "&notit;", "&#8217;", "&#x92;", "&#0;", "&#xD800;",
                         "&#1114112;", "&ampT", "&", "#", ";", "=", "&#", "&#x", "&;", "&zz;", "&AElig", "&amp;amp;",
                         "&micro", "2", "e\u0301", "<", ">", "<b>", "</p>", "<br/>", "&lt;i&gt;", "<!--", "-->",
                         " class=x", "\u2028", "\u212b", "<script>", "</script>", "<STYLE type=x>", "</style >",
                         "&lt;script&gt;", "<scripts>"]),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
        st.from_regex(r"&#[xX]?[0-9a-fA-F]{1,8};?", fullmatch=True),
        st.from_regex(r"&[a-zA-Z]{1,12};?", fullmatch=True),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(entity_text)
def test_unescape_matches_reference(s):
    rust = pytest.importorskip("tc3._rust_clean")
    assert rust.unescape_html(s) == ref.unescape(s)[0]


@settings(max_examples=150, deadline=None)
@given(st.lists(entity_text, min_size=1, max_size=20))
def test_clean_batch_matches_reference(titles):
    """Rules 1-4 of the engine (through clean_batch, titles of any length kept) against the reference's."""
    pytest.importorskip("tc3._rust_clean")
    import pyarrow as pa
    from tc3 import prep

    table = pa.table({"uid": [str(i) for i in range(len(titles))], "title": titles, "content": [LONG] * len(titles)})
    kept, got = prep.clean_batch(table, min_title_chars=0, max_title_chars=10**6)
    cleaned = [ref.clean_text(t) for t in titles]
    want = [(str(i), title) for i, (title, _) in enumerate(cleaned)
            if title and ref.dedup_key(title) != ref.dedup_key(LONG)]
    assert [(r["uid"], r["title"]) for r in kept.to_pylist()] == want
    assert counts_of(got, "cleaned") == {rule: sum(rule in rules for _, rules in cleaned) for rule in ref.RULES}


def test_docs_and_reference_name_what_the_engine_has():
    """docs/cleaning.md lists the element names of rule html_tags; the reference counts the engine's rules."""
    rust = pytest.importorskip("tc3._rust_clean")
    docs = (BENCHES.parent / "docs" / "cleaning.md").read_text()
    listed = re.search(r"The element names \([^)]*\):(.*?)\. A text whose", docs, re.S).group(1)
    assert [n.strip() for n in listed.split(",")] == rust.HTML_TAG_NAMES
    assert ref.RULES == tuple(r for r in rust.CLEANING_RULES if not engine_only("cleaned", r))
