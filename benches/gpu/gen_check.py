"""Generation checks of the GPU job (the weights are random: the text is noise; what is checked is that each path
loads, runs on the GPU and stops or runs to its token limit with finite logits).

    python benches/gpu/gen_check.py adapter-4bit ADAPTER_DIR   # base in 4-bit NF4 (bitsandbytes) + the LoRA adapter
    python benches/gpu/gen_check.py merged MERGED_DIR          # tc3-export's output, plain transformers, bf16

Prints one JSON line: path, load and generation seconds, new tokens, peak GPU memory, the text.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
TITLE = "The Prophet (Hardcover) by Kahlil Gibran"


def main(kind: str, path: str) -> int:
    import torch
    from tc3.prompts import end_token_ids, prompt_ids
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    t0 = time.perf_counter()
    if kind == "adapter-4bit":
        from peft import PeftModel

        base = json.loads((Path(path) / "adapter_config.json").read_text())[
            "base_model_name_or_path"
        ]
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quant, dtype=torch.bfloat16,
                                                     device_map={"": 0})  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(path)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        model = PeftModel.from_pretrained(model, path)
    elif (
        kind == "merged"
    ):  # exactly what a user of the exported dir does: nothing from tc3 to load it
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16, device_map={"": 0}
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
        base = None
    else:
        raise SystemExit(f"unknown kind {kind}")
    model.eval()
    load_s = time.perf_counter() - t0
    ids = torch.tensor([prompt_ids(tokenizer, TITLE, "pt")], device="cuda")
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        t1 = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False,
                             eos_token_id=end_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        torch.cuda.synchronize()
    new = out[0, ids.shape[1] :].tolist()
    record = {
        "check": kind, "path": path, "base": base, "load_s": round(load_s, 1),
        "generate_s": round(time.perf_counter() - t1, 2), "new_tokens": len(new),
        "finite_logits": bool(torch.isfinite(logits).all()), "quantized_4bit": kind == "adapter-4bit",
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "eos_ids": getattr(model.generation_config, "eos_token_id", None),
        "text": tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)[:200],
    }  # fmt: skip
    print(json.dumps(record, ensure_ascii=False))
    return 0 if record["finite_logits"] and record["new_tokens"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
