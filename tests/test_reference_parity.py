"""The Python reference (benches/reference_python.py) against docs/cleaning.md, and tc3-prep against it."""
import gzip
import json
import re
import sys
from pathlib import Path

import pytest
import xxhash

BENCHES = Path(__file__).resolve().parent.parent / "benches"
sys.path.insert(0, str(BENCHES))
import gen_trn  # noqa: E402
import reference_python as ref  # noqa: E402

LONG = "A description long enough to pass the forty character minimum."


@pytest.mark.parametrize("raw, text, rules", [
    ("Judith Kerr&#8217;s best&#8211;selling", "Judith Kerr\u2019s best\u2013selling", {"html_entities"}),
    ("&#x92;quoted&#x2019; &mdash; &copy", "\u2019quoted\u2019 \u2014 \xa9", {"html_entities"}),  # cp1252, no ';'
    ("&notit; &amp;", "\xacit; &", {"html_entities"}),  # longest named prefix without ';'
    ("AT&amp;amp;T &amp;quot;x&amp;quot;", 'AT&T "x"', {"html_entities", "double_escaped"}),
    ("a<b>bold</b>  c<br />d<P class=x>e", "a bold c d e", {"html_tags", "whitespace"}),
    ("x<!-- a\ncomment -->y", "x y", {"html_tags"}),
    ("a < b > c <3", "a < b > c <3", set()),
    ("&lt;i&gt;t&lt;/i&gt;", "t", {"html_entities", "html_tags", "whitespace"}),
    (" a\u00a0b\u200bc\x85d\te\u2060f\ufeffg\x01h ", "a b c d e f g h", {"whitespace"}),
    ("&#160;x&#xA0;", "x", {"html_entities", "whitespace"}),
    ("plain text", "plain text", set()),
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
])
def test_clean_description(raw, text, rules):
    assert ref.clean_description(raw) == (text, rules)


def test_drop_pattern():
    assert ref.clean_description("Buy now! Great. Buy now!", [re.compile(r"Buy now!")]) == ("Great.", {"drop_pattern"})


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
], ids=["plain", "gzip", "two-inputs", "options"])
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


def counts(stats: dict) -> dict:
    """The counts docs/cleaning.md defines (tc3-prep's stats.json has more: options, timings, kept.total)."""
    keys = ("lines", "blank_lines", "dropped", "malformed_kinds", "sampled_out", "cleaned")
    return {k: stats[k] for k in keys} | {"kept": {s: stats["kept"][s] for s in ("train", "validation")}}
