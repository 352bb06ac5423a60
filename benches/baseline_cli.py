"""The command line of the baseline pipelines `polars_prep.py` and `duckdb_prep.py`: run_prep_bench.py drives both
the same way (INPUT -o OUT_DIR [--val-fraction F] [--seed N] [--drop-pattern RE ...])."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path


def run_baseline(run: Callable[..., dict], description: str, argv=None, threads_help: str | None = None) -> None:
    """Parse the shared options (and `--threads` when `threads_help` is given), call `run(input, out_dir,
    val_fraction, seed, drop_patterns=...[, threads=...])`, and say on stderr what it kept and how long it took."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("input", type=Path, help="trn.json, gzip or not")
    ap.add_argument("-o", "--out-dir", type=Path, required=True)
    ap.add_argument("--val-fraction", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--drop-pattern", action="append", default=[], dest="drop_patterns")
    if threads_help:
        ap.add_argument("--threads", type=int, help=threads_help)
    args = ap.parse_args(argv)
    extra = {"threads": args.threads} if threads_help else {}
    t0 = time.perf_counter()
    stats = run(args.input, args.out_dir, args.val_fraction, args.seed, drop_patterns=args.drop_patterns, **extra)
    print(f"kept {stats['kept']} of {stats['lines']} records in {time.perf_counter() - t0:.1f} s -> {args.out_dir}",
          file=sys.stderr)
