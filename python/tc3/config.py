"""The training run as one typed config: a YAML file, then `key=value` overrides, checked against the fields below.

No heavy imports here: `tc3-train --help` and config errors must be instant.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# A mistake in the config or the command line is a user error like any other: one line, no traceback.
from tc3.errors import UserError as ConfigError

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Keys whose value must be one of a fixed set.
CHOICES = {
    "backend": ("auto", "unsloth", "hf"),
    "questions": ("varied", "fixed"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "lr_scheduler": ("linear", "cosine", "constant", "constant_with_warmup"),
    "optimizer": ("adamw_8bit", "paged_adamw_8bit", "adamw_torch", "adamw_torch_fused", "sgd"),
}

# Counts and sizes that must be > 0 when set.
POSITIVE = (
    "train_samples", "eval_samples", "dataset_num_proc", "max_length", "max_length_cap", "max_steps",
    "per_device_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha",
    "logging_steps", "eval_steps", "save_steps", "save_total_limit",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Defaults are configs/llama3-8b-qlora.yaml."""

    # What to train on what
    model: str = "unsloth/llama-3-8b-bnb-4bit"  # hub id or local model dir
    data: str = "data/prep"  # a `tc3-prep` output dir
    output_dir: str = "runs/llama3-8b-qlora"
    instruction: str = "pt"  # "pt", "en" or a literal instruction text: the user turn when questions is fixed
    questions: str = "varied"  # varied: each example's user turn drawn from tc3.prompts.QUESTION_TEMPLATES; fixed
    context_fraction: float = 0.2  # share of examples given their own record as context (grounded turns)
    train_samples: int | None = 100_000  # seeded random sample of the train split; null = all of it
    eval_samples: int | None = 1000  # seeded random sample of the validation split; null = all of it
    seed: int = 3407

    # How
    backend: str = "auto"  # auto: unsloth when CUDA is there, else hf (transformers + PEFT)
    load_in_4bit: bool = True  # QLoRA; CUDA only (bitsandbytes), ignored on CPU
    precision: str = "auto"  # auto: bf16 where the GPU supports it, else fp16; fp32 on CPU
    gradient_checkpointing: bool = True
    padding_free: bool = True  # unsloth backend: flatten each batch, no padding tokens
    dataset_num_proc: int | None = None

    # Length: null derives it from the tokenized train examples (percentile, capped)
    max_length: int | None = None
    max_length_percentile: float = 99.0
    max_length_cap: int = 1024

    # Optimisation
    epochs: float = 1.0
    max_steps: int | None = None  # when set, overrides epochs
    per_device_batch_size: int = 64  # chosen by tokens per optimizer step: see configs/llama3-8b-qlora.yaml
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    optimizer: str = "adamw_8bit"
    max_grad_norm: float = 1.0

    # LoRA
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(LLAMA_PROJECTIONS))

    # Bookkeeping
    logging_steps: int = 10
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int = 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value):
    """`value` as the type of field `key`, or ConfigError saying what was expected."""
    expected = _TYPES[key]
    optional = isinstance(expected, types.UnionType) and type(None) in typing.get_args(expected)
    base = next((t for t in typing.get_args(expected) if t is not type(None)), expected) if optional else expected
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} cannot be null")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, str):  # PyYAML reads 5e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif typing.get_origin(base) is list:
        if isinstance(value, str):  # key=a,b,c on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    type_name = getattr(base, "__name__", str(base)) + (" or null" if optional else "")
    raise ConfigError(f"{key} must be {type_name}, got {value!r}")


def _check_keys(keys, where: str) -> None:
    unknown = sorted(set(keys) - FIELDS.keys())
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(FIELDS)}")


def _validate(config: TrainConfig) -> None:
    for key, allowed in CHOICES.items():
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}")
    for key in POSITIVE:
        value = getattr(config, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if config.learning_rate <= 0 or config.epochs <= 0:
        raise ConfigError("learning_rate and epochs must be positive")
    if not 0 <= config.context_fraction <= 1:
        raise ConfigError("context_fraction must be in [0, 1]")
    if not 0 <= config.warmup_ratio < 1 or not 0 <= config.lora_dropout < 1:
        raise ConfigError("warmup_ratio and lora_dropout must be in [0, 1)")
    if not 0 < config.max_length_percentile <= 100:
        raise ConfigError("max_length_percentile must be in (0, 100]")
    if not config.lora_target_modules:
        raise ConfigError("lora_target_modules must name at least one module")


def parse_override(item: str) -> tuple[str, object]:
    """`key=value`, the value read as YAML (so 5e-3, true, null and [a, b] mean what they say)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file, then the `key=value` overrides; every key and value checked."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a mapping of key: value")
        _check_keys(loaded or {}, str(path))
        values.update(loaded or {})
    pairs = [parse_override(item) for item in overrides]
    _check_keys([key for key, _ in pairs], "the command line")
    values.update(pairs)
    config = TrainConfig(**{key: _coerce(key, value) for key, value in values.items()})
    _validate(config)
    return config
