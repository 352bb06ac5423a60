"""`tc3-index`: build the product search index of a tc3-prep dir, or query it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tc3.cli.args import make_parser
from tc3 import index
from tc3.errors import UserError, command, need
from tc3.progress import Ticker


def parser() -> argparse.ArgumentParser:
    p = make_parser(
        prog="tc3-index",
        description="Index every record of a tc3-prep dir (train and validation) with tantivy: BM25 over the "
        "titles, each record fetchable by uid; saved in PREP_DIR/index (or -o). With --query, search that index "
        "instead and say whether the best hit matches well enough to be used (it holds at least "
        f"{index.MATCH_THRESHOLD:.0%} of the query's words, one typo a word allowed). Rules: docs/index.md.",
        epilog="Example: tc3-index prep/   |   tc3-index prep/ --query 'the hobbit paperback' -k 3",
    )
    p.add_argument("prep_dir", type=Path, metavar="PREP_DIR", help="a tc3-prep output dir")
    p.add_argument("-o", "--out", type=Path, metavar="OUT",
                   help="where the index is (built or queried) (default: PREP_DIR/index)")
    p.add_argument("--force", action="store_true", help="replace an index an earlier tc3-index built there")
    p.add_argument("--threads", type=int, metavar="N", help="indexing threads (default: all cores, at most 8)")
    p.add_argument("--query", metavar="TEXT", help="search the index for a title or part of one; build nothing")
    p.add_argument("-k", type=int, default=5, metavar="K", help="hits shown with --query (default 5)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    return p


@command("tc3-index", interrupted="interrupted; no index written")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    need("index", "tantivy")
    if args.query is not None:
        return query(args)
    return build(args)


def build(args: argparse.Namespace) -> int:
    with Ticker("tc3-index", "records", lines=False, quiet=args.quiet) as ticker:
        meta = index.build_index(args.prep_dir, args.out, force=args.force, threads=args.threads,
                                 progress=ticker.update)
    if not args.quiet:
        out = args.out or args.prep_dir / "index"
        table = Table(title=f"tc3-index -> {out}", show_header=False)
        rows = [("records: train", f"{meta['records']['train']:,}"),
                ("records: validation", f"{meta['records']['validation']:,}"),
                ("seconds", f"{meta['seconds']:,.1f}"),
                ("records/s", f"{meta['total'] / max(meta['seconds'], 1e-9):,.0f}"),
                ("size on disk", f"{meta['bytes'] / 2**20:,.1f} MiB")]
        for label, value in rows:
            table.add_row(label, value)
        Console().print(table)
    return 0


def query(args: argparse.Namespace) -> int:
    from tc3.user_text import accept

    if args.k < 1:
        raise UserError(f"-k must be at least 1, not {args.k}")
    text = accept(args.query)  # cleaned as the titles the index was built from were
    if not text:
        raise UserError("--query is empty: give a title or part of one")
    ix = index.ProductIndex.open(args.out or args.prep_dir)
    hits = ix.search(text, k=args.k)
    table = Table(title=f"{text!r} in {ix.path} ({len(ix):,} records)",
                  caption="coverage: share of the query's content words (stopwords left out) found in the title")
    for name, justify in (("uid", "left"), ("score", "right"), ("coverage", "right"), ("title", "left")):
        table.add_column(name, justify=justify)
    for h in hits:
        table.add_row(h.uid, f"{h.score:.2f}", f"{h.coverage:.0%}", h.title)
    console = Console()
    console.print(table)
    best = ix.lookup(text)
    if best is not None:
        console.print(f"lookup: {best.uid} ({best.title})")
    else:  # the coverage of the table's first row: one definition, `index.coverage`
        covered = f"{hits[0].coverage:.0%}" if hits else "0%"
        console.print(f"lookup: no product matches: the best hit covers {covered} of the query's content words "
                      f"(stopwords do not count), less than {index.MATCH_THRESHOLD:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
