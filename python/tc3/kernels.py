"""Every change tc3 makes to a training library's behaviour from outside (TRL, transformers' Trainer), with the
library versions each was written for. The attention kernels' adapters live in `tc3.attention`, with theirs.

- `use_eager_loss_off_gpu`: TRL 1.15's `trl.trainer.utils._ChunkedLogProbFunction` (a Triton kernel) replaced by plain
  PyTorch on CPU, where Triton has no driver.
- `trainable_in_fp32`: undoes TRL 1.15's cast of every trainable parameter to bf16 over a 4-bit base.
- `no_placeholder_card`: TRL 1.15's `Trainer.create_model_card` writes a placeholder card at every checkpoint.
- `keep_unchecked_layers`: gradient checkpointing of some decoder layers only (tc3.train.speed's k-of-L plans), on
  transformers 5.17's `GradientCheckpointingLayer` and through unsloth 2026.10.9's `FastLlamaModel.for_training`.

`tests/test_train.py::test_library_internals_tc3_patches_are_there` and `tests/test_speed.py` fail when a library
changes under one of them.
"""

from __future__ import annotations

import functools

TRL_WRITTEN_FOR = "1.15"  # the TRL release the patches below were read against
TRANSFORMERS_WRITTEN_FOR = "5.17"  # keep_unchecked_layers: GradientCheckpointingLayer.__call__
UNSLOTH_WRITTEN_FOR = "2026.10"  # keep_unchecked_layers: FastLlamaModel.for_training, LlamaModel_fast_forward


class _EagerLogProb:
    """Stand-in for TRL's Triton `ChunkedLogProbFunction` off GPU (Triton has no CPU driver: "0 active drivers").
    Same arguments and outputs, computed with plain PyTorch ops and autograd."""

    @staticmethod
    def apply(hidden, weight, bias, labels, temperature, chunk_size, softcap, logit_scale, outputs):
        import torch.nn.functional as F

        logits = F.linear(hidden, weight, bias).float() * logit_scale
        if softcap is not None:
            logits = softcap * (logits / softcap).tanh()
        logits = logits / temperature
        log_probs = logits.log_softmax(-1)
        target = log_probs.gather(-1, labels[:, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1) if "entropy" in outputs else None
        log_sum_sq = (2 * log_probs).logsumexp(-1).detach() if "log_sum_sq_probs" in outputs else None
        mean_logits = logits.mean(-1).detach() if "mean_logits" in outputs else None
        is_top1 = (logits.argmax(-1) == labels) if "is_top1" in outputs else None
        return target, entropy, log_sum_sq, mean_logits, is_top1


def use_eager_loss_off_gpu() -> None:
    import trl.trainer.utils

    trl.trainer.utils._ChunkedLogProbFunction = _EagerLogProb


def trainable_in_fp32(model) -> None:
    """Put the trainable parameters (LoRA matrices, trainable-token rows) in fp32, the master copy the optimizer
    updates: a bf16 one loses updates under 1/256 of a weight. The token rows come in the embedding's own dtype, and
    TRL 1.15's SFTTrainer casts every trainable parameter to bf16 on a 4-bit base whatever the run's precision ("the
    PEFT adapter weights are converted to bf16", sft_trainer.py), after which an fp16 run fails in its gradient
    scaler, which cannot unscale bf16 gradients. The optimizer is made when training starts, after this."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def no_placeholder_card(trainer) -> None:
    """TRL writes a placeholder card ("fine-tuned version of [None]") into output_dir at every checkpoint; tc3 writes
    its own card with the final adapter, and an interrupted run leaves none."""
    trainer.create_model_card = lambda *args, **kwargs: None


@functools.cache
def _kept(layer_class: type) -> type:
    """A subclass of a decoder layer class whose `gradient_checkpointing` reads False and ignores every write."""
    if getattr(layer_class, "_tc3_kept", False):
        return layer_class
    return type(f"Kept{layer_class.__name__}", (layer_class,), {
        "gradient_checkpointing": property(lambda self: False, lambda self, value: None),
        "_tc3_kept": True, "__module__": layer_class.__module__,
    })


def keep_unchecked_layers(model, checkpointed: int | None) -> list:
    """Checkpoint only the first `checkpointed` decoder layers of `model` and keep the others' activations; None
    (every layer) or 0 (checkpointing off) change nothing. Returns the kept layers.

    transformers 5.17's `GradientCheckpointingLayer.__call__` checkpoints when its own `gradient_checkpointing` is true
    (and training), and unsloth's `LlamaModel_fast_forward` calls such layers as they are. But the flag is written
    again after this runs: by the Trainer's `gradient_checkpointing_enable` (hf backend) and by unsloth's
    `FastLlamaModel.for_training` at every `trainer.train()` (it sets it on every module). So the kept layers get a
    class whose flag reads False whatever is written, rather than a value one of those would overwrite."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if checkpointed is None or checkpointed == 0:
        return []
    kept = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)][checkpointed:]
    for layer in kept:
        layer.__dict__.pop("gradient_checkpointing", None)
        layer.__class__ = _kept(type(layer))
    return kept
