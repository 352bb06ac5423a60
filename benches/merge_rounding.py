"""Where does a merged model depart from its adapter? The same comparison as tc3-export's check
(`tc3.export.departure`: 8 titles, 32 new tokens, logits over each prompt and the adapter's answer), four ways:

    A  merged in bf16   against the adapter over its base in bf16   (what tc3-export measures in bf16)
    B  the adapter in bf16 against the same adapter in fp32          (bf16's own rounding, no merge at all)
    C  merged in fp32   against the adapter in fp32                  (the merge itself)
    D  merged in bf16   against the adapter in fp32

    python benches/merge_rounding.py ADAPTER_DIR -o benches/results/merge-rounding-cpu.json [--device cpu]

ADAPTER_DIR: a tc3-train run over a full-precision base. Writes JSON: the four departures (no answers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

PAIRS = {
    "A_merged_bf16_vs_adapter_bf16": (("adapter", "bf16"), ("merged", "bf16")),
    "B_adapter_bf16_vs_adapter_fp32": (("adapter", "fp32"), ("adapter", "bf16")),
    "C_merged_fp32_vs_adapter_fp32": (("adapter", "fp32"), ("merged", "fp32")),
    "D_merged_bf16_vs_adapter_fp32": (("adapter", "fp32"), ("merged", "bf16")),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter_dir")
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from tc3.export import departure
    from tc3.models import load_model

    loaded = {(kind, dtype): load_model(args.adapter_dir, device=args.device, dtype=dtype, merge=kind == "merged")
              for kind in ("adapter", "merged") for dtype in ("fp32", "bf16")}
    results = {}
    for name, (reference, other) in PAIRS.items():
        found = departure(loaded[reference], loaded[other])
        results[name] = {k: v for k, v in found.items() if k not in ("answers", "titles")}
        print(name, json.dumps(results[name]), flush=True)
    record = {"command": f"python benches/merge_rounding.py {args.adapter_dir} -o {args.out} --device {args.device}",
              "machine": f"{platform.machine()}, {args.device}", "date": f"{datetime.date.today()}", **results}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
