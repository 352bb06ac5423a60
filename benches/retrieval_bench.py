"""Retrieval benchmark of tc3-index: build time, top-1 accuracy on noisy held-out titles, lookup latency, and the
false matches of titles that are not in the index.

    python benches/retrieval_bench.py benches/data/prep-full --queries 1000 --seed 3407 \\
        --out benches/results/retrieval.json --export-grounding benches/data/grounding-1000.jsonl

Positives: validation records sampled with --seed; each title is lower-cased, loses one word (titles of 3+ words)
and gets one typo (substitution, transposition, deletion or insertion in a word of 4+ letters). Negatives: titles
of benches/gen_trn.py under --neg-seed, cleaned by tc3-prep, minus any title (case-insensitive) in the index.
Writes --out (JSON) and a .md table beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tantivy

from tc3 import index as tc3_index
from tc3 import prep as tc3_prep
from tc3.index import CANDIDATES, MATCH_THRESHOLD, ProductIndex, build_index, match_key

HERE = Path(__file__).resolve().parent
LETTERS = "abcdefghijklmnopqrstuvwxyz"
TYPO_SITE = re.compile(r"[^\W\d_]{4,}")  # a run of 4+ letters
WARMUP = 50
THRESHOLDS = (0.5, 0.6, 0.67, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
TARGETS = {"build_minutes": 10, "top1_accuracy": 0.95, "p95_ms": 50}


NOISE_KINDS = ("lower", "drop", "typo")


def noisy(title: str, rng: random.Random, kinds=NOISE_KINDS) -> tuple[str, dict]:
    """The kinds of noise asked for, where they apply: lower-cased; one word dropped (titles of 3+ words); one typo
    in a word of 4+ letters."""
    tokens = (title.lower() if "lower" in kinds else title).split()
    noise = {"kinds": list(kinds), "dropped": None, "typo": None}
    if "drop" in kinds and len(tokens) >= 3:
        noise["dropped"] = tokens.pop(rng.randrange(len(tokens)))
    sites = [(i, m) for i, t in enumerate(tokens) for m in TYPO_SITE.finditer(t)]
    if "typo" in kinds and sites:
        i, m = rng.choice(sites)
        word, start = m.group(), m.start()
        kind = rng.choice(["substitution", "transposition", "deletion", "insertion"])
        p = rng.randrange(len(word))
        if kind == "substitution":
            typo = word[:p] + rng.choice(LETTERS.replace(word[p], "")) + word[p + 1:]
        elif kind == "transposition":
            pairs = [q for q in range(len(word) - 1) if word[q] != word[q + 1]]
            if pairs:
                p = rng.choice(pairs)
                typo = word[:p] + word[p + 1] + word[p] + word[p + 2:]
            else:  # "aaaa": nothing to swap, so substitute instead
                kind, typo = "substitution", word[:p] + rng.choice(LETTERS.replace(word[p], "")) + word[p + 1:]
        elif kind == "deletion":
            typo = word[:p] + word[p + 1:]
        else:
            typo = word[:p] + rng.choice(LETTERS) + word[p:]
        tokens[i] = tokens[i][:start] + typo + tokens[i][start + len(word):]
        noise["typo"] = {"kind": kind, "word": word, "as": typo}
    return " ".join(tokens), noise


def read_split(prep_dir: Path, split: str) -> pa.Table:
    files = sorted((prep_dir / "data").glob(f"{split}-*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)


def lower_titles(prep_dir: Path) -> pa.ChunkedArray:
    """Every indexed title, lower-cased (only the title column is read)."""
    files = sorted((prep_dir / "data").glob("*.parquet"))
    return pc.utf8_lower(pa.chunked_array([c for f in files for c in pq.read_table(f, columns=["title"])["title"].chunks]))


def make_negatives(prep_dir: Path, n: int, records: int, seed: int, pick_seed: int) -> tuple[list[str], dict]:
    """n titles of synthetic products (gen_trn.py under another seed, cleaned by tc3-prep) not in the index."""
    with tempfile.TemporaryDirectory(prefix="tc3-neg-") as tmp:
        trn = Path(tmp) / "neg.json"
        subprocess.run([sys.executable, str(HERE / "gen_trn.py"), "--records", str(records), "--seed", str(seed),
                        "-o", str(trn)], check=True, stdout=subprocess.DEVNULL)
        tc3_prep.run([trn], Path(tmp) / "prep", seed=seed)
        titles = pa.concat_arrays([read_split(Path(tmp) / "prep", s)["title"].combine_chunks()
                                   for s in ("train", "validation")])
    lowered = pc.utf8_lower(titles)
    in_index = pc.is_in(lowered, value_set=pc.unique(lower_titles(prep_dir)))
    seen, pool = set(), []
    for title, low, hit in zip(titles.to_pylist(), lowered.to_pylist(), in_index.to_pylist()):
        if not hit and low not in seen:
            seen.add(low)
            pool.append(title)
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} negative titles; raise --neg-records")
    info = {"generated_titles": len(titles), "in_index_excluded": int(pc.sum(in_index).as_py() or 0),
            "pool": len(pool)}
    return random.Random(pick_seed).sample(pool, n), info


def is_fragment(raw: tantivy.Index, title: str) -> bool:
    """Whether one indexed title holds every content word of `title` exactly: such a negative reads like a
    fragment of a real title, which coverage cannot tell from a query for that product."""
    terms = tc3_index.content_words(title)  # the index's own terms: words it cannot hold are not among them
    if not terms:
        return False
    q = tantivy.Query.boolean_query([(tantivy.Occur.Must, tantivy.Query.term_query(raw.schema, "title", w))
                                     for w in terms])
    return raw.searcher().search(q, 1, count=False).hits != []


def coverage_histogram(values: list[float]) -> dict[str, int]:
    bins = {"1.0": 0, "[0.8,1)": 0, "[0.6,0.8)": 0, "[0.4,0.6)": 0, "[0.2,0.4)": 0, "[0,0.2)": 0}
    for v in values:
        key = ("1.0" if v >= 1 else "[0.8,1)" if v >= .8 else "[0.6,0.8)" if v >= .6 else "[0.4,0.6)" if v >= .4
               else "[0.2,0.4)" if v >= .2 else "[0,0.2)")
        bins[key] += 1
    return bins


def ms_stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2), "max": round(ms[-1], 2),
            "mean": round(statistics.fmean(ms), 2)}


def measure_positives(ix: ProductIndex, queries: list, rows: list[dict], rng: random.Random,
                      brief: bool = False) -> tuple[dict, list[dict]]:
    """Top-1 accuracy (by uid and by title), lookup acceptance, ambiguity and latency of (record, query, noise)."""
    top1 = same_title = accepted = accepted_right = typos = dropped = ambiguous = unambiguous_right = 0
    latencies, pos_cov, extra_cov, grounding = [], [], [], []
    for r, q, noise in queries:
        t = time.perf_counter()
        hit = ix.lookup(q)
        latencies.append(time.perf_counter() - t)
        hits = ix.search(q, k=CANDIDATES)
        best = hits[0] if hits else None
        top1 += best is not None and best.uid == r["uid"]
        right_title = best is not None and best.title.lower() == r["title"].lower()
        same_title += right_title
        # Ambiguous: another title answers the query at least as well as the record's own (by match_key).
        true_key = match_key(q, r["title"])
        other = next((h for h in hits if h.title.lower() != r["title"].lower()), None)
        if other is not None and match_key(q, other.title) >= true_key:
            ambiguous += 1
        else:
            unambiguous_right += right_title
        pos_cov.append(best.coverage if best else 0.0)
        accepted += hit is not None
        accepted_right += hit is not None and hit.title.lower() == r["title"].lower()
        typos += noise["typo"] is not None
        dropped += noise["dropped"] is not None
        if not brief:  # the same query with a word of another title added: what a stricter threshold costs
            extra = rng.choice(rows)["title"].split()
            extra_hits = ix.search(f"{q} {rng.choice(extra).lower()}", k=1)
            extra_cov.append(extra_hits[0].coverage if extra_hits else 0.0)
        grounding.append({
            "uid": r["uid"], "title": r["title"], "query": q, "noise": noise["kinds"], "reference": r["description"],
            "hit": None if hit is None else {"uid": hit.uid, "title": hit.title, "description": hit.description,
                                             "coverage": round(hit.coverage, 4), "score": round(hit.score, 4)},
        })
    n = len(queries)
    result = {
        "queries": n, "with_word_dropped": dropped, "with_typo": typos,
        "top1_accuracy": round(top1 / n, 4), "top1_same_title_accuracy": round(same_title / n, 4),
        "lookup_accepted": round(accepted / n, 4), "lookup_accepted_same_title": round(accepted_right / n, 4),
        "ambiguous": ambiguous,
        "top1_same_title_accuracy_unambiguous": round(unambiguous_right / (n - ambiguous), 4) if n > ambiguous else None,
        "lookup_latency_ms": ms_stats(latencies),
    }
    if not brief:
        result.update(
            coverage_histogram=coverage_histogram(pos_cov),
            accepted_at={str(t): round(sum(c >= t for c in pos_cov) / n, 4) for t in THRESHOLDS},
            with_extra_word_accepted_at={str(t): round(sum(c >= t for c in extra_cov) / n, 4) for t in THRESHOLDS},
        )
    return result, grounding


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), None)
    return {"nproc": os.cpu_count(), "cpu": model, "mem_mib": mem, "os": platform.platform()}


def parse_args() -> argparse.Namespace:
    """The command line's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prep_dir", type=Path)
    ap.add_argument("--queries", type=int, default=1000,
                    help="positive (and negative) queries; 0 with --queries-from: one per record")
    ap.add_argument("--queries-from", type=Path, metavar="PREP",
                    help="draw the positives from this prep dir's records (their uids must be in the index, e.g. "
                    "the real records cleaned together with the synthetic set), each record with as many noisy "
                    "variants as --queries needs")
    ap.add_argument("--queries-split", choices=["validation", "all"], default="validation",
                    help="split of the positives' records (default validation: held out of training)")
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--neg-seed", type=int, default=11, help="gen_trn.py seed of the negatives")
    ap.add_argument("--neg-records", type=int, default=20000, help="gen_trn.py records to draw negatives from")
    ap.add_argument("--threads", type=int, help="indexing threads (default: tc3-index's)")
    ap.add_argument("--reuse-index", action="store_true", help="use PREP/index as it is instead of building it")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "retrieval.json")
    ap.add_argument("--export-grounding", type=Path, metavar="FILE", help="one JSON line per positive query")
    return ap.parse_args()


def build_stats(args: argparse.Namespace) -> dict:
    """Builds PREP/index (or, with --reuse-index, reads the meta of the one there); returns the build's record."""
    if args.reuse_index:
        meta = json.loads((args.prep_dir / "index" / tc3_index.META_NAME).read_text())
        build = {"reused": True, "seconds": meta["seconds"], "peak_rss_mib": None}
    else:
        print("building the index ...", file=sys.stderr)
        meta = build_index(args.prep_dir, force=True, threads=args.threads)
        # ru_maxrss (KiB on Linux) so far is the build's peak: nothing big was loaded before it.
        build = {"reused": False, "seconds": meta["seconds"],
                 "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    build.update(records=meta["total"], records_per_s=round(meta["total"] / meta["seconds"]),
                 threads=meta["threads"], index_bytes=meta["bytes"], index_mib=round(meta["bytes"] / 2**20, 1))
    return build


def positive_rows(args: argparse.Namespace, source: Path, ix: ProductIndex,
                  rng: random.Random) -> tuple[list[dict], int]:
    """The records of the positive queries (sampled with `rng`, or those of --queries-from that the index holds,
    repeated up to --queries), and how many of --queries-from's records the index lacks."""
    splits = ("train", "validation") if args.queries_split == "all" else ("validation",)
    pool = pa.concat_tables(read_split(source, s) for s in splits)
    if args.queries_from is None:
        rows = pool.take(sorted(rng.sample(range(pool.num_rows), args.queries))).to_pylist()
        missing = 0
    else:
        records = [r for r in pool.to_pylist()]
        rows = [r for r in records if ix.get(r["uid"]) is not None]
        missing = len(records) - len(rows)
        if not rows:
            raise SystemExit(f"none of the records of {source} is in the index of {args.prep_dir}")
        if args.queries:  # as many noisy variants of each record as the count needs, in record order
            rows = [rows[i % len(rows)] for i in range(args.queries)]
    return rows, missing


def noisy_queries(rows: list[dict], rng: random.Random) -> tuple[list, list]:
    """(record, query, noise) of each record with one kind of noise, and of each with all three."""
    # One kind of noise a query (lower-cased, a word dropped or a typo, a third each, seeded), then the same records
    # with all three at once.
    kinds = [NOISE_KINDS[i % 3] for i in range(len(rows))]
    rng.shuffle(kinds)
    single = [(r, *noisy(r["title"], rng, (kind,))) for r, kind in zip(rows, kinds)]
    combined = [(r, *noisy(r["title"], rng)) for r in rows]
    return single, combined


def measure_all_positives(args: argparse.Namespace, source: Path, ix: ProductIndex, rows: list[dict], missing: int,
                          rng: random.Random) -> tuple[dict, list[dict]]:
    """The positives' record (one noise each, by kind of noise, all three at once, records of a title of their
    own) and the grounding lines of the one-noise queries."""
    single, combined = noisy_queries(rows, rng)
    for r, q, _ in single[:WARMUP]:
        ix.lookup(q)
    positives, grounding = measure_positives(ix, single, rows, rng)
    positives.update(source=f"{source} ({args.queries_split})", distinct_records=len({r["uid"] for r in rows}),
                     source_records_not_in_index=missing)
    positives["by_kind"] = {kind: measure_positives(ix, [x for x in single if x[2]["kinds"] == [kind]], rows, rng,
                                                    brief=True)[0] for kind in NOISE_KINDS}
    positives["all_three"] = measure_positives(ix, combined, rows, rng)[0]
    # Records whose very title (any case) other records have too: by title alone no uid among them is "the" one.
    counts = pc.value_counts(lower_titles(args.prep_dir).combine_chunks())
    shared = set(pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1)).to_pylist())
    unique = [(r, q, noise) for r, q, noise in single if r["title"].lower() not in shared]
    positives["records_sharing_their_title"] = len(single) - len(unique)
    positives["top1_accuracy_unique_titles"] = measure_positives(ix, unique, rows, rng, brief=True)[0]["top1_accuracy"]
    return positives, grounding


def lookup_negatives(ix: ProductIndex, negs: list[str]) -> tuple[list[float], list[bool], int, int, list[float]]:
    """Each negative looked up: (top-hit coverages, which are fragments, false matches, false matches among
    fragments, lookup seconds)."""
    raw = tantivy.Index.open(str(ix.path))
    neg_cov, neg_frag, false_match, false_match_frag = [], [], 0, 0
    neg_lat = []
    for title in negs:
        t = time.perf_counter()
        hit = ix.lookup(title)
        neg_lat.append(time.perf_counter() - t)
        best = ix.search(title, k=1)
        cov = best[0].coverage if best else 0.0
        frag = is_fragment(raw, title)
        neg_cov.append(cov)
        neg_frag.append(frag)
        false_match += hit is not None
        false_match_frag += hit is not None and frag
    return neg_cov, neg_frag, false_match, false_match_frag, neg_lat


def measure_negatives(args: argparse.Namespace, ix: ProductIndex, wanted: int) -> dict:
    """The negatives' record: false matches (fragments and the others apart), lookup latency, top-hit coverage."""
    print("making negatives ...", file=sys.stderr)
    negs, neg_info = make_negatives(args.prep_dir, wanted, args.neg_records, args.neg_seed, args.seed)
    neg_cov, neg_frag, false_match, false_match_frag, neg_lat = lookup_negatives(ix, negs)
    fragments = sum(neg_frag)
    others = len(negs) - fragments
    return {
        "queries": len(negs), "source": {"generator": "benches/gen_trn.py", "seed": args.neg_seed,
                                         "records": args.neg_records, **neg_info},
        "false_match_rate": round(false_match / len(negs), 4),
        "fragments_of_an_indexed_title": fragments,
        "false_match_rate_fragments": round(false_match_frag / fragments, 4) if fragments else None,
        "false_match_rate_non_fragments": round((false_match - false_match_frag) / others, 4) if others else None,
        "lookup_latency_ms": ms_stats(neg_lat),
        "coverage_histogram": coverage_histogram(neg_cov),
        "coverage_histogram_non_fragments": coverage_histogram([c for c, f in zip(neg_cov, neg_frag) if not f]),
        "accepted_at": {str(t): round(sum(c >= t for c in neg_cov) / len(negs), 4) for t in THRESHOLDS},
        "accepted_at_non_fragments": {str(t): round(sum(c >= t for c, f in zip(neg_cov, neg_frag) if not f)
                                                    / max(others, 1), 4) for t in THRESHOLDS},
    }


def target_checks(build: dict, positives: dict) -> dict:
    """Each target: what is wanted, the measured value and whether it is met."""
    p95 = positives["lookup_latency_ms"]["p95"]
    return {
        "build_minutes": {"target": f"< {TARGETS['build_minutes']}", "value": round(build["seconds"] / 60, 2),
                          "met": build["seconds"] < TARGETS["build_minutes"] * 60},
        "top1_accuracy": {"target": f">= {TARGETS['top1_accuracy']}", "value": positives["top1_accuracy"],
                          "met": positives["top1_accuracy"] >= TARGETS["top1_accuracy"]},
        "p95_ms": {"target": f"< {TARGETS['p95_ms']}", "value": p95, "met": p95 < TARGETS["p95_ms"]},
    }


def make_report(args: argparse.Namespace, command: str, build: dict, positives: dict, negatives: dict) -> dict:
    """The result record: command, date, machine, versions, settings, the measures and the targets."""
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {"python": platform.python_version(), "tantivy": tantivy.__version__, "pyarrow": pa.__version__},
        "prep_dir": str(args.prep_dir), "queries_from": args.queries_from and str(args.queries_from),
        "seed": args.seed, "match_threshold": MATCH_THRESHOLD,
        "build": build, "positives": positives, "negatives": negatives,
        "targets": target_checks(build, positives),
    }


def write_outputs(args: argparse.Namespace, report: dict, grounding: list[dict]) -> None:
    """Writes --out (JSON), its .md table and --export-grounding; prints the build and the targets."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    if args.export_grounding:
        args.export_grounding.parent.mkdir(parents=True, exist_ok=True)
        args.export_grounding.write_text("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in grounding))
    print(json.dumps({k: report[k] for k in ("build", "targets")}, indent=2))


def main() -> int:
    """Runs the benchmark; writes --out (and its .md) and returns 0."""
    args = parse_args()
    command = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    build = build_stats(args)
    ix = ProductIndex.open(args.prep_dir)
    rng = random.Random(args.seed)
    source = args.queries_from or args.prep_dir
    rows, missing = positive_rows(args, source, ix, rng)
    positives, grounding = measure_all_positives(args, source, ix, rows, missing, rng)
    negatives = measure_negatives(args, ix, args.queries or len(rows))
    report = make_report(args, command, build, positives, negatives)
    write_outputs(args, report, grounding)
    return 0


def markdown_head(r: dict) -> list[str]:
    """The page's title, command, machine line and targets table."""
    m = r["machine"]
    lines = [
        "# tc3-index retrieval benchmark", "",
        f"`{r['command']}`", "",
        f"{r['date']} · {m['nproc']} cores ({m['cpu']}), {m['mem_mib']:,} MiB · {r['versions']['tantivy']}, "
        f"pyarrow {r['versions']['pyarrow']}, Python {r['versions']['python']} · lookup threshold "
        f"{r['match_threshold']}", "",
        "| target | wanted | measured | met |", "|---|---|---|---|",
    ]
    names = {"build_minutes": "index build (minutes)", "top1_accuracy": "top-1 accuracy, noisy queries",
             "p95_ms": "p95 lookup latency (ms)"}
    for key, t in r["targets"].items():
        lines.append(f"| {names[key]} | {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |")
    return lines


def markdown_accuracy_note(r: dict) -> list[str]:
    """Why the top-1 accuracy misses its target, when it does ([] otherwise)."""
    p = r["positives"]
    if r["targets"]["top1_accuracy"]["met"]:
        return []
    duplicates = (
        "; and exact duplicate titles under other uids cost the gap between uid and same-title accuracy "
        f"({p['top1_accuracy']:.1%} vs {p['top1_same_title_accuracy']:.1%})"
        if p["top1_accuracy"] < p["top1_same_title_accuracy"] else ""
    )
    return [
        "", f"**Top-1 accuracy misses its target** ({p['top1_accuracy']:.1%} < {TARGETS['top1_accuracy']:.0%}), "
        "and the queries, not the ranking, are why: for "
        f"{p['ambiguous']:,} of {p['queries']:,} another indexed title answers the noisy query at least as well as "
        "the record's own (by `match_key`: coverage, then how much of the title the query holds, then exact "
        f"words), mostly because the dropped word was the only one that told two titles apart{duplicates}. On "
        f"the other, unambiguous queries the right title comes first "
        f"{fmt_rate(p['top1_same_title_accuracy_unambiguous'])} of the "
        "time." + ("" if r.get("queries_from") else " The synthetic titles make this common: each is a few "
                   "1-4-word windows of 500 real titles, so 1.25 M of them share words far more than real "
                   "product titles do."),
    ]


def markdown_build(r: dict) -> list[str]:
    """The build table."""
    b = r["build"]
    rss = "not measured (--reuse-index)" if b["peak_rss_mib"] is None else f"{b['peak_rss_mib']:,} MiB"
    return [
        "", "## Build", "",
        "| records | seconds | records/s | threads | peak RSS | index on disk |", "|---|---|---|---|---|---|",
        f"| {b['records']:,} | {b['seconds']} | {b['records_per_s']:,} | {b['threads']} | {rss} | "
        f"{b['index_mib']:,} MiB |",
    ]


def markdown_positives(r: dict) -> list[str]:
    """The positives' section: how the queries were made, their table and what its columns mean."""
    p = r["positives"]
    lines = [
        "", f"## Positives: {p['queries']:,} noisy titles of {p['distinct_records']:,} records of "
        f"`{p['source']}`", "",
        "Each query has one kind of noise, a third each (seeded): lower-cased, one word dropped (titles of 3+ words) "
        "or one typo (a substitution, transposition, deletion or insertion in a word of 4+ letters). The last row "
        "puts all three on each of the same records at once.", "",
        "| queries | top-1 (uid) | top-1 (same title) | ambiguous | top-1 (same title) when unambiguous | "
        "accepted by lookup | latency p50 / p95 / max |", "|---|---|---|---|---|---|---|",
    ]
    rows = [(f"all {p['queries']:,}, one noise each", p)]
    rows += [(f"{kind} only ({q['queries']:,})", q) for kind, q in p["by_kind"].items()]
    rows += [(f"all three at once ({p['all_three']['queries']:,})", p["all_three"])]
    for label, q in rows:
        ql = q["lookup_latency_ms"]
        lines.append(f"| {label} | {q['top1_accuracy']:.1%} | {q['top1_same_title_accuracy']:.1%} | "
                     f"{q['ambiguous']:,} | {fmt_rate(q['top1_same_title_accuracy_unambiguous'])} | "
                     f"{q['lookup_accepted']:.1%} | {ql['p50']} / {ql['p95']} / {ql['max']} ms |")
    lines += [
        "", f"{p['records_sharing_their_title']:,} of the {p['queries']:,} records share their exact title with "
        "another record; on the others top-1 by uid is "
        f"{p['top1_accuracy_unique_titles']:.1%} (one noise each).",
        "", "Top-1 (uid): the top hit is the record itself. Same title: the top hit has the record's title (another "
        "uid with the very same title cannot be told apart by a title). Ambiguous: another indexed title answers "
        "the query at least as well as the record's own, by `match_key` (coverage, then how much of the title the "
        "query holds, then exact words): usually the dropped word was the only one that told two titles apart.",
    ]
    return lines


def markdown_negatives(r: dict) -> list[str]:
    """The negatives' section: their source and false-match table."""
    n = r["negatives"]
    nlat = n["lookup_latency_ms"]
    return [
        "", f"## Negatives: {n['queries']:,} titles not in the index", "",
        f"From `{n['source']['generator']}` (seed {n['source']['seed']}, {n['source']['records']:,} records, cleaned "
        f"by tc3-prep; {n['source']['in_index_excluded']:,} titles found in the index left out). "
        f"{n['fragments_of_an_indexed_title']:,} of them have every content word in one indexed title (a "
        "\"fragment\": by its words it is a query for that product).", "",
        "| measure | value |", "|---|---|",
        f"| false matches (lookup accepts) | {n['false_match_rate']:.1%} |",
        f"| false matches among fragments | {fmt_rate(n['false_match_rate_fragments'])} |",
        f"| false matches among non-fragments | {fmt_rate(n['false_match_rate_non_fragments'])} |",
        f"| lookup latency p50 / p95 / max | {nlat['p50']} / {nlat['p95']} / {nlat['max']} ms |",
    ]


def markdown_coverage(r: dict) -> list[str]:
    """The top hit's coverage histogram and acceptance by threshold, of positives and negatives."""
    p, n = r["positives"], r["negatives"]
    lines = [
        "", "## Coverage of the top hit (what the threshold sees)", "",
        "| coverage | positives | negatives | negatives, non-fragments |", "|---|---|---|---|",
    ]
    for key in p["coverage_histogram"]:
        lines.append(f"| {key} | {p['coverage_histogram'][key]:,} | {n['coverage_histogram'][key]:,} | "
                     f"{n['coverage_histogram_non_fragments'][key]:,} |")
    lines += ["", "| threshold | positives accepted | positives + a stray word accepted | negatives accepted | "
              "non-fragment negatives accepted |", "|---|---|---|---|---|"]
    for t in p["accepted_at"]:
        lines.append(f"| {t} | {p['accepted_at'][t]:.1%} | {p['with_extra_word_accepted_at'][t]:.1%} | "
                     f"{n['accepted_at'][t]:.1%} | {n['accepted_at_non_fragments'][t]:.1%} |")
    return lines


def markdown(r: dict) -> str:
    """The report as a Markdown page."""
    lines = [*markdown_head(r), *markdown_accuracy_note(r), *markdown_build(r), *markdown_positives(r),
             *markdown_negatives(r), *markdown_coverage(r)]
    return "\n".join(lines) + "\n"


def fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


if __name__ == "__main__":
    sys.exit(main())
