"""Which attention kernel a training run uses, and the small adapters that let the fast one run.

Padding-free batches are one flat row of several sequences. The fast way to attend over them is one
variable-length attention call a layer (torch's `torch.nn.attention.varlen.varlen_attn`, FlashAttention-2 kernels
inside libtorch, CUDA only); the slow way is one SDPA call a sequence, or padding every sequence to the longest.

- unsloth backend: unsloth 2026.10.x uses `varlen_attn` only when it accepts both `window_size` and `enable_gqa`.
  torch 2.11 has `window_size` and gains `enable_gqa` only in 2.12, although its kernels already run grouped-query
  heads (Llama-3: 32 query / 8 key-value heads), so unsloth falls back to a per-sequence SDPA loop. For the unsloth
  releases in `UNSLOTH_GQA_ADAPTER_RELEASES` and a torch whose `varlen_attn` lacks `enable_gqa`, `open_unsloth_varlen`
  hands unsloth a wrapper that accepts `enable_gqa` and drops it (docs/attention.md: when to remove it).
- hf backend: `HF_VARLEN` is an attention function registered with transformers' `AttentionInterface` that calls
  `varlen_attn` over the sequence boundaries read from the position ids of a padding-free batch.
Both are switched off with the config key `varlen_attention: false`.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from dataclasses import dataclass

# unsloth releases whose attention dispatch was read and measured with the adapter (benches/results/gpu_train.md).
UNSLOTH_GQA_ADAPTER_RELEASES = ("2026.10.9",)
HF_VARLEN = "tc3_varlen"  # the name the hf backend's attention function is registered under

UNSLOTH_VARLEN = "torch varlen_attn, one call a layer (unsloth's own)"
UNSLOTH_ADAPTED = "torch varlen_attn, one call a layer (unsloth + tc3's enable_gqa adapter)"
UNSLOTH_SEGMENTS = "SDPA, one call a sequence (unsloth's fallback)"
HF_VARLEN_PATH = "torch varlen_attn over padding-free batches, one call a layer (tc3's attention function)"
PADDED = "SDPA over padded batches"


@dataclass(frozen=True)
class AttentionPlan:
    """The attention path of a run: `path` in words (log line, dry run, model card), the `attn_implementation` an
    hf-backend model is loaded with (None: transformers' default) with the dtype its kernels compute in, and whether
    unsloth needs tc3's adapter."""

    path: str
    hf_implementation: str | None = None
    unsloth_adapter: bool = False
    compute_dtype: str | None = None  # bf16 or fp16: what the hf backend's attention function computes in


def torch_varlen_params() -> set[str] | None:
    """The parameter names of torch's `varlen_attn`, or None when this torch has none or no CUDA flash kernel."""
    import torch

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    if not torch.cuda.is_available() or not torch.backends.cuda.is_flash_attention_available():
        return None
    return set(inspect.signature(varlen_attn).parameters)


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def plan(backend: str, padding_free: bool, varlen_attention: bool, precision: str = "bf16") -> AttentionPlan:
    """The attention path for a backend (`unsloth` or `hf`), the config's `padding_free` (unsloth) and
    `varlen_attention`, and the run's precision (bf16, fp16 or fp32), decided from versions and signatures alone:
    nothing is loaded or changed."""
    params = torch_varlen_params()
    usable = params is not None and "window_size" in params  # torch >= 2.11, on CUDA
    if backend == "hf":
        if not varlen_attention:
            return AttentionPlan(f"{PADDED} (varlen_attention is false)")
        if not usable:
            return AttentionPlan(f"{PADDED} (variable-length attention needs CUDA and torch >= 2.11)")
        if precision == "fp32":  # FlashAttention kernels compute in 16 bits only
            return AttentionPlan(f"{PADDED} (variable-length attention needs bf16 or fp16, the run is fp32)")
        return AttentionPlan(HF_VARLEN_PATH, hf_implementation=HF_VARLEN, compute_dtype=precision)
    if not padding_free:
        return AttentionPlan(f"{PADDED} (padding_free is false)")
    if not usable:
        return AttentionPlan(f"{UNSLOTH_SEGMENTS}: this torch has no usable varlen_attn")
    if os.environ.get("UNSLOTH_TORCH_VARLEN", "1").lower() in ("0", "false", "no", "off"):
        return AttentionPlan(f"{UNSLOTH_SEGMENTS}: UNSLOTH_TORCH_VARLEN is off")
    if "enable_gqa" in params:
        return AttentionPlan(UNSLOTH_VARLEN)
    release = _installed("unsloth")
    if release not in UNSLOTH_GQA_ADAPTER_RELEASES:
        return AttentionPlan(f"{UNSLOTH_SEGMENTS}: tc3 has no adapter for unsloth {release}")
    if not varlen_attention:
        return AttentionPlan(f"{UNSLOTH_SEGMENTS}: varlen_attention is false")
    return AttentionPlan(UNSLOTH_ADAPTED, unsloth_adapter=True)


def _varlen_without_gqa_flag(varlen_attn):
    """`varlen_attn` as unsloth calls it on torch >= 2.12, for a torch whose `varlen_attn` has no `enable_gqa`:
    its kernels take fewer key/value heads than query heads as they are, so the flag only needs dropping."""

    def varlen_attn_gqa(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, enable_gqa=False, **kwargs):
        return varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kwargs)

    return varlen_attn_gqa


def apply(chosen: AttentionPlan) -> str:
    """Make the planned path run: on the unsloth backend (after `import unsloth`) hand unsloth's dispatch the adapted
    `varlen_attn`; on the hf backend register `HF_VARLEN` with transformers. Returns the path the run uses."""
    if chosen.hf_implementation == HF_VARLEN:
        register_hf_varlen(chosen.compute_dtype)
    if not chosen.unsloth_adapter:
        return chosen.path
    from torch.nn.attention.varlen import varlen_attn
    from unsloth.utils import attention_dispatch

    if getattr(attention_dispatch, "_TORCH_VARLEN_ATTN", "missing") is not None:  # not the gate the adapter knows
        return f"{UNSLOTH_SEGMENTS}: unsloth's dispatch is not the one tc3's adapter was written for"
    attention_dispatch._TORCH_VARLEN_ATTN = _varlen_without_gqa_flag(varlen_attn)
    return chosen.path


# ---------------------------------------------------------------------------------------------------------------------
# hf backend


def sequence_bounds(position_ids):
    """(cu_seqlens int32 (n + 1,), longest length) of the sequences flattened into one row, read from position ids
    (1, T) that restart at 0 where each sequence starts (TRL's padding-free collator)."""
    import torch

    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).reshape(-1)
    total = torch.tensor([flat.numel()], device=flat.device)
    cu = torch.cat([starts, total]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def hf_varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, compute_dtype=None,
                        **kwargs):
    """transformers attention function: query (1, H, T, D), key/value (1, H_kv, T, D) of a padding-free row ->
    ((1, T, H, D), None) in the query's dtype, causal within each sequence. Needs `position_ids` among the kwargs.
    Query, key and value in fp32 (a 4-bit base prepared for training keeps its norms, hence its activations, in fp32)
    are computed in `compute_dtype` (a torch dtype), the 16-bit type the FlashAttention kernels take."""
    from torch.nn.attention.varlen import varlen_attn

    cu, longest = sequence_bounds(kwargs["position_ids"])
    dtype = compute_dtype if compute_dtype is not None and query.dtype.itemsize > 2 else query.dtype
    q, k, v = (x.squeeze(0).transpose(0, 1).to(dtype).contiguous() for x in (query, key, value))  # (T, H, D)
    # Called as unsloth calls it: window (-1, 0) is causal; the kernels take fewer key/value heads as they are.
    out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=(-1, 0))
    return out.to(query.dtype).unsqueeze(0), None


def register_hf_varlen(compute_dtype: str | None = None) -> None:
    """Register `HF_VARLEN` with transformers, with no mask function: the sequence bounds replace the mask.
    `compute_dtype` (bf16, fp16; None: the inputs' own) is what fp32 inputs are computed in."""
    import functools

    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from tc3.runtime import torch_dtype

    dtype = torch_dtype(compute_dtype) if compute_dtype else None
    AttentionInterface.register(HF_VARLEN, functools.partial(hf_varlen_attention, compute_dtype=dtype))
    AttentionMaskInterface.register(HF_VARLEN, lambda *args, **kwargs: None)
