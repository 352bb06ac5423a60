"""Do batched greedy answers equal one-title-at-a-time ones? The share of titles whose answer is identical.

In fp32 they are (tests/test_generate.py); in bf16 padding changes the shapes of the matrix products and their
rounding, and a near-tie between two tokens can then go the other way. This measures how often, on real weights:

    python benches/gpu/batch_agreement.py MODEL_DIR [--n 24] [--batch-size 8] [--max-new-tokens 64]
        [--device cuda] [--dtype bfloat16] [-o benches/results/batch_agreement.json]

MODEL_DIR: a local model dir or adapter (tc3.models.load_model), e.g. SmolLM2-135M-Instruct. The titles are the
first N of the records bundled with tc3 (`tc3-prep --example`); the settings are tc3-generate's defaults (greedy,
repetition penalty 1.15 over generated tokens). Writes JSON: model, device, dtype, counts, `share_identical`, and
for each title that differs the two answers and the character where they part.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))


def bundled_titles(n: int) -> list[str]:
    """The first n distinct titles of the records bundled with tc3."""
    from tc3.cli.prep import EXAMPLE_INPUT

    with EXAMPLE_INPUT.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        titles = [json.loads(line)["title"].strip() for line in lines]
    return list(dict.fromkeys(t for t in titles if t))[:n]


def parted_at(a: str, b: str) -> int:
    """Index of the first character where two texts differ."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def measure(model: str, n: int, batch_size: int, max_new_tokens: int, device: str | None, dtype: str | None) -> dict:
    import torch
    from tc3.generate import GenerationSettings, generate_batch, generate_one, load_model

    loaded = load_model(model, device=device, dtype=dtype)
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    titles = bundled_titles(n)
    batched = generate_batch(loaded, titles, settings, batch_size=batch_size)
    single = [generate_one(loaded, title, settings) for title in titles]
    differ = [{"title": t, "batched": b.description, "single": s.description,
               "parted_at_char": parted_at(b.description, s.description)}
              for t, b, s in zip(titles, batched, single) if b.description != s.description]
    on_cuda = loaded.device.startswith("cuda")
    return {
        "model": model, "device": torch.cuda.get_device_name(loaded.device) if on_cuda else "cpu",
        "dtype": str(loaded.model.dtype).removeprefix("torch."), "titles": len(titles), "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "identical": len(titles) - len(differ),
        "share_identical": round((len(titles) - len(differ)) / len(titles), 4), "differ": differ,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a local model dir or adapter dir")
    p.add_argument("--n", type=int, default=24, help="titles (default 24)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default=None, help="default: cuda when there is one")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16, torch's names too (default: tc3.runtime.inference_precision)")
    p.add_argument("-o", "--output", help="JSON file (default: stdout)")
    args = p.parse_args(argv)
    result = json.dumps(measure(args.model, args.n, args.batch_size, args.max_new_tokens, args.device, args.dtype),
                        ensure_ascii=False, indent=2)
    if args.output:
        Path(args.output).write_text(result + "\n", encoding="utf-8")
    else:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
