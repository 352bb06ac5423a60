"""benches/results/multigpu.json from the runs of `benches/gpu/jobs.py multigpu`: the same QLoRA run (same config,
data, global batch and optimizer steps) on 1 and on 2 GPUs, and a 2-GPU run interrupted and resumed.

    python benches/gpu/multigpu_summary.py OUT_DIR RUN_1GPU RUN_2GPU RUN_RESUMED COMMANDS_FILE

Throughput is steady state: the median of the logged tokens/s (all processes' real tokens over the time inside
training steps) after the first two log intervals, which hold torch.compile's and the allocator's warm-up.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def steady(run: Path) -> dict:
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    train = [e for e in log if "tokens_per_s" in e]
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "tokens_per_s": statistics.median(e["tokens_per_s"] for e in train[2:]),
        "s_per_step": statistics.median(e["s_per_step"] for e in train[2:]),
        "peak_gb": max(e.get("gpu_max_memory_gb", 0) for e in log),
        "eval_loss": metrics["eval_loss"],
        "steps": metrics["global_step"],
        "global_batch": metrics["global_batch_size"],
        "world_size": metrics["world_size"],
        "attention": metrics.get("attention"),
        "losses": [e["loss"] for e in log if "loss" in e],
    }


def main(out: str, one: str, two: str, resumed: str, commands: str) -> int:
    a, b, r = steady(Path(one)), steady(Path(two)), json.loads((Path(resumed) / "metrics.json").read_text())
    device = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                            text=True).stdout.split("\n")[0]  # fmt: skip
    result = {
        "tokens_per_s_1gpu": a["tokens_per_s"],
        "tokens_per_s_2gpu": b["tokens_per_s"],
        "scaling_efficiency": round(b["tokens_per_s"] / (2 * a["tokens_per_s"]), 3),
        "peak_gb_per_gpu": {"1gpu": a["peak_gb"], "2gpu": b["peak_gb"]},
        "eval_loss_1gpu": a["eval_loss"],
        "eval_loss_2gpu": b["eval_loss"],
        "eval_loss_2gpu_interrupted_and_resumed": r["eval_loss"],
        "steps": a["steps"],
        "global_batch": a["global_batch"],
        "s_per_step": {"1gpu": a["s_per_step"], "2gpu": b["s_per_step"]},
        "train_losses": {"1gpu": a["losses"], "2gpu": b["losses"]},
        "attention": a["attention"],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "device": f"2 x {device}",
        "commands": Path(commands).read_text().splitlines(),
    }
    assert a["steps"] == b["steps"] and a["global_batch"] == b["global_batch"] and b["world_size"] == 2
    (Path(out) / "multigpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("train_losses", "commands")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
