r"""The tc3-prep pipeline written with polars, to compare speed (benches/run_prep_bench.py).

Vectorised polars string expressions (Rust regex) for every rule but HTML unescaping, which polars lacks:
html.unescape runs in Python on the rows that contain "&" only (about a fifth) and is scattered back.

    python benches/polars_prep.py trn.json -o out/polars      # train/validation.parquet, stats.json

Known differences from docs/cleaning.md (the data of the benchmark has none of these cases):
- Input goes through pl.read_ndjson: a syntax error fails the run instead of counting a malformed line,
  a number where a string belongs is read as its text, blank lines are skipped uncounted ("lines" counts
  records), a BOM or a CR is not removed.
- The dedup key removes `[^\p{L}\p{N}]` (Unicode letters and numbers) where Python removes what
  `str.isalnum()` rejects; `\b` and `\s` follow the Rust regex crate. They differ only on rare code points.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import polars as pl
import xxhash
from baseline_cli import run_baseline

WHITESPACE = r"[\s\p{Cc}\x{200B}\x{2060}\x{FEFF}]+"
TAGS = r"(?s)<!--.*?-->|</?[A-Za-z][^<>]*>"
THIS_TEXT_REFERS_TO = r"(?is)-*\s*this text refers to.*\z"
REED_FOOTER = (r"(?i)(?:(?:copyright|\(c\)|©)[\s\d,.()-]*)+(?:by\s+)?reed business information"
               r"(?:,?\s*inc\.?|,?\s*a division of reed elsevier,?\s*inc\.?)?(?:\s*all rights reserved\.?)?")
NON_ALNUM = r"[^\p{L}\p{N}]+"
RULES = ("html_entities", "double_escaped", "html_tags", "whitespace", "this_text_refers_to", "reed_footer",
         "drop_pattern")


def unescape_rows_with_amp(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(after one html.unescape pass, after two), calling Python only where there is an '&'."""
    at = s.str.contains("&", literal=True).fill_null(False).arg_true()
    once = [html.unescape(v) for v in s.gather(at).to_list()]
    twice = [html.unescape(v) for v in once]
    return s.clone().scatter(at, once), s.clone().scatter(at, twice)


def squeeze(s: pl.Series) -> pl.Series:
    return s.str.replace_all(WHITESPACE, " ").str.strip_chars(" ")


def clean(df: pl.DataFrame, drop_patterns: list[str]) -> tuple[pl.DataFrame, dict]:
    """Steps 1-7 on title and content; returns the cleaned frame and the per-record rule counts.
    One step at a time, so only two versions of a column are alive at once."""
    changed = {}

    def step(rule: str, before: pl.Series, after: pl.Series) -> pl.Series:
        mask = before.ne_missing(after)
        changed[rule] = changed[rule] | mask if rule in changed else mask
        return after

    out = df.select("uid")
    for col in ("title", "content"):
        once, twice = unescape_rows_with_amp(df[col])
        step("html_entities", df[col], once)
        s = step("double_escaped", once, twice)
        s = step("html_tags", s, s.str.replace_all(TAGS, " "))
        s = step("whitespace", s, squeeze(s))
        if col == "content":
            s = step("this_text_refers_to", s, s.str.replace_all(THIS_TEXT_REFERS_TO, ""))
            s = step("reed_footer", s, s.str.replace_all(REED_FOOTER, ""))
            for pattern in drop_patterns:
                s = step("drop_pattern", s, s.str.replace_all(pattern, ""))
            s = squeeze(s)
        out = out.with_columns(s.alias("description" if col == "content" else col))
    return out, {rule: int(changed[rule].sum()) if rule in changed else 0 for rule in RULES}


def key(e: pl.Expr) -> pl.Expr:
    return e.str.to_lowercase().str.replace_all(NON_ALNUM, "")


def run(path: Path, out_dir: Path, val_fraction=0.01, seed=3407, min_title=3, max_title=400, min_desc=40,
        max_desc=5000, drop_patterns=()) -> dict:
    df = pl.read_ndjson(path, schema={"uid": pl.String, "title": pl.String, "content": pl.String})
    df, cleaned = clean(df, list(drop_patterns))
    t, d = pl.col("title").fill_null(""), pl.col("description").fill_null("")
    tl, dl = t.str.len_chars(), d.str.len_chars()
    reason = (pl.when(t == "").then(pl.lit("empty_title"))
              .when(d == "").then(pl.lit("empty_description"))
              .when(tl < min_title).then(pl.lit("too_short")).when(tl > max_title).then(pl.lit("too_long"))
              .when(dl < min_desc).then(pl.lit("too_short")).when(dl > max_desc).then(pl.lit("too_long"))
              .when(key(t) == key(d)).then(pl.lit("same_as_title")))
    df = df.with_columns(reason=reason, key=key(d))
    passed = df.filter(pl.col("reason").is_null())
    first = passed["key"].is_first_distinct()
    kept = passed.filter(first).drop("reason", "key")
    hashed = kept.select(pl.coalesce("uid", "title"))["uid"].to_list()
    h = np.fromiter((xxhash.xxh3_64_intdigest(k.encode(), seed=seed) for k in hashed), np.uint64, len(hashed))
    val = pl.Series(h.astype(np.float64) / 2**64 < val_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept.filter(~val).write_parquet(out_dir / "train.parquet", compression="zstd")
    kept.filter(val).write_parquet(out_dir / "validation.parquet", compression="zstd")
    reasons = df["reason"].value_counts()
    dropped = dict.fromkeys(("malformed", "empty_title", "empty_description", "same_as_title", "too_short",
                             "too_long", "duplicate", "near_duplicate"), 0)
    dropped |= dict(zip(reasons["reason"].to_list(), reasons["count"].to_list(), strict=True))
    dropped.pop(None, None)
    dropped["duplicate"] = int((~first).sum())
    stats = {"lines": df.height, "blank_lines": 0, "kept": {"train": int((~val).sum()), "validation": int(val.sum())},
             "dropped": dropped, "sampled_out": 0, "cleaned": cleaned}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv=None) -> None:
    run_baseline(run, __doc__.split("\n\n")[0], argv)

if __name__ == "__main__":
    main()
