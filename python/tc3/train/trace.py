"""Debugging and tests (TC3_TRACE_DIR set): each process writes what it trained on, and the digest of its final LoRA
weights, to <dir>/rank<N>.json, so that a several-process run can be checked against a one-process one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

TRACE_ENV = "TC3_TRACE_DIR"


def tracing() -> bool:
    return bool(os.environ.get(TRACE_ENV))


def sequence_digest(ids) -> str:
    """A short digest of one token sequence."""
    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()[:16]


def lora_digest(state_dict) -> str:
    """A digest of adapter weights, by name and exact bytes: what get_peft_model_state_dict gives in memory and
    adapter_model.safetensors holds on disk digest alike."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trace_training_steps(trainer) -> None:
    """Record the digest of every sequence this process trains on (its padding left out), to be written with its
    final adapter digest by write_trace. Padding-free batches are one flat row: a digest a batch."""
    seen = trainer.tc3_trained_sequences = []
    original = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        for i in range(ids.shape[0]):
            seen.append(sequence_digest((ids[i][mask[i].bool()] if mask is not None else ids[i]).tolist()))
        return original(model, inputs, *args, **kwargs)

    trainer.training_step = training_step


def write_trace(trainer) -> None:
    """<TC3_TRACE_DIR>/rank<N>.json: this process's world size, the sequences it trained on, every sequence of the
    training set, and the digest of its LoRA weights at the end."""
    from peft import get_peft_model_state_dict

    trace_dir = Path(os.environ[TRACE_ENV])
    trace_dir.mkdir(parents=True, exist_ok=True)
    args = trainer.args
    record = {
        "rank": args.process_index,
        "world_size": args.world_size,
        "trained": trainer.tc3_trained_sequences,
        "train_set": [sequence_digest(ids) for ids in trainer.train_dataset["input_ids"]],
        "lora_digest": lora_digest(get_peft_model_state_dict(trainer.accelerator.unwrap_model(trainer.model))),
    }
    (trace_dir / f"rank{args.process_index}.json").write_text(json.dumps(record))
