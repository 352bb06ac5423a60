"""Shared fixtures: the `tc3-prep` output of the real records bundled with tc3 and a tiny random Llama with its own
tokenizer. Only what the repository holds is read.

`prep_dir` and `tiny_model_dir` are session-scoped and read-only for tests: copy before modifying.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import pytest

# The `gpu` tests run in parallel workers (pytest-xdist, `benches/gpu/jobs.py tests`): each worker's unsloth processes
# write their generated sources into a folder of their own, never into another worker's at the same time.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", f"unsloth_compiled_cache_{os.environ['PYTEST_XDIST_WORKER']}")

def child_env(**extra: str) -> dict:
    """The environment of a child process that imports tc3: the same tc3 the tests import (the source tree in a
    development install, site-packages in an installed one: never the source tree without its compiled engine)."""
    import tc3

    package_dir = str(Path(tc3.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([package_dir, os.environ.get("PYTHONPATH", "")]), **extra}


# Llama-3 base names for its special tokens; like Llama-3 base, the tokenizer has them but no chat template.
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"
TEMPLATE_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def realdata_records() -> list[dict]:
    """The 500 real records `tc3-prep --example` reads, as trn.json lines give them: dicts with uid, title, content.
    The uids are T000000000...: the tests' splits and samples (which hash the uid) were calibrated on those."""
    from tc3.cli.prep import EXAMPLE_INPUT

    with EXAMPLE_INPUT.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    return [{"uid": f"T{i:09d}", "title": r["title"], "content": r["content"]} for i, r in enumerate(records)]


def write_prep_output(work_dir: Path, val_fraction: float = 0.1) -> Path:
    """`tc3-prep` run on the real records (written as trn.json lines): work_dir/prep, train/validation Parquet,
    dataset card and stats.json."""
    from tc3.prep import run

    trn = work_dir / "trn.json"
    trn.write_text("".join(json.dumps(r) + "\n" for r in realdata_records()))
    run(inputs=[str(trn)], out_dir=str(work_dir / "prep"), val_fraction=val_fraction)
    return work_dir / "prep"


def build_tiny_llama(out_dir: Path, vocab_size: int = 1000, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama and a byte-level BPE tokenizer trained on the real titles/descriptions."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    limit_torch_threads()  # the torch tests all start here: the rest of the session runs on one thread
    texts = [t for r in realdata_records() for t in (r["title"], r["content"])]
    specials = [BOS, EOS, PAD, *TEMPLATE_TOKENS]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    # Like Llama-3's tokenizer: plain tokenization prepends BOS, which is what makes double-BOS bugs possible.
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bpe.token_to_id(BOS))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD, extra_special_tokens=TEMPLATE_TOKENS
    )
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.2,  # wide enough that a frozen head lets LoRA move the logits: the loss can visibly fall
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def generation_threads() -> list:
    """The threads running a streamed answer now (tc3.generate.Stream's, `tc3-stream`; `Thread-N (work)` before it
    named them)."""
    import threading

    return [t for t in threading.enumerate() if t.name == "tc3-stream" or t.name.endswith("(work)")]


def limit_torch_threads() -> None:
    """Tiny models on a small shared box: one thread is several times faster than threads contending for cores.
    Acts only once torch is imported and never imports it, so prep and Rust-side tests run without torch."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def build_random_adapter(model_dir: Path, out_dir: Path, target_modules: list[str], seed: int) -> Path:
    """A LoRA adapter (r=4) over `model_dir` with random non-zero B matrices, so that merging it changes the
    weights, saved with its tokenizer as tc3-train saves it (the Llama-3 chat template set)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tc3.prompts import load_tokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=target_modules))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(out_dir)
    load_tokenizer(str(model_dir)).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Also for a test module that imports torch itself, before each of its tests."""
    limit_torch_threads()


@pytest.fixture(scope="session")
def prep_dir(tmp_path_factory) -> Path:
    """A `tc3-prep` output dir (train/validation Parquet + dataset card) of the bundled real records."""
    return write_prep_output(tmp_path_factory.mktemp("prep"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A local model dir: tiny random LlamaForCausalLM + tokenizer with Llama-3 special tokens, no chat template."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny model's tokenizer as tc3 loads it (Llama-3 chat template set)."""
    from tc3.prompts import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))
