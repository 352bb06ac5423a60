"""The training plan: every value a run decides before it trains (backend, device, precision, optimizer, max_length,
attention, gradient checkpointing, batch, world size), resolved once from the config and this machine, saved with
the run (`tc3.layout.RunDir.PLAN`) and read by export, eval, generate and the model card instead of guessing again.

Gradient checkpointing, the batch and the accumulation are filled once the data is measured (`fit_to_card`): the
config's explicit values, and for `auto` the fastest settings tc3.train.speed predicts to fit the card.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from tc3.config import AUTO, ConfigError, TrainConfig
from tc3.runtime import auto_precision, cuda_available
from tc3.train import speed

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
    world_size: int  # processes (one a GPU) training together
    # The three below are None until the data is measured (fit_to_card)
    checkpointing: bool | None = None  # gradient checkpointing of some layers
    per_device_batch: int | None = None  # sequences a process takes a step
    gradient_accumulation: int | None = None  # batches summed into one optimizer step
    max_length: int | None = None  # tokens an example may hold; None until the data is measured
    notes: list[str] = field(default_factory=list)  # where the plan departs from the config, and why
    checkpointed_layers: int | None = None  # layers recomputed in the backward, the first ones; None: every layer
    predicted_peak_gb: float | None = None  # tc3.train.speed's peak for the step; None where not predicted
    speed_choice: str | None = None  # how checkpointing and batch were chosen, in words

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
    plan = TrainPlan(backend=backend, device=device, precision=precision, optimizer=optimizer,
                     attention=planned.path, world_size=world_size, notes=notes)
    return plan, planned


def speed_options(config: TrainConfig, plan: TrainPlan, mean_length: float, shape: speed.ModelShape | None,
                  free_bytes: float | None) -> tuple[list[speed.Option], str]:
    """(the settings to try in order, why the first) for `plan` with its max_length: tc3.train.speed.choose on a GPU
    whose free memory and model shape are known. Otherwise one option: the explicit values, and for `auto` no
    checkpointing on CPU (its memory is not modelled; recomputing only costs time), every layer checkpointed on a GPU
    with a model tc3 cannot read the shape of, the batch of tokens_per_step in one step."""
    from tc3 import attention

    asked = (config.gradient_checkpointing, config.per_device_batch_size, config.gradient_accumulation_steps)
    unsloth = plan.backend == "unsloth"
    mean_length = min(mean_length, plan.max_length)  # longer examples are trimmed to it
    if free_bytes is not None and shape is not None:
        quantized = config.load_in_4bit and plan.on_cuda  # bitsandbytes: CUDA only
        static = speed.static_bytes(shape, config.lora_r, config.lora_target_modules, quantized)
        padded = not config.padding_free if unsloth else plan.attention == attention.PADDED
        work = speed.Workload(shape, static, mean_length, plan.max_length, padded, unsloth, config.tokens_per_step,
                              plan.world_size)
        return speed.choose(work, free_bytes, *asked)
    checkpointing, batch, accumulation = asked
    target = speed.target_batch(config.tokens_per_step, mean_length, plan.world_size)
    batch, accumulation = speed.splits(target, batch, accumulation)[0]  # no memory model: the largest micro-batch
    checkpointing = plan.on_cuda if checkpointing == AUTO else checkpointing
    option = speed.Option(None if checkpointing else 0, batch, accumulation, None)
    where = "on CPU auto means" if not plan.on_cuda else "the model's shape is unknown to tc3's memory model:"
    return [option], f"{where} {option.describe(None, unsloth)}"


def with_option(plan: TrainPlan, option: speed.Option, reason: str) -> TrainPlan:
    """`plan` with the checkpointing, batch and accumulation of `option` (tc3.train.speed.Option)."""
    return dataclasses.replace(
        plan, checkpointing=option.checkpointed != 0, checkpointed_layers=option.checkpointed,
        per_device_batch=option.per_device_batch, gradient_accumulation=option.gradient_accumulation,
        predicted_peak_gb=None if option.predicted_peak_gb is None else round(option.predicted_peak_gb, 3),
        speed_choice=reason,
    )


def resolved_config(config: TrainConfig, plan: TrainPlan) -> TrainConfig:
    """The config as the run ran it, the one saved with it: max_length and the optimizer as the plan resolved them.
    `auto` stays `auto` (the plan holds what it chose on this card: a resumed run on another card chooses again)."""
    return dataclasses.replace(config, max_length=plan.max_length, optimizer=plan.optimizer)
