"""Merge a trained LoRA adapter into a 16-bit copy of its base: a plain model dir for transformers and vLLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tc3.config import ConfigError, load_config
from tc3.models import check_model_ref, fit_embeddings, go_offline_if_possible, load_source, model_dir
from tc3.outputs import check_dest, staged_dir

QUANTIZED_SUFFIX = "-bnb-4bit"  # unsloth's pre-quantized repos; the 16-bit weights are the same id without it


def sixteen_bit_base(base: str) -> str:
    """The base to merge into. Merging into 4-bit weights would bake their rounding error into the merged model, so
    a pre-quantized base is replaced by its 16-bit original."""
    if base.endswith(QUANTIZED_SUFFIX):
        return base[: -len(QUANTIZED_SUFFIX)]
    local = model_dir(base)
    if local and "quantization_config" in json.loads((local / "config.json").read_text()):
        raise ConfigError(f"base {base} is quantized; pass --base with its 16-bit weights")
    return base


def export_merged(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, dtype: str = "bf16") -> Path:
    """Write base + adapter, merged, in `dtype` (bf16 or fp16) to `out_dir`, with tokenizer, config and model card."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    adapter_config = adapter_dir / "adapter_config.json"
    if not adapter_config.is_file():
        raise ConfigError(f"{adapter_dir} is not an adapter dir (no adapter_config.json)")
    check_dest(out_dir, "tc3-export")
    if dtype not in ("bf16", "fp16"):
        raise ConfigError(f"dtype must be bf16 or fp16, got {dtype!r}")
    base = base or sixteen_bit_base(json.loads(adapter_config.read_text())["base_model_name_or_path"])
    check_model_ref(base, "base")
    go_offline_if_possible(base)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tc3.model_card import write_model_card
    from tc3.prompts import end_token_ids, load_tokenizer

    tokenizer = load_tokenizer(str(adapter_dir))
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(load_source(base), dtype=torch_dtype)
    fit_embeddings(model, tokenizer)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    # plain transformers and vLLM then stop where the fine-tune ends its answer (the template's end of turn)
    merged.generation_config.eos_token_id = end_token_ids(tokenizer)

    with staged_dir(out_dir, "tc3-export") as staging:  # whole or absent: a half-written merge never sits at out_dir
        merged.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        saved_config = adapter_dir / "tc3_config.yaml"
        metrics_file = adapter_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if saved_config.is_file():
            shutil.copy(saved_config, staging / saved_config.name)
            write_model_card(staging, load_config(saved_config), {**metrics, "merged_into": base}, merged=True)
    return out_dir
