"""Single-process Python reference of tc3-prep, with the fast paths a careful programmer writes.

json.loads per line, html.unescape twice (but for names without `;`, see `unescape`), `re` for the rules,
unicodedata for NFC, exact dedup, an xxh3 split, pyarrow Parquet. Each step is skipped where it cannot
change the text: unescaping without `&`, tags without `<`, NFC on ASCII, a boilerplate pattern without its
keyword; spaces of printable text by `str.split`/`join`, ASCII dedup keys by `bytes.translate`.
It implements docs/cleaning.md rule for rule (no near dedup, no sampling) so tests can check the Rust
engine against it, and it is the baseline of benches/run_prep_bench.py.

    python benches/reference_python.py trn.json -o out/ref      # writes train/validation.parquet, stats.json
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import html
import json
import re
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.entities import html5
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from tc3._rust_clean import HTML_TAG_PATTERN  # element names and script/style elements: kept in one place, the engine

# Steps 4 and 8: Unicode white space, control characters (Cc) and zero-width characters.
WHITESPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b\u2060\ufeff]+")
TAGS = re.compile(HTML_TAG_PATTERN)
CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")  # html.unescape's
THIS_TEXT_REFERS_TO = re.compile(r"-*\s*this text refers to.*\Z", re.I | re.S)
REED_FOOTER = re.compile(
    r"(?:(?:copyright|\(c\)|©)[\s\d,.()-]*)+(?:by\s+)?reed business information"
    r"(?:,?\s*inc\.?|,?\s*a division of reed elsevier,?\s*inc\.?)?(?:\s*all rights reserved\.?)?", re.I)
NON_ALNUM = re.compile(r"[\W_]+")  # Python's \w is str.isalnum() plus "_"
# The bytes an ASCII key drops (after lower-casing): all but a-z and 0-9.
NOT_ASCII_KEY = bytes(b for b in range(128) if not (chr(b).isalnum() and chr(b).islower() or chr(b).isdigit()))
SURROGATE = re.compile(r"[\ud800-\udfff]")
BOM = b"\xef\xbb\xbf"
# serde_json's notion of white space around a line; Python's bytes.strip() would also take \x0b.
BLANK = b" \t\n\r\x0c"

MALFORMED_KINDS = ("invalid_utf8", "invalid_json", "not_object", "bad_field_type")
DROP_REASONS = ("malformed", "empty_title", "empty_description", "same_as_title", "too_short", "too_long",
                "duplicate", "near_duplicate")
RULES = ("html_entities", "entity_without_semicolon", "double_escaped", "html_tags", "nfc_normalised", "whitespace",
         "this_text_refers_to", "reed_footer", "drop_pattern")


@dataclass
class Options:
    val_fraction: float = 0.01
    seed: int = 3407
    min_title_chars: int = 3
    max_title_chars: int = 400
    min_desc_chars: int = 40
    max_desc_chars: int = 5000
    drop_patterns: tuple[str, ...] = ()
    limit: int | None = None


class Row(NamedTuple):
    uid: str | None
    title: str
    description: str
    split: str


def unescape(s: str) -> tuple[str, bool]:
    """html.unescape, except that a named reference without ';' stays text when an ASCII letter, digit or '='
    follows the name (a browser's rule in attribute values): `&microphone` is not `µphone`.
    Returns the text and whether a named reference without ';' was decoded."""
    without_semicolon = False

    def replace(m: re.Match) -> str:
        nonlocal without_semicolon
        ref = m.group(1)
        if ref[0] == "#":
            return html.unescape(m.group())
        # The whole name, else the longest prefix of at least two characters (as html.unescape looks).
        cut = next((n for n in range(len(ref), 1, -1) if ref[:n] in html5), None)
        if cut is None:
            return m.group()
        if not ref[:cut].endswith(";"):
            after = ref[cut:cut + 1] or m.string[m.end():m.end() + 1]
            if after == "=" or (after.isascii() and after.isalnum()):
                return m.group()
            without_semicolon = True
        return html5[ref[:cut]] + ref[cut:]

    return (CHARREF.sub(replace, s) if "&" in s else s), without_semicolon


def nfc(s: str) -> str:
    if s.isascii() or unicodedata.is_normalized("NFC", s):
        return s
    return unicodedata.normalize("NFC", s)


def normalize_space(s: str) -> str:
    """Steps 4 and 8. In printable text (str.isprintable) the one white space is U+0020, which split() takes."""
    return " ".join(s.split()) if s.isprintable() else WHITESPACE.sub(" ", s).strip(" ")


def clean_text(s: str) -> tuple[str, set[str]]:
    """Steps 1-4 (title and description); returns the text and the names of the rules that changed it."""
    once, legacy_once = unescape(s)
    twice, legacy_twice = unescape(once)  # only changes what the first pass newly produced, e.g. &amp;amp;
    untagged = TAGS.sub(" ", twice) if "<" in twice else twice
    composed = nfc(untagged)
    spaced = normalize_space(composed)
    changed = {"entity_without_semicolon"} if legacy_once or legacy_twice else set()
    for name, before, after in (("html_entities", s, once), ("double_escaped", once, twice),
                                ("html_tags", twice, untagged), ("nfc_normalised", untagged, composed),
                                ("whitespace", composed, spaced)):
        if before != after:
            changed.add(name)
    return spaced, changed


def clean_description(s: str, drop_patterns: Iterable[re.Pattern] = ()) -> tuple[str, set[str]]:
    """Steps 1-8 on a description."""
    s, changed = clean_text(s)
    before, lower = s, s.lower()
    # Each boilerplate pattern needs its keyword; no other character case-folds to r, e, f or d.
    boilerplate = [THIS_TEXT_REFERS_TO] if "refer" in lower else [], [REED_FOOTER] if "reed" in lower else []
    for name, patterns in (("this_text_refers_to", boilerplate[0]), ("reed_footer", boilerplate[1]),
                           ("drop_pattern", drop_patterns)):
        for pattern in patterns:
            cut = pattern.sub("", s)
            if cut != s:
                changed.add(name)
                s = cut
    if s == before:
        return s, changed
    composed = nfc(s)  # a removal can join a letter and the combining mark after the removed text
    if composed != s:
        changed.add("nfc_normalised")
    return normalize_space(composed), changed


def dedup_key(s: str) -> str:
    """Lower-cased letters, numbers and combining marks (category M) of s, with the final sigma read as σ."""
    if s.isascii():
        return s.encode("ascii").lower().translate(None, NOT_ASCII_KEY).decode("ascii")
    s = s.lower().replace("ς", "σ")
    return NON_ALNUM.sub(lambda m: "".join(c for c in m.group() if unicodedata.category(c)[0] == "M"), s)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # json.loads accepts NaN/Infinity, serde_json does not


def parse(line: bytes) -> tuple[str | None, str | None, str | None] | str:
    """(uid, title, content), or the malformed kind."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return "invalid_json"
    if not isinstance(obj, dict):
        return "not_object"
    fields = obj.get("uid"), obj.get("title"), obj.get("content")
    if any(v is not None and not isinstance(v, str) for v in fields):
        return "bad_field_type"
    if any(v and SURROGATE.search(v) for v in fields):
        return "invalid_json"  # a lone surrogate escape (\ud800): json.loads lets it through
    return fields


def read_lines(paths: Iterable[str | Path]) -> Iterator[bytes]:
    """Lines of the inputs in order, gzip or not (by magic bytes), without BOM, newline and CR."""
    for path in paths:
        with contextlib.nullcontext(sys.stdin.buffer) if str(path) == "-" else open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
            for n, line in enumerate(stream):
                if n == 0 and line.startswith(BOM):
                    line = line[3:]
                if line.endswith(b"\n"):
                    line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                yield line


def new_stats() -> dict:
    return {"lines": 0, "blank_lines": 0, "kept": {"train": 0, "validation": 0},
            "dropped": dict.fromkeys(DROP_REASONS, 0), "malformed_kinds": dict.fromkeys(MALFORMED_KINDS, 0),
            "sampled_out": 0, "cleaned": dict.fromkeys(RULES, 0)}


def process(lines: Iterable[bytes], options: Options | None = None) -> tuple[list[Row], dict]:
    """Runs the rules of docs/cleaning.md over lines (bytes, as read_lines yields them)."""
    options = options or Options()
    stats, kept, seen = new_stats(), [], set()
    dropped, cleaned = stats["dropped"], stats["cleaned"]
    drop_patterns = [re.compile(p) for p in options.drop_patterns]
    threshold, records = options.val_fraction, 0
    for line in lines:
        if options.limit is not None and records >= options.limit:
            break
        stats["lines"] += 1
        if not line.strip(BLANK):
            stats["blank_lines"] += 1
            continue
        records += 1
        fields = parse(line)
        if isinstance(fields, str):
            dropped["malformed"] += 1
            stats["malformed_kinds"][fields] += 1
            continue
        uid, title, desc = fields
        changed = set()
        if title:
            title, changed = clean_text(title)
        if desc:
            desc, desc_changed = clean_description(desc, drop_patterns)
            changed |= desc_changed
        for rule in changed:
            cleaned[rule] += 1
        reason = filter_reason(title or "", desc or "", options)
        if reason is None:
            key = dedup_key(desc)
            if key in seen:
                reason = "duplicate"
            seen.add(key)
        if reason:
            dropped[reason] += 1
            continue
        hashed = (uid if uid is not None else title).encode()
        split = "validation" if xxhash.xxh3_64_intdigest(hashed, seed=options.seed) / 2**64 < threshold else "train"
        stats["kept"][split] += 1
        kept.append(Row(uid, title, desc, split))
    assert stats["lines"] - stats["blank_lines"] == sum(stats["kept"].values()) + sum(dropped.values()) \
        + stats["sampled_out"], stats
    return kept, stats


def filter_reason(title: str, desc: str, o: Options) -> str | None:
    if not title:
        return "empty_title"
    if not desc:
        return "empty_description"
    for text, lo, hi in ((title, o.min_title_chars, o.max_title_chars), (desc, o.min_desc_chars, o.max_desc_chars)):
        if len(text) < lo:
            return "too_short"
        if len(text) > hi:
            return "too_long"
    if dedup_key(title) == dedup_key(desc):
        return "same_as_title"
    return None


def write_outputs(rows: list[Row], stats: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("uid", pa.string()), ("title", pa.string()), ("description", pa.string())])
    for split in ("train", "validation"):
        part = [r for r in rows if r.split == split]
        table = pa.table({"uid": [r.uid for r in part], "title": [r.title for r in part],
                          "description": [r.description for r in part]}, schema=schema)
        pq.write_table(table, out_dir / f"{split}.parquet", compression="zstd")
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="trn.json files, gzip or not; - for stdin")
    ap.add_argument("-o", "--out-dir", type=Path, required=True)
    ap.add_argument("--val-fraction", type=float, default=Options.val_fraction)
    ap.add_argument("--seed", type=int, default=Options.seed)
    ap.add_argument("--min-title-chars", type=int, default=Options.min_title_chars)
    ap.add_argument("--max-title-chars", type=int, default=Options.max_title_chars)
    ap.add_argument("--min-desc-chars", type=int, default=Options.min_desc_chars)
    ap.add_argument("--max-desc-chars", type=int, default=Options.max_desc_chars)
    ap.add_argument("--drop-pattern", action="append", default=[], dest="drop_patterns")
    ap.add_argument("--limit", type=int)
    args = vars(ap.parse_args(argv))
    inputs, out_dir = args.pop("inputs"), args.pop("out_dir")
    t0 = time.perf_counter()
    rows, stats = process(read_lines(inputs), Options(**{**args, "drop_patterns": tuple(args["drop_patterns"])}))
    write_outputs(rows, stats, out_dir)
    print(f"kept {stats['kept']} dropped {sum(stats['dropped'].values())} of {stats['lines']} lines "
          f"in {time.perf_counter() - t0:.1f} s -> {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
