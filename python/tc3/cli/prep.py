"""`tc3-prep`: clean LF-Amazon-1.3M `trn.json` into Parquet train/validation splits."""

from __future__ import annotations

import argparse
import sys
import time
from importlib.resources import files
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from tc3.cli.args import make_parser
from tc3 import prep
from tc3.errors import UserError, command
from tc3.outputs import read_marker
from tc3.progress import terminal_bar

EXAMPLE_INPUT = files("tc3") / "samples" / "amazon_titles_sample500.jsonl.gz"


def parser() -> argparse.ArgumentParser:
    p = make_parser(
        prog="tc3-prep",
        description="Clean LF-Amazon-1.3M trn.json (one JSON object a line; plain, .gz or - for stdin) into "
        "OUT_DIR/data/{train,validation}-*.parquet (uid, title, description, kind), OUT_DIR/stats.json and a "
        "dataset card that datasets.load_dataset(OUT_DIR) reads. Rules: docs/cleaning.md.",
        epilog="Example: tc3-prep trn.json.gz -o prep/ --rejects rejects.jsonl   |   tc3-prep --example -o demo/",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="trn.json files (.json/.jsonl/.gz) or - for stdin")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT_DIR", help="output directory")
    p.add_argument("--example", action="store_true", help="use the bundled 500 real records as input")
    d = prep.PrepOptions()  # the engine's defaults, shown in the help and used when a flag is not given
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of records in validation (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the split, sample and MinHash (default %(default)s)")
    p.add_argument("--limit", type=int, metavar="N", help="read only the first N records")
    p.add_argument("--sample", type=int, metavar="N", help="keep N kept records drawn uniformly at random (seeded)")
    for bound in ("min_title_chars", "max_title_chars", "min_desc_chars", "max_desc_chars"):
        p.add_argument("--" + bound.replace("_", "-"), type=int, default=getattr(d, bound), help="default %(default)s")
    p.add_argument("--dedup", choices=prep.DEDUP_MODES, default=d.dedup,
                   help="exact: same description up to case and punctuation; near: also word 5-gram "
                   "Jaccard >= 0.8 (MinHash+LSH) (default %(default)s)")
    p.add_argument("--drop-pattern", action="append", default=[], metavar="REGEX",
                   help="extra boilerplate removed from descriptions (Rust regex syntax; repeatable)")
    p.add_argument("--drop-kinds", type=kind_list, default=[], metavar="KIND,...",
                   help=f"drop kept records of these content kinds ({', '.join(prep.CONTENT_KINDS)}), "
                   "e.g. review_quotes,metadata_only")
    p.add_argument("--strip-attributed-quotes", action="store_true",
                   help="remove quoted praise with its source ('A triumph...' Sunday Times), keep the rest")
    p.add_argument("--rejects", type=Path, metavar="FILE", help="write dropped records with their reason as JSON lines")
    p.add_argument("--max-errors", type=int, metavar="N", help="fail when more than N lines are malformed (default: when more than half are)")
    p.add_argument("--threads", type=int, metavar="N", help="worker threads (default: all cores)")
    p.add_argument("--rule-times", action="store_true",
                   help="add rule_seconds (time in each hot rule, summed over threads) to stats.json")
    p.add_argument("--force", action="store_true",
                   help="replace OUT_DIR (and the --rejects file) when an earlier tc3-prep wrote them; anything "
                   "else is never replaced")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    return p


def kind_list(value: str) -> list[str]:
    """`--drop-kinds` value: comma-separated kind names, each checked (argparse exits 2 on a bad one)."""
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in prep.CONTENT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'nothing'} is not a content kind (choose from {', '.join(prep.CONTENT_KINDS)})")
    return kinds


@command("tc3-prep", interrupted="interrupted; no output written")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    inputs = list(args.inputs) + ([str(EXAMPLE_INPUT)] if args.example else [])
    if not inputs:
        raise UserError("give at least one INPUT (or --example)")
    bar = terminal_bar(
        TextColumn("[bold]tc3-prep"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("{task.fields[records]:,} records, {task.fields[kept]:,} kept"), TimeRemainingColumn(),
        quiet=args.quiet,
    )
    task = bar.add_task("prep", total=None, records=0, kept=0)

    def progress(bytes_read: int, bytes_total: int | None, records: int, kept: int) -> None:
        bar.update(task, completed=bytes_read, total=bytes_total, records=records, kept=kept)

    indexes = derived_indexes(args.out)
    started = time.perf_counter()
    with bar:
        stats = prep.run(
            inputs, args.out, val_fraction=args.val_fraction, seed=args.seed, limit=args.limit,
            sample=args.sample, min_title_chars=args.min_title_chars, max_title_chars=args.max_title_chars,
            min_desc_chars=args.min_desc_chars, max_desc_chars=args.max_desc_chars, dedup=args.dedup,
            drop_patterns=args.drop_pattern, drop_kinds=args.drop_kinds,
            strip_attributed_quotes=args.strip_attributed_quotes, rejects=args.rejects, max_errors=args.max_errors,
            threads=args.threads, rule_times=args.rule_times, force=args.force, progress=progress,
        )
    if not args.quiet:
        Console().print(summary(stats, args.out, time.perf_counter() - started))
    for index in indexes:  # said even with -q: an output the user built is gone
        print(f"tc3-prep: the index {index} was built from the replaced data and is removed with it; rebuild it: "
              f"tc3-index {args.out}" + (f" -o {index}" if index.name != "index" else ""), file=sys.stderr)
    return 0


def derived_indexes(out: Path) -> list[Path]:
    """The tc3-index outputs inside an earlier OUT_DIR, which replacing it removes (they index the old records)."""
    if not out.is_dir():
        return []
    return [p for p in sorted(out.iterdir()) if p.is_dir() and (read_marker(p) or {}).get("command") == "tc3-index"]


def summary(stats: dict, out: Path, seconds: float) -> Table:
    """The end-of-run table: where records went, and what cleaning changed."""
    table = Table(title=f"tc3-prep -> {out}  ({stats['bytes'] / 1e6:,.1f} MB in {seconds:,.1f} s)", show_header=True)
    table.add_column("")
    table.add_column("records", justify="right")
    table.add_column("share", justify="right")
    records = max(stats["records"], 1)
    rows = [("lines read", stats["lines"]), ("blank lines", stats["blank_lines"]),
            ("kept: train", stats["kept"]["train"]), ("kept: validation", stats["kept"]["validation"])]
    rows += [(f"dropped: {reason}", n) for reason, n in stats["dropped"].items() if n]
    if stats["sampled_out"]:
        rows.append(("left out by --sample", stats["sampled_out"]))
    rows += [(f"cleaned: {rule}", n) for rule, n in stats["cleaned"].items() if n]
    rows += [(f"kind: {kind}", n) for kind, n in stats["kinds"].items() if n]
    for label, n in rows:
        share = "" if label in ("lines read", "blank lines") else f"{100 * n / records:.1f}%"
        table.add_row(label, f"{n:,}", share)
    return table


if __name__ == "__main__":
    sys.exit(main())
