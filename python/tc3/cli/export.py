"""tc3-export: merge a LoRA adapter into a full-precision copy of its base model (and a GGUF for llama.cpp / Ollama)."""

from __future__ import annotations

import argparse
import json
import sys

from tc3.cli.args import add_device_args, make_parser
from tc3.errors import MODEL_MODULES, command, need


def parser() -> argparse.ArgumentParser:
    p = make_parser(prog="tc3-export", description=__doc__.split(": ", 1)[1])
    p.add_argument("adapter_dir", help="a tc3-train output dir (adapter_config.json, adapter_model.safetensors)")
    p.add_argument("out_dir", help="where the merged model goes (absent, empty, or an earlier "
                   "tc3-export output, which is replaced)")
    p.add_argument("--base", help="16-bit base weights (default: the adapter's base; -bnb-4bit ids lose the suffix)")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="default: the precision the adapter was trained in")
    add_device_args(p, threads=False)
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the merged model with the adapter (export_check.json)")
    p.add_argument("--gguf", action="store_true", help="also write model-QUANT.gguf (tokenizer, chat template and "
                   "end-of-turn EOS inside) for llama.cpp / LM Studio, and an Ollama Modelfile beside it")
    p.add_argument("--quant", choices=["f16", "q8_0", "q4_k_m"], help="the GGUF's weights (default: f16; "
                   "q4_k_m uses llama.cpp's quantizer from llama-cpp-python)")
    return p


@command("tc3-export")
def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.quant and not args.gguf:
        p.error("--quant is for the GGUF: add --gguf")
    need("train", *MODEL_MODULES)
    quant = (args.quant or "f16") if args.gguf else None
    if quant:
        need("gguf", "gguf")
    if quant == "q4_k_m":
        need("gguf-quant", "llama_cpp")
    from tc3.export import CHECK_FILE, export_merged
    from tc3.gguf import gguf_name

    out = export_merged(args.adapter_dir, args.out_dir, base=args.base, dtype=args.dtype, device=args.device,
                        check=not args.no_check, gguf=quant)
    print(f"tc3-export: merged model in {out}")
    if quant:
        print(f"tc3-export: GGUF in {out / gguf_name(quant)}; for Ollama: cd {out} && ollama create NAME -f Modelfile")
    if not args.no_check:
        check = json.loads((out / CHECK_FILE).read_text())
        print(f"tc3-export: {check['dtype']} merged model against the adapter on {len(check['titles'])} titles: "
              f"{check['greedy_agree']} greedy answers agree; first choices agree at {check['decisive_agree']} of "
              f"{check['decisive_positions']} answer positions where the adapter's lead is over {check['near_tie']} "
              f"logits; largest logit difference {check['max_logit_diff']:.4g} ({out / CHECK_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
