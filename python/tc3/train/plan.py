"""The training plan: every value a run decides before it trains (backend, device, precision, optimizer, max_length,
attention, gradient checkpointing, batch, world size), resolved once from the config and this machine, saved with
the run (`tc3.layout.RunDir.PLAN`) and read by export, eval, generate and the model card instead of guessing again.

`checkpointing`, `per_device_batch` and `gradient_accumulation` come straight from the config today; they are plan
values so that a later resolution (automatic speed settings) can fill them without any reader changing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from tc3.config import ConfigError, TrainConfig
from tc3.runtime import auto_precision, cuda_available

EIGHT_BIT_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")  # bitsandbytes: CUDA only
CPU_OPTIMIZER = "adamw_torch"  # what an 8-bit optimizer asked for runs as on CPU


@dataclass(frozen=True)
class TrainPlan:
    """What a run does, resolved. Saved as JSON (`to_dict`); `from_dict` reads a saved one."""

    backend: str  # unsloth or hf
    device: str  # cuda or cpu
    precision: str  # fp32, bf16 or fp16 (tc3.runtime): the dtype the run computes and the adapter trains in
    optimizer: str  # as run (an 8-bit optimizer asked for on CPU runs as CPU_OPTIMIZER)
    attention: str  # the attention path, in words (tc3.attention)
    checkpointing: bool  # gradient checkpointing
    per_device_batch: int  # sequences a process takes a step
    gradient_accumulation: int  # batches summed into one optimizer step
    world_size: int  # processes (one a GPU) training together
    max_length: int | None = None  # tokens an example may hold; None until the data is measured
    notes: list[str] = field(default_factory=list)  # where the plan departs from the config, and why

    @property
    def on_cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def global_batch(self) -> int:
        """Sequences an optimizer step, over every process."""
        return self.per_device_batch * self.gradient_accumulation * self.world_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainPlan:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def resolve_backend(config: TrainConfig) -> str:
    """unsloth or hf: `auto` is unsloth where CUDA and the unsloth package are there. ConfigError for unsloth asked
    for where it cannot run."""
    if config.backend == "hf":
        return "hf"
    unsloth_usable = cuda_available() and importlib.util.find_spec("unsloth") is not None
    if config.backend == "unsloth" and not unsloth_usable:
        raise ConfigError("backend unsloth needs CUDA and the unsloth package (pip install 'tc3[gpu]'); use backend=hf")
    return "unsloth" if unsloth_usable else "hf"


def resolve_optimizer(optimizer: str, on_cuda: bool) -> str:
    """The optimizer a run uses: an 8-bit one (bitsandbytes) needs CUDA, and runs as CPU_OPTIMIZER on CPU."""
    return CPU_OPTIMIZER if not on_cuda and optimizer in EIGHT_BIT_OPTIMIZERS else optimizer


def resolve_plan(config: TrainConfig, world_size: int = 1):
    """(TrainPlan without max_length, the tc3.attention.AttentionPlan of its attention path) for `config` on this
    machine: nothing is loaded or changed."""
    from tc3 import attention

    backend = resolve_backend(config)
    device = "cuda" if cuda_available() else "cpu"
    precision = config.precision if config.precision != "auto" else auto_precision(device)
    optimizer = resolve_optimizer(config.optimizer, device == "cuda")
    notes = [] if optimizer == config.optimizer else [f"{config.optimizer} needs CUDA (bitsandbytes): {optimizer}"]
    planned = attention.plan(backend, config.padding_free, config.varlen_attention, precision)
    plan = TrainPlan(
        backend=backend, device=device, precision=precision, optimizer=optimizer, attention=planned.path,
        checkpointing=config.gradient_checkpointing, per_device_batch=config.per_device_batch_size,
        gradient_accumulation=config.gradient_accumulation_steps, world_size=world_size, notes=notes,
    )
    return plan, planned


def resolved_config(config: TrainConfig, plan: TrainPlan) -> TrainConfig:
    """The config as the run ran it, the one saved with it: max_length and the optimizer as the plan resolved them."""
    return dataclasses.replace(config, max_length=plan.max_length, optimizer=plan.optimizer)
