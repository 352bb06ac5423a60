"""Combine one GPU job's pieces into gpu_train.json and print the table.

    python benches/gpu/summarize.py OUT_DIR      # reads matmul.json, model.json, corpus.json, setups.jsonl

Derived figures: tokens/s (real tokens, padding excluded) from the timed steps; the epoch time is the full prep train
split (its example count from stats) x the mean tokens per example (seeded sample of 5,000, tc3's own measure) over
tokens/s; MFU = 4 x parameters x tokens/s / the measured bf16 matrix rate (LoRA: forward, and backward to the inputs
only; the recomputation of gradient checkpointing and attention's own FLOPs are not counted), and `mfu_datasheet`
the same over the card's datasheet dense bf16 peak (tc3.train.speed.datasheet_tflops; null for a card not listed).
The auto rows (issue 28: the shipped config's auto settings on the whole card, and capped as a 24 and a 16 GB card)
go into the summary's auto_* keys.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tc3.train.speed import datasheet_tflops, mfu


def gpu_rate(out: Path, row: dict, default: float) -> float:
    """The bf16 matmul rate of the GPU a row ran on (matmul_gpu<N>.json), else GPU 0's."""
    path = out / f"matmul_gpu{row.get('gpu', '0')}.json"
    return json.loads(path.read_text())["tflops"] * 1e12 if path.is_file() else default


def choose(rows: list[dict], matmul: dict, out: Path) -> tuple[dict, dict]:
    """The default config: the fastest unsloth row with gradient checkpointing and a peak under 24 GB (reserved);
    the 80 GB+ config: the fastest row without checkpoint recompute under 75 GB. Targets of the attention issue."""
    unsloth = [r for r in rows if r["setup"] == "tc3" and not r.get("label", "").startswith("auto-")]
    fits = [r for r in unsloth if r.get("gradient_checkpointing", True) and r["peak_reserved_gb"] < 24]
    big = [r for r in unsloth if not r.get("gradient_checkpointing", True) and r["peak_reserved_gb"] < 75]
    default = max(fits, key=lambda r: r["tokens_per_s"], default=None)
    big_row = max(big, key=lambda r: r["tokens_per_s"], default=None)
    course = next((r for r in rows if r["setup"] == "course"), None)
    hf = max((r for r in rows if r["setup"] == "hf"), key=lambda r: r["tokens_per_s"], default=None)
    hf_tc3 = max((r for r in rows if r["setup"] == "hf-tc3"), key=lambda r: r["tokens_per_s"], default=None)
    if default is None:
        return {}, {}
    summary = {
        "default_label": default.get("label"), "default_overrides": default["overrides"],
        "tc3_tokens_per_s": default["tokens_per_s"], "tc3_mfu": default["mfu"],
        "tc3_peak_gb": default["peak_reserved_gb"],
        "course_tokens_per_s": course["tokens_per_s"] if course else None,
        "hf_tokens_per_s": hf["tokens_per_s"] if hf else None,
        "hf_tc3_tokens_per_s": hf_tc3["tokens_per_s"] if hf_tc3 else None,
        "big_config_label": big_row.get("label") if big_row else None,
        "big_config_overrides": big_row["overrides"] if big_row else None,
        "big_config_tokens_per_s": big_row["tokens_per_s"] if big_row else None,
        "big_config_mfu": big_row["mfu"] if big_row else None,
        "big_config_peak_gb": big_row["peak_reserved_gb"] if big_row else None,
        "date": time.strftime("%Y-%m-%d", time.gmtime((out / "matmul.json").stat().st_mtime)),
        "device": matmul["device"],
    }  # fmt: skip
    targets = {
        "tc3_mfu_at_least_50pct": default["mfu"] >= 0.5,
        "big_config_mfu_at_least_60pct": bool(big_row) and big_row["mfu"] >= 0.6,
        "peak_at_most_24gb": default["peak_reserved_gb"] <= 24,
    }
    auto_targets, auto_summary = summarize_auto(rows, matmul["device"])
    targets.update(auto_targets)
    summary.update(auto_summary)
    if course:
        targets["speedup_vs_course"] = round(default["tokens_per_s"] / course["tokens_per_s"], 2)
        targets["at_least_8x_course"] = targets["speedup_vs_course"] >= 8
    if hf:
        targets["speedup_vs_hf"] = round(default["tokens_per_s"] / hf["tokens_per_s"], 2)
        targets["at_least_3x_hf"] = targets["speedup_vs_hf"] >= 3
    return targets, summary


def summarize_auto(rows: list[dict], device: str) -> tuple[dict, dict]:
    """(targets, summary keys) of the auto rows: auto-80gb (the whole card), auto-24gb and auto-16gb (capped)."""
    by_label = {r.get("label"): r for r in rows}
    full, capped_24 = by_label.get("auto-80gb"), by_label.get("auto-24gb")
    summary = {
        "auto_80gb_mfu": full and full["mfu"], "auto_80gb_mfu_datasheet": full and full["mfu_datasheet"],
        "auto_80gb_tokens_per_s": full and full["tokens_per_s"], "auto_80gb_peak_gb": full and full["peak_allocated_gb"],
        "auto_80gb_plan": full and full.get("speed_choice"), "auto_80gb_epoch_hours": full and full["epoch_hours_1_39m"],
        "auto_24gb_mfu": capped_24 and capped_24["mfu"], "auto_24gb_peak_gb": capped_24 and capped_24["peak_reserved_gb"],
        "auto_24gb_plan": capped_24 and capped_24.get("speed_choice"),
        "auto_16gb_trains": "tokens_per_s" in by_label.get("auto-16gb", {}),
        "device": device,
    }  # fmt: skip
    targets = {
        "auto_80gb_mfu_at_least_70pct": bool(full) and full["mfu"] >= 0.7,
        "auto_24gb_mfu_at_least_50pct_within_24gb": bool(capped_24) and capped_24["mfu"] >= 0.5
        and capped_24["peak_reserved_gb"] <= 24,
        "auto_16gb_trains": summary["auto_16gb_trains"],
    }
    return targets, summary


def main(out: str) -> int:
    out = Path(out)
    matmul = json.loads((out / "matmul.json").read_text())
    model = json.loads((out / "model.json").read_text())
    corpus = json.loads((out / "corpus.json").read_text())
    rows = [
        json.loads(line)
        for line in (out / "setups.jsonl").read_text().splitlines()
        if line.strip()
    ]
    ok = [r for r in rows if not r.get("oom") and "tokens_per_s" in r]
    params = model["params"]
    epoch_examples = corpus["train_examples"]
    rate = matmul["tflops"] * 1e12
    for r in ok:
        mean = r["token_lengths"]["mean"]
        r["epoch_hours"] = round(epoch_examples * mean / r["tokens_per_s"] / 3600, 1)
        r["epoch_hours_1_39m"] = round(1.39e6 * mean / r["tokens_per_s"] / 3600, 1)
        measured = gpu_rate(out, r, rate) / 1e12
        r["mfu"] = mfu(params, r["tokens_per_s"], measured)
        r["mfu_datasheet"] = mfu(params, r["tokens_per_s"], datasheet_tflops(matmul["device"]))
        r["mfu_non_embedding_params"] = mfu(params - model["embedding_params"], r["tokens_per_s"], measured)
    targets, summary = choose(ok, matmul, out)
    result = {
        "device": matmul["device"],
        "bf16_matmul": matmul,
        "model": {
            "shape": "Llama-3-8B (32 x 4096, MLP 14336, 32/8 heads, vocab 128256), random weights, bf16 saved, "
            "loaded in 4-bit NF4",
            **model,
        },
        "corpus": corpus,
        "setups": rows,
        "targets": targets,
        "summary": summary,
    }
    (out / "gpu_train.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{matmul['device']}: bf16 matmul {matmul['tflops']} TFLOP/s; {params / 1e9:.2f} B params; "
          f"epoch h: 1.39 M examples (this prep's train split: {epoch_examples:,})")  # fmt: skip
    print(f"{'label':16} {'batch':>7} {'tok/s':>8} {'s/step':>7} {'tok/step':>9} {'pad':>6} {'peakGB':>7} "
          f"{'resvGB':>7} {'epoch h':>8} {'MFU':>6} {'MFU(ds)':>7}")  # fmt: skip
    for r in rows:
        b = f"{r['batch']}x{r['accumulation']}"
        if r.get("oom"):
            print(f"{r.get('label', r['setup']):16} {b:>7}  OOM ({r.get('error', '')[:60]})")
            continue
        print(f"{r.get('label', r['setup']):16} {b:>7} {r['tokens_per_s']:8.0f} {r['s_per_step_median']:7.2f} "
              f"{r['tokens_per_step']:9.0f} {r['padding_fraction']:6.1%} {r['peak_allocated_gb']:7.1f} "
              f"{r['peak_reserved_gb']:7.1f} {r['epoch_hours_1_39m']:8.1f} {r['mfu']:6.1%} "
              f"{r['mfu_datasheet'] or 0:7.1%}")  # fmt: skip
    print(json.dumps(targets))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
