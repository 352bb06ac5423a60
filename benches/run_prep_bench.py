"""Times tc3-prep against the Python reference, polars and DuckDB on one input, in one run.

    python benches/run_prep_bench.py --records 2248619 --gz --name full   # generated trn.json (cached in benches/data/)
    python benches/run_prep_bench.py path/to/trn.json.gz --skip-reference
    python benches/run_prep_bench.py --threads 1,2,4,8 ...   # also tc3-prep at each thread count

Each tool runs as a child process on a warm page cache; wall seconds, peak RSS and CPU seconds are the
child's own (/usr/bin/time, else os.wait4). With a gzip input (or --gz, which adds INPUT.gz) it also times
`gzip -dc` (one stream: the floor for any single-stream reader) and tc3-prep on the .gz.
MB/s are of the uncompressed input.
Writes benches/results/prep-<name>.json and a .md table beside it.

Exits 1 when a run fails or when tc3-prep's output (rows of each split, in order, and the counts of stats.json)
differs from the reference's, or the .gz run's or another thread count's from the plain run's (another thread
count's Parquet files must be byte-identical): CI relies on it. How polars' and DuckDB's
outputs differ from the reference's is recorded too, for information (their scripts list what they cannot do
exactly).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

import gen_trn
import pyarrow.parquet as pq

BENCHES = Path(__file__).resolve().parent
DATA = BENCHES / "data"  # generated inputs and the runs' outputs (ignored by git)
GNU_TIME = Path("/usr/bin/time")
INFORMATIONAL = " (for information)"  # a parity check that does not fail the benchmark


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def warm_and_size(path: Path) -> int:
    """Reads the file once (so every tool sees a warm page cache); returns its uncompressed size."""
    size, inflate = 0, zlib.decompressobj(31) if is_gzip(path) else None
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            if inflate is None:
                size += len(chunk)
                continue
            while chunk:  # concatenated members: start a new inflater at each member's end
                size += len(inflate.decompress(chunk))
                chunk = inflate.unused_data
                if inflate.eof:
                    inflate = zlib.decompressobj(31)
    return size


def timed(cmd: list[str]) -> dict:
    """Wall seconds, peak RSS and CPU of one child. The child's rusage from os.wait4 alone would count our
    own RSS (Linux keeps the high-water mark of the forking process's memory across exec), so the child is
    started by /usr/bin/time, which forks it from a small process, when it exists."""
    with tempfile.NamedTemporaryFile("r") as report:
        wrapped = [str(GNU_TIME), "-f", "%M %U %S", "-o", report.name, *cmd] if GNU_TIME.exists() else cmd
        t0 = time.perf_counter()
        child = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
        rss_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
        if GNU_TIME.exists():
            rss, user, system = report.read().split("\n")[-2].split()  # after an exit-status line on failure
            rss_kib, cpu = int(rss), float(user) + float(system)
    rc = os.waitstatus_to_exitcode(status)
    if rc:
        print(f"  FAILED ({rc}): {stderr.decode(errors='replace')[-2000:]}", file=sys.stderr)
    return {"seconds": round(seconds, 3), "peak_rss_mib": round(rss_kib / 1024, 1), "cpu_seconds": round(cpu, 2),
            "rc": rc}


def recorded(arg: str | Path) -> str:
    """A path as the results record it: relative to the repository when inside it, else its name alone (no
    absolute local path goes into a committed result)."""
    path = Path(arg)
    if not path.is_absolute():
        return str(arg)
    return str(path.relative_to(BENCHES.parent)) if path.is_relative_to(BENCHES.parent) else path.name


def machine() -> dict:
    cpuinfo, meminfo = Path("/proc/cpuinfo").read_text().splitlines(), Path("/proc/meminfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    mem_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    env = {k: os.environ[k] for k in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS") if k in os.environ}
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "env": env}


def parquet_rows(out: Path) -> dict:
    """Rows written per split, from the Parquet footers (reference: train.parquet; tc3-prep: data/train-*)."""
    rows = {"train": 0, "validation": 0}
    for f in out.rglob("*.parquet"):
        rows["validation" if f.name.startswith("validation") else "train"] += pq.ParquetFile(f).metadata.num_rows
    return rows


def stats_diff(got: dict, want: dict) -> list[str]:
    """Differences of the counts the reference writes (tc3-prep writes more), as 'key: got != want' lines."""
    out = []
    for key, value in want.items():
        if isinstance(value, dict):
            sub = got.get(key) or {}
            out += [f"{key}.{k}: {sub.get(k)} != {v}" for k, v in value.items() if sub.get(k) != v]
        elif got.get(key) != value:
            out.append(f"{key}: {got.get(key)} != {value}")
    return out


def split_rows(out: Path, split: str) -> Iterator[tuple]:
    """(uid, title, description) of one split in file order (reference: split.parquet; tc3-prep: data/split-*)."""
    for f in sorted(out.rglob(f"{split}*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1 << 16, columns=["uid", "title", "description"]):
            yield from zip(*(batch.column(i).to_pylist() for i in range(3)))


def rows_diff(got: Path, want: Path) -> list[str]:
    """The first differing row of each split and the row counts, as 'split row i: got != want' lines."""
    out = []
    for split in ("train", "validation"):
        n_got = n_want = 0
        first = None
        for i, (a, b) in enumerate(zip_longest(split_rows(got, split), split_rows(want, split))):
            n_got, n_want = n_got + (a is not None), n_want + (b is not None)
            if first is None and a != b:
                first = f"{split} row {i}: {str(a)[:300]} != {str(b)[:300]}"
        if n_got != n_want:
            out.append(f"{split} rows: {n_got} != {n_want}")
        if first:
            out.append(first)
    return out


def files_diff(got: Path, want: Path) -> list[str]:
    """The Parquet files of output dir `got` that are missing or not byte-identical in `want`."""
    def digests(out: Path) -> dict[str, str]:
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((out / "data").glob("*.parquet"))}
    a, b = digests(got), digests(want)
    return [f"{name}: not byte-identical" for name in sorted(a.keys() | b.keys()) if a.get(name) != b.get(name)]


def output_diff(got: Path, want: Path, counts: bool = True) -> list[str]:
    """How output dir `got` differs from `want`: rows, and (counts) stats.json's counts; [] when they agree."""
    out = rows_diff(got, want)
    if counts:
        out += stats_diff(*(json.loads((d / "stats.json").read_text()) for d in (got, want)))
    return out


def resolve_inputs(args) -> tuple[Path | None, Path | None]:
    """(plain, gz) inputs; a missing generated one (--records, --gz) is made in benches/data/."""
    if args.input:
        if not args.input.exists():
            sys.exit(f"{args.input} does not exist")
        if is_gzip(args.input):
            return None, args.input
        plain = args.input
    else:
        # Named by the generator's code and corpus too, so a changed generator never reuses a stale file.
        version = hashlib.sha1(Path(gen_trn.__file__).read_bytes() + gen_trn.CORPUS.read_bytes()).hexdigest()[:8]
        plain = DATA / f"trn-n{args.records}-s{args.seed}-{version}.json"
    gz = plain.with_name(plain.name + ".gz") if args.gz else None
    if not plain.exists():
        print(f"generating {plain} ({args.records:,} records, seed {args.seed})", file=sys.stderr)
        gen_trn.generate(plain, args.records, args.seed, gz_too=bool(gz) and not gz.exists())
    if gz and not gz.exists():
        print(f"compressing {plain} to {gz}", file=sys.stderr)
        with open(plain, "rb") as src, open(gz, "wb") as dst:
            deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
            while chunk := src.read(1 << 24):
                dst.write(deflate.compress(chunk))
            dst.write(deflate.flush())
    return plain, gz


def planned_runs(args, plain: Path | None, gz: Path | None, out: Path) -> list[tuple[str, list[str]]]:
    main_input = plain or gz
    # The installed command, else the module (a checkout on PYTHONPATH, as on a machine without the entry point).
    command = shutil.which("tc3-prep")
    tc3 = [command] if command else [sys.executable, "-m", "tc3.cli.prep"] if importlib.util.find_spec("tc3") else None
    if not tc3 and not args.skip_tc3:
        sys.exit("tc3-prep not found on PATH (pip install . / maturin develop), or give --skip-tc3")
    with_tc3 = tc3 and not args.skip_tc3

    def tc3_run(name: str, source: Path, *extra: str) -> tuple[str, list[str]]:
        return name, [*tc3, str(source), "-o", str(out / name), "--force", *extra, *args.tc3_arg]

    runs = []
    if with_tc3:
        runs.append(tc3_run("tc3-prep", main_input))
        runs += [tc3_run(f"tc3-prep-t{n}", main_input, "--threads", str(n)) for n in args.threads]
    if not args.skip_reference:
        runs.append(("reference", [sys.executable, str(BENCHES / "reference_python.py"), str(main_input),
                                   "-o", str(out / "reference")]))
    for engine in ("polars", "duckdb"):
        if not getattr(args, f"skip_{engine}"):
            runs.append((engine, [sys.executable, str(BENCHES / f"{engine}_prep.py"), str(main_input),
                                  "-o", str(out / engine)]))
    if gz:
        if not args.skip_gzip:
            runs.append(("gzip -dc", ["gzip", "-dc", str(gz)]))
        if with_tc3 and plain:
            runs.append(tc3_run("tc3-prep-gz", gz))
    return runs


def thread_counts(value: str) -> list[int]:
    """`--threads 1,2,4`: positive thread counts."""
    counts = [int(n) for n in value.split(",")]
    if min(counts) < 1:
        raise ValueError(value)
    return counts


def ratios(results: dict, gz_only: bool) -> dict:
    def secs(name):
        r = results.get(name)
        return r["seconds"] if r and r["rc"] == 0 else None

    tc3 = secs("tc3-prep")
    pairs = {"reference/tc3-prep": (secs("reference"), tc3), "polars/tc3-prep": (secs("polars"), tc3),
             "duckdb/tc3-prep": (secs("duckdb"), tc3),
             "tc3-prep-gz/gzip -dc": (tc3 if gz_only else secs("tc3-prep-gz"), secs("gzip -dc"))}
    return {k: round(a / b, 2) for k, (a, b) in pairs.items() if a and b}


def markdown(report: dict) -> str:
    rows = [f"| {name} | {r['seconds']:.2f} | {r['mb_per_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['cpu_seconds']:.1f} | "
            f"{'/'.join(map(str, r['rows'].values())) if 'rows' in r else ''} | "
            f"{'ok' if r['rc'] == 0 else 'FAILED ' + str(r['rc'])} |" for name, r in report["runs"].items()]
    m, inp = report["machine"], report["input"]
    lines = [f"# tc3-prep benchmark: {report['name']}", "",
             f"- date: {report['date']}", f"- command: `{report['command']}`",
             f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}"
             + "".join(f", {k}={v}" for k, v in m["env"].items()),
             f"- input: {inp['path']} ({inp['bytes'] / 1e6:,.0f} MB uncompressed)",
             *([f"- load average (1, 5, 15 min) before: {report['load']['before']}, after: {report['load']['after']}"]
               if "load" in report else []), "",
             "| run | seconds | MB/s | peak RSS MiB | CPU seconds | rows train/validation | status |",
             "|---|---:|---:|---:|---:|---:|---|", *rows, ""]
    lines += [f"- {k}: **{v}x**" for k, v in report["ratios"].items()]
    for check, diff in report["parity"].items():
        lines.append(f"- {check}: " + ("identical" if not diff else "DIFFER: " + "; ".join(diff)))
    return "\n".join(lines) + "\n"


def parity_checks(results: dict, out: Path) -> dict[str, list[str]]:
    """Each output comparison the runs allow, with its differences: tc3-prep against the reference (rows and
    counts), tc3-prep on the .gz against tc3-prep (rows). A failed run is compared with nothing."""
    ok = {name for name, r in results.items() if r["rc"] == 0}
    checks = {}
    if {"tc3-prep", "reference"} <= ok:
        checks["tc3-prep vs reference"] = output_diff(out / "tc3-prep", out / "reference")
    for other in sorted(name for name in ok if name.startswith("tc3-prep-")):
        if "tc3-prep" in ok:
            checks[f"{other} vs tc3-prep"] = output_diff(out / other, out / "tc3-prep", counts=False)
            if other.startswith("tc3-prep-t"):  # another thread count: the same files, byte for byte
                checks[f"{other} vs tc3-prep"] += files_diff(out / other, out / "tc3-prep")
    for engine in ("polars", "duckdb"):
        if {engine, "reference"} <= ok:
            checks[f"{engine} vs reference{INFORMATIONAL}"] = output_diff(out / engine, out / "reference")
    return checks


def parse_args(argv=None) -> argparse.Namespace:
    """The command line's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", type=Path, help="trn.json or .gz (default: generated, see --records)")
    ap.add_argument("--records", type=int, default=2_248_619)
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--gz", action="store_true", help="also run on INPUT.gz (generated if missing)")
    ap.add_argument("--skip-tc3", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-polars", action="store_true")
    ap.add_argument("--skip-duckdb", action="store_true")
    ap.add_argument("--skip-gzip", action="store_true")
    ap.add_argument("--tc3-arg", action="append", default=[], help="extra argument for tc3-prep (repeatable)")
    ap.add_argument("--threads", type=thread_counts, default=[],
                    help="also run tc3-prep with each of these thread counts (comma list, e.g. 1,2,4); each "
                         "output must equal the default run's")
    ap.add_argument("--name", help="results name (default: from the input)")
    ap.add_argument("--out", type=Path, help="result JSON (default: benches/results/prep-<name>.json)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the Parquet outputs (printed path)")
    return ap.parse_args(argv)


def run_all(runs: list[tuple[str, list[str]]], size: int, out: Path) -> dict:
    """Times each planned run in turn; returns each run's timings (with MB/s, rows written and its command) by name."""
    results = {}
    for run_name, cmd in runs:
        print(f"{run_name}: {' '.join(cmd)}", file=sys.stderr)
        r = timed(cmd)
        r["mb_per_s"] = round(size / 1e6 / r["seconds"], 1)
        if (out / run_name).is_dir():
            r["rows"] = parquet_rows(out / run_name)
        results[run_name] = r | {"cmd": [recorded(arg) for arg in cmd]}
        print(f"  {r['seconds']:.2f} s, {r['mb_per_s']:.1f} MB/s, peak RSS {r['peak_rss_mib']:.0f} MiB",
              file=sys.stderr)
    return results


def make_report(name: str, plain: Path | None, gz: Path | None, size: int, load_before: tuple, results: dict,
                parity: dict) -> dict:
    """The result record: what ran where, on what input, the runs, their ratios and the parity checks."""
    return {"name": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *map(recorded, sys.argv)]), "machine": machine(),
            # Other work on the machine slows every run alike: the load averages say how much there was.
            "load": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
            "input": {"path": recorded(plain or gz), "gz": recorded(gz) if gz else None, "bytes": size},
            "runs": results, "ratios": ratios(results, gz_only=plain is None), "parity": parity}


def write_report(report: dict, dest: Path) -> None:
    """Writes the record to `dest` (JSON) and its table beside it (.md), and prints the table."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(report, indent=2) + "\n")
    dest.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def finish(results: dict, parity: dict, out: Path, keep_outputs: bool) -> int:
    """Keeps the outputs when asked or on a failure (else removes them); returns 1 when a run failed or a
    failing parity check differed, else 0."""
    failed = [name for name, r in results.items() if r["rc"]] + [
        check for check, diff in parity.items() if diff and not check.endswith(INFORMATIONAL)]
    if keep_outputs or failed:  # a failure's outputs are what its diagnosis needs
        print(f"outputs kept in {out}", file=sys.stderr)
    else:
        shutil.rmtree(out)
    if failed:
        print(f"benchmark FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    """Runs the benchmark; 0 when every run succeeded and every output comparison agreed, 1 otherwise."""
    args = parse_args(argv)
    plain, gz = resolve_inputs(args)
    name = args.name or (plain or gz).name.split(".")[0]
    size = warm_and_size(plain or gz)
    if plain and gz:
        warm_and_size(gz)
    DATA.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="bench-out-", dir=DATA))
    load_before = os.getloadavg()
    results = run_all(planned_runs(args, plain, gz, out), size, out)
    parity = parity_checks(results, out)
    report = make_report(name, plain, gz, size, load_before, results, parity)
    write_report(report, args.out or BENCHES / "results" / f"prep-{name}.json")
    return finish(results, parity, out, args.keep_outputs)


if __name__ == "__main__":
    sys.exit(main())
