#!/usr/bin/env python
"""Grounded against ungrounded answers, ROUGE-L against the real description, on the noisy queries of the retrieval
benchmark (its --export-grounding file: query, reference, the record the lookup returned or null).

Both answers get the same noisy query; the grounded one also gets the retrieved record as context (or, when the
lookup found nothing good enough, is the no-match answer, scored like any other text). Generation is greedy.

    python benches/grounded_rouge.py --model runs/smollm2-q --grounding benches/data/grounding-1000.jsonl \
        --out benches/results/grounded-rouge.json --batch-size 100
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from tc3.evaluate import mean, rouge  # noqa: E402
from tc3.generate import Ask, GenerationSettings, generate_batch, load_model, quiet_libraries  # noqa: E402
from tc3.grounding import answer_found, citation  # noqa: E402
from tc3.outputs import split_lines  # noqa: E402


def read_items(path: Path, limit: int | None) -> list[dict]:
    items = [json.loads(line) for line in split_lines(path.read_text(encoding="utf-8")) if line.strip()]
    return items[:limit] if limit else items


def score(items: list[dict], answers: list[str]) -> float:
    return rouge(answers, [item["reference"] for item in items])["rougeL"]


def run_file(loaded, path: Path, settings, batch_size: int, limit: int | None, log) -> dict:
    items = read_items(path, limit)
    began = time.perf_counter()
    plain = generate_batch(loaded, [Ask(item["query"]) for item in items], settings, batch_size,
                           progress=lambda done, total: log(f"{path.name} ungrounded {done}/{total}"))
    found = [(item["query"], SimpleNamespace(**item["hit"]) if item["hit"] else None) for item in items]
    grounded = answer_found(loaded, found, settings, batch_size,
                            progress=lambda done, total: log(f"{path.name} grounded {done}/{total}"))
    # The citation is for the reader; ROUGE is on the answer text alone.
    texts = [g.description.removesuffix(f"\n\n{citation(hit)}") if hit else g.description
             for g, (_, hit) in zip(grounded, found)]
    right = [i for i, item in enumerate(items) if item["hit"] and item["hit"]["uid"] == item["uid"]]
    wrong = [i for i, item in enumerate(items) if item["hit"] and item["hit"]["uid"] != item["uid"]]
    unmatched = [i for i, item in enumerate(items) if not item["hit"]]

    def subset(indices, answers):
        return score([items[i] for i in indices], [answers[i] for i in indices]) if indices else None

    return {
        "file": path.name,
        "queries": len(items),
        "rougeL_ungrounded": score(items, [g.description for g in plain]),
        "rougeL_grounded": score(items, texts),
        "matched_right_record": len(right),
        "matched_other_record": len(wrong),
        "no_match": len(unmatched),
        "rougeL_grounded_right_record": subset(right, texts),
        "rougeL_ungrounded_right_record": subset(right, [g.description for g in plain]),
        "stopped_share_grounded": mean([g.stopped for g, item in zip(grounded, items) if item["hit"]] or [0]),
        "seconds": round(time.perf_counter() - began, 1),
        "examples": [{"query": items[i]["query"], "reference": items[i]["reference"][:300],
                      "ungrounded": plain[i].description[:300], "grounded": grounded[i].description[:400]}
                     for i in range(min(3, len(items)))],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--base")
    p.add_argument("--grounding", type=Path, action="append", required=True, help="repeatable")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, help="first N queries of each file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    quiet_libraries()
    log = lambda msg: print(f"grounded_rouge: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    loaded = load_model(args.model, base=args.base, device=args.device)
    device = loaded.device
    if device.startswith("cuda"):
        import torch

        device = torch.cuda.get_device_name()
    results = [run_file(loaded, path, settings, args.batch_size, args.limit, log) for path in args.grounding]
    report = {
        "command": "python benches/grounded_rouge.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({device})",
        "model": args.model,
        "settings": settings.as_dict(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for r in results:
        print(f"{r['file']}: {r['queries']} queries, ROUGE-L ungrounded {r['rougeL_ungrounded']:.4f}, grounded "
              f"{r['rougeL_grounded']:.4f} (right record {r['matched_right_record']}, other "
              f"{r['matched_other_record']}, no match {r['no_match']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
