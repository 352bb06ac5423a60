"""Is a model's perplexity on held-out references lower for some content kinds than for others? tc3-eval's
`unseen` records (the same seeded draw), grouped by content kind, each group's references scored by
`tc3.eval.metrics.reference_loss` under the model and under the baseline, as tc3-eval --modes asks them.

    python benches/perplexity_by_kind.py RUN_DIR BASE_DIR PREP_DIR -o OUT.json [--n 50] [--seed 3407] [--device cpu]

RUN_DIR: a tc3-train run; BASE_DIR: its untouched base (asked in English); PREP_DIR: the tc3-prep output it trained
on. Writes JSON: per kind (and `all`) the number of records and reference tokens, both perplexities, their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))


def perplexities(reference, instruction: str, groups: dict, device: str) -> dict:
    """{kind: {perplexity, reference_tokens}} of each kind's (ask, reference) pairs under one loaded model, and `all`
    pooled from them (reference_loss is a mean over tokens: each reference is scored once)."""
    from tc3.eval.metrics import reference_loss
    from tc3.models import load_model

    loaded = load_model(reference, device=device)
    scores = {kind: reference_loss(loaded, pairs, instruction) for kind, pairs in groups.items()}
    tokens = sum(score["reference_tokens"] for score in scores.values())
    pooled = sum(score["eval_loss"] * score["reference_tokens"] for score in scores.values()) / tokens
    return {**scores, "all": {"perplexity": math.exp(pooled), "reference_tokens": tokens}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("base")
    parser.add_argument("data")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from tc3.eval.modes import asks_of, mode_records
    from tc3.eval.run import trained_instruction
    from tc3.model_ref import resolve_model

    tuned = resolve_model(args.run)
    records = mode_records(["unseen"], args.data, tuned.config, args.n, args.seed)["unseen"]
    groups = defaultdict(list)
    for ask, record in zip(asks_of("unseen", records), records):
        groups[record.get("kind") or "unknown"].append((ask, record["description"]))
    model = perplexities(tuned, trained_instruction(tuned), groups, args.device)
    base = perplexities(resolve_model(args.base), "en", groups, args.device)
    rows = {kind: {"n": len(pairs), "reference_tokens": model[kind]["reference_tokens"],
                   "model_perplexity": round(model[kind]["perplexity"], 2),
                   "base_perplexity": round(base[kind]["perplexity"], 2),
                   "ratio": round(model[kind]["perplexity"] / base[kind]["perplexity"], 3)}
            for kind, pairs in {**groups, "all": records}.items()}  # fmt: skip
    result = {"command": "python benches/perplexity_by_kind.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor()}",
              "device": args.device, "n": args.n, "seed": args.seed, "by_kind": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
