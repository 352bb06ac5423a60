"""The full-scale synthetic trn.json of the prep benchmark (benches/gen_trn.py, same seed, same bytes), written with
one process per core: gen_trn.py makes every block of 65,536 records from its own seed, so blocks can be made in
parallel and concatenated. 2,248,619 records (~1.9 GB) in about 20 s on 16 cores instead of minutes on one.

    python benches/gpu/make_corpus.py /tmp/trn.json [--records N] [--procs P]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gen_trn

_POOLS = None


def _block(args):
    global _POOLS
    seed, block, n = args
    if _POOLS is None:
        _POOLS = gen_trn.Pools(seed)
    return gen_trn.gen_block(_POOLS, seed, block, n, 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("output", type=Path)
    ap.add_argument("--records", type=int, default=2_248_619)
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--procs", type=int, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    jobs = [
        (args.seed, b, min(gen_trn.BLOCK, args.records - b * gen_trn.BLOCK))
        for b in range((args.records + gen_trn.BLOCK - 1) // gen_trn.BLOCK)
    ]
    with ProcessPoolExecutor(args.procs) as pool, open(args.output, "wb") as out:
        out.writelines(pool.map(_block, jobs))
    print(
        f"wrote {args.records:,} records to {args.output} in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
