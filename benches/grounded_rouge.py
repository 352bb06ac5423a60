#!/usr/bin/env python
"""Grounded against ungrounded answers, ROUGE-L against the real description, on the noisy queries of the retrieval
benchmark (its --export-grounding file: query, reference, the record the lookup returned or null).

Both answers get the same noisy query; the grounded one also gets the retrieved record as context (or, when the
lookup found nothing good enough, is empty: the no-match message says nothing about the product). Generation is
greedy.

Grounded mode is retrieval, then rewriting the record as an answer: where the lookup returns the held-out record
itself, its description is the very reference the answer is scored against. So the report puts beside the model
the copy baseline (the retrieved description returned verbatim: ROUGE-L 1.0 wherever the lookup is right) and a
faithfulness measure, the share of the answer's content words and numbers found in neither the record nor the
question (`tc3.evaluate.unsupported_share`; 0 = nothing added, for better or worse).

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

from tc3.evaluate import mean, rouge, unsupported_share  # noqa: E402
from tc3.generate import Ask, GenerationSettings, generate_batch, load_model, quiet_libraries  # noqa: E402
from tc3.grounding import answer_found  # noqa: E402
from tc3.outputs import split_lines  # noqa: E402
from tc3.prompts import render_context  # noqa: E402


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
    texts = [g.description for g in grounded]  # the answer alone; a no-match answer is empty
    copies = [item["hit"]["description"] if item["hit"] else "" for item in items]
    right = [i for i, item in enumerate(items) if item["hit"] and item["hit"]["uid"] == item["uid"]]
    wrong = [i for i, item in enumerate(items) if item["hit"] and item["hit"]["uid"] != item["uid"]]
    unmatched = [i for i, item in enumerate(items) if not item["hit"]]
    unsupported = [unsupported_share(texts[i], [render_context(item["hit"]), item["query"]])
                   for i, item in enumerate(items) if item["hit"]]
    unsupported = [u for u in unsupported if u is not None]

    def subset(indices, answers):
        return score([items[i] for i in indices], [answers[i] for i in indices]) if indices else None

    return {
        "file": path.name,
        "queries": len(items),
        "rougeL_ungrounded": score(items, [g.description for g in plain]),
        "rougeL_grounded": score(items, texts),
        "rougeL_copy": score(items, copies),
        "matched_right_record": len(right),
        "matched_other_record": len(wrong),
        "no_match": len(unmatched),
        "rougeL_grounded_right_record": subset(right, texts),
        "rougeL_copy_right_record": subset(right, copies),
        "rougeL_ungrounded_right_record": subset(right, [g.description for g in plain]),
        "unsupported_share_grounded": mean(unsupported) if unsupported else None,
        "stopped_share_grounded": mean([g.stopped for g, item in zip(grounded, items) if item["hit"]] or [0]),
        "seconds": round(time.perf_counter() - began, 1),
        "examples": [{"query": items[i]["query"], "reference": items[i]["reference"][:300],
                      "ungrounded": plain[i].description[:300], "grounded": grounded[i].description[:400],
                      "source_uid": grounded[i].extra["source_uid"]}
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
    p.add_argument("--instruction", default="en", help="how both answers are asked (default: en)")
    p.add_argument("--penalize-prompt", action="store_true",
                   help="the repetition penalty also counts the prompt's tokens (the record's words too)")
    args = p.parse_args(argv)
    quiet_libraries()
    log = lambda msg: print(f"grounded_rouge: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, instruction=args.instruction,
                                  penalize_prompt=args.penalize_prompt)
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
        unsupported = r["unsupported_share_grounded"]
        print(f"{r['file']}: {r['queries']} queries, ROUGE-L ungrounded {r['rougeL_ungrounded']:.4f}, grounded "
              f"{r['rougeL_grounded']:.4f}, copying the retrieved description {r['rougeL_copy']:.4f} (right record "
              f"{r['matched_right_record']}, other {r['matched_other_record']}, no match {r['no_match']}); words "
              f"of grounded answers in neither record nor question: "
              + ("n/a" if unsupported is None else f"{100 * unsupported:.1f}%"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
