"""The training run as one typed config: a YAML file, then `key=value` overrides, checked against the fields below.

No heavy imports here: `tc3-train --help` and config errors must be instant.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Keys whose value must be one of a fixed set.
CHOICES = {
    "backend": ("auto", "unsloth", "hf"),
    "questions": ("varied", "fixed"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "lr_scheduler": ("linear", "cosine", "constant", "constant_with_warmup"),
    "optimizer": ("adamw_8bit", "paged_adamw_8bit", "adamw_torch", "adamw_torch_fused", "sgd"),
    "overlong": ("trim", "drop"),
    "report_to": ("none", "tensorboard", "trackio", "mlflow", "wandb"),
}

# Counts and sizes that must be > 0 when set.
POSITIVE = (
    "train_samples", "eval_samples", "dataset_num_proc", "max_length", "max_length_cap", "max_steps",
    "per_device_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha",
    "logging_steps", "eval_steps", "save_steps", "save_total_limit",
)  # fmt: skip


class ConfigError(ValueError):
    """A user mistake in the config or the command line: reported as one line, never a traceback."""


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
    kinds: list[str] | None = None  # train and evaluate only on rows of these content kinds (tc3-prep's kind); null = all
    seed: int = 3407

    # How
    backend: str = "auto"  # auto: unsloth when CUDA is there, else hf (transformers + PEFT)
    load_in_4bit: bool = True  # QLoRA; CUDA only (bitsandbytes), ignored on CPU
    precision: str = "auto"  # auto: bf16 where the GPU supports it, else fp16; fp32 on CPU
    gradient_checkpointing: bool = True
    padding_free: bool = True  # unsloth backend: flatten each batch, no padding tokens
    varlen_attention: bool = True  # one variable-length attention call a layer where CUDA allows (tc3/attention.py)
    dataset_num_proc: int | None = None

    # Length: null derives it from the tokenized train examples (percentile, capped)
    max_length: int | None = None
    max_length_percentile: float = 99.0
    max_length_cap: int = 1024
    overlong: str = "trim"  # an example over max_length: trim its description at a word boundary, or drop it

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
    neftune_noise_alpha: float | None = None  # NEFTune: noise on the input embeddings while training (e.g. 5)

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
    report_to: str = "none"  # experiment tracking: none, tensorboard (<output_dir>/runs), trackio, mlflow, wandb

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)
# How a value may be written: null for the fields that allow it, and YAML 1.1's words for a bool.
NULL_WORDS = ("null", "none", "~")
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_YAML_NULL = "tag:yaml.org,2002:null"


def _field_type(key: str) -> tuple[object, bool]:
    """(the type of field `key` without None, whether it may be null)."""
    expected = _TYPES[key]
    if isinstance(expected, types.UnionType) and type(None) in typing.get_args(expected):
        return next(t for t in typing.get_args(expected) if t is not type(None)), True
    return expected, False


def _type_error(key: str, got: str) -> ConfigError:
    base, optional = _field_type(key)
    name = {bool: "bool (true or false)", int: "int", float: "float", str: "str"}.get(base, "a list of names (a,b,c)")
    return ConfigError(f"{key} must be {name}{' or null' if optional else ''}, got {got}")


def parse_value(key: str, text: str):
    """`text`, an override's value or a YAML scalar as written, read as the type of field `key`.

    A str field takes the text exactly as it is (`2024_06_01`, `Describe: {title}`); bool: true/false, yes/no,
    on/off; int and float as Python reads them (`100_000`, `5e-3`), finite; a list: names split at commas or a
    YAML flow list `[a, b]`; `null`, `none` or `~` where the field may be null. Raises ConfigError naming the key
    and the type expected.
    """
    base, optional = _field_type(key)
    word = text.strip()
    if optional and word.lower() in NULL_WORDS:
        return None
    if base is str:
        return text
    if base is bool and word.lower() in BOOL_WORDS:
        return BOOL_WORDS[word.lower()]
    if base in (int, float):
        try:
            number = base(word)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            return number
    if typing.get_origin(base) is list:
        if word.startswith("["):
            try:
                return _node_value(key, yaml.compose(word, Loader=yaml.SafeLoader))
            except yaml.YAMLError:
                raise _type_error(key, repr(text)) from None
        return [name.strip() for name in word.split(",") if name.strip()]
    raise _type_error(key, repr(text))


def _node_value(key: str, node: yaml.Node):
    """A YAML file's value for field `key`, from its node: a scalar's text as written goes to `parse_value`, so a
    file and the command line read values alike; a bare null (`null`, `~`, nothing) is None."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _YAML_NULL and node.style is None:
            if _field_type(key)[1]:
                return None
            raise ConfigError(f"{key} cannot be null")
        return parse_value(key, node.value)
    if (
        isinstance(node, yaml.SequenceNode)
        and typing.get_origin(_field_type(key)[0]) is list
        and all(isinstance(item, yaml.ScalarNode) for item in node.value)
    ):
        return [item.value for item in node.value]
    raise _type_error(key, "a list" if isinstance(node, yaml.SequenceNode) else "a mapping")


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
    if config.neftune_noise_alpha is not None and config.neftune_noise_alpha <= 0:
        raise ConfigError(f"neftune_noise_alpha must be positive or null, got {config.neftune_noise_alpha}")
    if config.kinds is not None:
        from tc3._rust_clean import CONTENT_KINDS  # the engine names the kinds; loaded only when asked for

        unknown = [k for k in config.kinds if k not in CONTENT_KINDS] or ([] if config.kinds else ["nothing"])
        if unknown:
            raise ConfigError(f"kinds: {', '.join(unknown)} is not a content kind (choose from {', '.join(CONTENT_KINDS)})")
    if not config.lora_target_modules:
        raise ConfigError("lora_target_modules must name at least one module")
    for key in (key for key, kind in _TYPES.items() if kind is str):  # a path, a hub id or a text: never blank
        if not getattr(config, key).strip():
            raise ConfigError(f"{key} must not be empty")


def split_override(item: str) -> tuple[str, str]:
    """`key=value` as (key, value text); the text is everything after the first `=`, untouched."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not key=value")
    return key.strip(), text


def _read_file(path: Path) -> dict:
    """The typed values of a YAML config file, each read by its field's type (see `parse_value`)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode) or not all(isinstance(k, yaml.ScalarNode) for k, _ in root.value):
        raise ConfigError(f"{path} must be a mapping of key: value")
    _check_keys([k.value for k, _ in root.value], str(path))
    return {k.value: _node_value(k.value, v) for k, v in root.value}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file, then the `key=value` overrides; every key and value checked.

    Each value is read by the type of its field (`parse_value`): a str field takes the text exactly as typed.
    Raises ConfigError (one line) on a missing file, bad YAML, an unknown key, a wrong type or a bad value.
    """
    values = _read_file(Path(path)) if path is not None else {}
    pairs = [split_override(item) for item in overrides]
    _check_keys([key for key, _ in pairs], "the command line")
    values.update((key, parse_value(key, text)) for key, text in pairs)
    config = TrainConfig(**values)
    _validate(config)
    return config
