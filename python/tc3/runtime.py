"""The one precision vocabulary and the one device policy of every command (train, generate, eval, export, demo).

Precisions are named ``fp32``, ``bf16`` and ``fp16`` everywhere tc3 records or takes one (configs, plans, CLI flags,
reports); torch's names (``float32`` ...) are read at the edges (`precision_of`) and made only for torch
(`torch_name`, `torch_dtype`). A device is a torch device string; `default_device` turns ``auto`` into one, and
`auto_precision` gives the precision a device computes in when nothing else says: bf16 on a CUDA GPU that has it,
fp16 on one that does not, fp32 elsewhere (CPU half precision is slow and lossy).

No heavy import at module level: torch is imported by the functions that need it.
"""

from __future__ import annotations

from tc3.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_ALIASES = {**{name: precision for precision, name in TORCH_NAMES.items()}, **{p: p for p in PRECISIONS}}
DEVICES = "cpu, cuda, cuda:N, mps or auto"


def precision_of(name) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for a precision written either way (``bf16`` or ``bfloat16``) or a torch dtype.
    UserError for anything else."""
    key = str(name).removeprefix("torch.")
    if key not in _ALIASES:
        raise UserError(f"unknown precision {name!r} ({', '.join(PRECISIONS)})")
    return _ALIASES[key]


def torch_name(precision: str) -> str:
    """torch's name of a precision: ``bf16`` -> ``bfloat16`` (for a config.json's ``dtype``, say)."""
    return TORCH_NAMES[precision_of(precision)]


def torch_dtype(precision: str):
    """The torch dtype of a precision (either spelling)."""
    import torch

    return getattr(torch, torch_name(precision))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_device(device: str | None) -> str:
    """The torch device to run on: `device` as given (cpu, cuda, cuda:N, mps) or, for None and "auto", cuda when a
    CUDA GPU is there, else cpu. A UserError, before any model loads, for a name that is no device (`gpu`) or a
    device this machine lacks (cuda without a GPU or a CUDA build)."""
    import torch

    if not device or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"--device {device} is not a device ({DEVICES})")
    if kind == "cuda" and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise UserError(f"--device {device}: {why}; use --device cpu (or auto)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: MPS (Apple GPU) is not available here; use --device cpu (or auto)")
    return device


def auto_precision(device: str) -> str:
    """The precision `device` computes in when nothing else says: bf16 on a CUDA GPU that supports it, else fp16
    there; fp32 on CPU and MPS."""
    if not device.startswith("cuda"):
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def inference_precision(device: str, trained: str | None = None) -> str:
    """The precision a model is loaded in to generate on `device`: on a CUDA GPU the one it was trained in
    (`trained`, from its saved training plan) where the GPU has it, else `auto_precision`; fp32 off CUDA."""
    if trained is None or not device.startswith("cuda"):
        return auto_precision(device)
    return "fp16" if trained == "bf16" and auto_precision(device) == "fp16" else trained
