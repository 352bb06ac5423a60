r"""The tc3-prep pipeline written with DuckDB (read_json and regexp SQL), to compare speed (run_prep_bench.py).

Every rule DuckDB has a function for runs in SQL: tags (the engine's own pattern, which RE2 reads),
NFC (nfc_normalize), white space, the boilerplate patterns, the filters, the dedup key and keep-first
(row_number over the key, by input position).

    python benches/duckdb_prep.py trn.json -o out/duckdb      # train/validation.parquet, stats.json

What DuckDB cannot do exactly, and how this script stands in (the data of the benchmark has none of the
cases where the results differ):
- HTML unescaping: no SQL function. html.unescape runs in Python on the rows with "&" only (a Python
  UDF over Arrow batches) with the engine's rule for names without ";" (benches/reference_python.py's).
- The xxh3 split: DuckDB's hash() is another function, so the split is drawn in Python on the kept rows.
- Input goes through read_json: a syntax error fails the run instead of counting a malformed line, a BOM
  or a CR is not removed, blank lines are not counted ("lines" counts records).
- The dedup key keeps `\p{L}\p{N}\p{M}` after DuckDB's lower(), where the engine keeps what Unicode calls
  alphanumeric or a combining mark after full lower-casing (İ becomes i + U+0307): rare code points differ.
"""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from baseline_cli import run_baseline
from reference_python import MALFORMED_KINDS, unescape

from tc3._rust_clean import HTML_TAG_PATTERN

# RE2's \s is ASCII only: Python's Unicode white space is \s plus the separators (\p{Z}) and controls.
WHITESPACE = r"[\s\p{Z}\p{Cc}\x{200B}\x{2060}\x{FEFF}]+"
THIS_TEXT_REFERS_TO = r"(?is)-*\s*this text refers to.*\z"
REED_FOOTER = (r"(?i)(?:(?:copyright|\(c\)|©)[\s\p{Nd},.()-]*)+(?:by\s+)?reed business information"
               r"(?:,?\s*inc\.?|,?\s*a division of reed elsevier,?\s*inc\.?)?(?:\s*all rights reserved\.?)?")
NOT_KEY = r"[^\p{L}\p{N}\p{M}]+"
RULES = ("html_entities", "entity_without_semicolon", "double_escaped", "html_tags", "nfc_normalised",
         "whitespace", "this_text_refers_to", "reed_footer", "drop_pattern")


def unescape_column(values: pa.Array) -> pa.Array:
    """One pass of the engine's unescaping over an Arrow string column (a DuckDB vectorised UDF)."""
    out = values.to_pylist()
    for i, v in enumerate(out):
        if v and "&" in v:
            out[i] = unescape(v)[0]
    return pa.array(out, pa.string())


def sql_quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def squeeze(e: str) -> str:
    return f"trim(regexp_replace({e}, {sql_quote(WHITESPACE)}, ' ', 'g'), ' ')"


def cleaned_columns(col: str, drop_patterns: list[str]) -> tuple[list[str], dict[str, str]]:
    """SELECT items that clean `col` step by step (`{col}_1`..), and each rule's 'changed' SQL expression."""
    x = "\0"  # stands for the previous step's column (no pattern holds a NUL)
    unescape = f"CASE WHEN contains({x}, '&') THEN unescape({x}) ELSE {x} END"  # Python only where it can act
    steps = [("html_entities", unescape), ("double_escaped", unescape),
             ("html_tags", f"regexp_replace({x}, {sql_quote(HTML_TAG_PATTERN)}, ' ', 'g')"),
             ("nfc_normalised", f"nfc_normalize({x})"), ("whitespace", squeeze(x))]
    if col == "content":
        steps += [("this_text_refers_to", f"regexp_replace({x}, {sql_quote(THIS_TEXT_REFERS_TO)}, '')"),
                  ("reed_footer", f"regexp_replace({x}, {sql_quote(REED_FOOTER)}, '', 'g')")]
        steps += [("drop_pattern", f"regexp_replace({x}, {sql_quote(p)}, '', 'g')") for p in drop_patterns]
        # After a removal: NFC again (counted, as the engine does) and white space again (not counted).
        steps += [("nfc_normalised", f"nfc_normalize({x})"), (None, squeeze(x))]
    items, changed, prev = [], {}, col
    for i, (rule, expr) in enumerate(steps, 1):
        name = f"{col}_{i}"
        items.append(f"{expr.replace(x, prev)} AS {name}")
        test = f"({prev} IS DISTINCT FROM {name})"
        if rule:
            changed[rule] = f"{changed[rule]} OR {test}" if rule in changed else test
        prev = name
    return items, changed


def run(path: Path, out_dir: Path, val_fraction=0.01, seed=3407, min_title=3, max_title=400, min_desc=40,
        max_desc=5000, drop_patterns=(), threads: int | None = None) -> dict:
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.create_function("unescape", unescape_column, ["VARCHAR"], "VARCHAR", type="arrow")
    con.execute(f"""CREATE TABLE src AS SELECT row_number() OVER () AS pos, uid, title, content
        FROM read_json({sql_quote(str(path))}, format='newline_delimited',
                       columns={{uid: 'VARCHAR', title: 'VARCHAR', content: 'VARCHAR'}})""")
    # The CTE chains one column per step.
    t_items, t_changed = cleaned_columns("title", [])
    c_items, c_changed = cleaned_columns("content", list(drop_patterns))
    t_last, c_last = t_items[-1].rsplit(" AS ", 1)[1], c_items[-1].rsplit(" AS ", 1)[1]
    chain = ",\n".join(f"s{i} AS (SELECT *, {item} FROM {'src' if i == 0 else f's{i - 1}'})"
                       for i, item in enumerate(t_items + c_items))
    last = f"s{len(t_items) + len(c_items) - 1}"
    rules = {r: " OR ".join(f"({d[r]})" for d in (t_changed, c_changed) if r in d) or "false" for r in RULES}
    rules["entity_without_semicolon"] = "false"  # counted below in Python (a side result of unescape)

    def key(e: str) -> str:
        return f"regexp_replace(replace(lower({e}), 'ς', 'σ'), {sql_quote(NOT_KEY)}, '', 'g')"

    con.execute(f"""CREATE TABLE judged AS WITH {chain}
        SELECT pos, uid, coalesce({t_last}, '') AS title, coalesce({c_last}, '') AS description,
               {', '.join(f'({e}) AS "{r}"' for r, e in rules.items())} FROM {last}""")
    con.execute(f"""CREATE TABLE reasons AS SELECT *, CASE
        WHEN title = '' THEN 'empty_title' WHEN description = '' THEN 'empty_description'
        WHEN length(title) < {min_title} THEN 'too_short' WHEN length(title) > {max_title} THEN 'too_long'
        WHEN length(description) < {min_desc} THEN 'too_short'
        WHEN length(description) > {max_desc} THEN 'too_long'
        WHEN {key('title')} = {key('description')} THEN 'same_as_title' END AS reason,
        {key('description')} AS key FROM judged""")
    con.execute("""CREATE TABLE kept AS SELECT pos, uid, title, description FROM reasons WHERE reason IS NULL
        QUALIFY row_number() OVER (PARTITION BY key ORDER BY pos) = 1 ORDER BY pos""")
    kept = con.sql("SELECT uid, title, description FROM kept ORDER BY pos").to_arrow_table()
    hashed = [u if u is not None else t for u, t in zip(kept["uid"].to_pylist(), kept["title"].to_pylist())]
    h = np.fromiter((xxhash.xxh3_64_intdigest(k.encode(), seed=seed) for k in hashed), np.uint64, len(hashed))
    val = pa.array(h.astype(np.float64) / 2**64 < val_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(kept.filter(pa.compute.invert(val)), out_dir / "train.parquet", compression="zstd")
    pq.write_table(kept.filter(val), out_dir / "validation.parquet", compression="zstd")

    dropped = dict.fromkeys(("malformed", "empty_title", "empty_description", "same_as_title", "too_short",
                             "too_long", "duplicate", "near_duplicate"), 0)
    dropped |= dict(con.execute("SELECT reason, count(*) FROM reasons WHERE reason IS NOT NULL GROUP BY 1").fetchall())
    passed = con.execute("SELECT count(*) FROM reasons WHERE reason IS NULL").fetchone()[0]
    dropped["duplicate"] = passed - kept.num_rows
    counts = ", ".join(f'count_if("{r}")' for r in RULES)
    cleaned = dict(zip(RULES, con.execute(f"SELECT {counts} FROM judged").fetchone(), strict=True))
    # Which records decoded a name without ';': only Python's unescape tells, on the rows with '&'.
    cleaned["entity_without_semicolon"] = sum(
        any(v and "&" in v and (unescape(v)[1] or unescape(unescape(v)[0])[1]) for v in row)
        for row in con.execute("SELECT title, content FROM src WHERE title LIKE '%&%' OR content LIKE '%&%'").fetchall())
    lines = con.execute("SELECT count(*) FROM src").fetchone()[0]
    n_val = int(np.count_nonzero(val.to_numpy(zero_copy_only=False)))
    stats = {"lines": lines, "blank_lines": 0, "malformed_kinds": dict.fromkeys(MALFORMED_KINDS, 0), "kept": {"train": kept.num_rows - n_val, "validation": n_val},
             "dropped": dropped, "sampled_out": 0, "cleaned": cleaned}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv=None) -> None:
    run_baseline(run, __doc__.split("\n\n")[0], argv, threads_help="DuckDB threads (default: its own, one per core)")

if __name__ == "__main__":
    main()
