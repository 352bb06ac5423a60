"""The training run as one typed config: a YAML file, then `key=value` overrides, checked against the fields below.

No heavy imports here: `tc3-train --help` and config errors must be instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import yaml

# A mistake in the config or the command line is a user error like any other: one line, no traceback.
from tc3.errors import UserError as ConfigError

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The content kinds that describe a product: every kind but review_quotes (press praise with its source). Trained on
# review_quotes records, SmolLM2 wrote invented press quotes in 66% of its answers to held-out titles; without them,
# in 0% (issue 25, H100). The prep output keeps every kind; training leaves them out (`kinds: null`: all).
DESCRIPTIVE_KINDS = ["description", "author_bio", "metadata_only", "mixed"]

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

# Keys that take `auto` besides their type: tc3 chooses them for the card (tc3.train.speed).
AUTO = "auto"
AUTO_KEYS = ("gradient_checkpointing", "per_device_batch_size", "gradient_accumulation_steps")

# Counts and sizes that must be > 0 when set.
POSITIVE = (
    "train_samples", "eval_samples", "dataset_num_proc", "max_length", "max_length_cap", "max_steps",
    "per_device_batch_size", "gradient_accumulation_steps", "tokens_per_step", "lora_r", "lora_alpha",
    "logging_steps", "eval_steps", "save_steps", "save_total_limit",
)  # fmt: skip


def key(default, about: str):
    """A config field: its default and its one-line meaning, the one source of `tc3-train --help`'s key list and of
    docs/training.md's table (`key_rows`). A list default is copied for each config."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"about": about})
    return field(default=default, metadata={"about": about})


@dataclass
class TrainConfig:
    """Defaults are the shipped config llama3-8b-qlora (tc3/configs/llama3-8b-qlora.yaml)."""

    # What to train on what
    model: str = key("unsloth/llama-3-8b-bnb-4bit", "Hub id or local dir of the base model")
    data: str = key("data/prep", "a tc3-prep output dir")
    output_dir: str = key("runs/llama3-8b-qlora", "where the adapter, checkpoints and metrics go")
    instruction: str = key("pt", "pt, en or a literal instruction: the user turn when questions is fixed")
    questions: str = key("varied", "varied: each example's question drawn from tc3.prompts.QUESTION_TEMPLATES; "
                         "fixed: the instruction")
    context_fraction: float = key(0.2, "share of examples given their own record as context (grounded turns)")
    train_samples: int | None = key(100_000, "seeded random sample of the train split; null = all of it")
    eval_samples: int | None = key(1000, "seeded random sample of the validation split; null = all of it")
    kinds: list[str] | None = key(DESCRIPTIVE_KINDS, "train and evaluate only on rows of these content kinds "
                                  "(tc3-prep's kind column); default: all but review_quotes; null = all")
    grounded_kinds: list[str] | None = key(None, "content kinds trained only with their own record in the prompt "
                                           "(grounded examples), never closed book; not also in kinds; null = none")
    seed: int = key(3407, "seed of the samples, the questions, LoRA's initialisation and the data order")

    # How
    backend: str = key("auto", "auto: unsloth when CUDA is there, else hf (transformers + PEFT)")
    load_in_4bit: bool = key(True, "QLoRA: a 4-bit base; CUDA only (bitsandbytes), ignored on CPU")
    precision: str = key("auto", "auto: bf16 where the GPU supports it, else fp16; fp32 on CPU")
    gradient_checkpointing: bool | str = key(AUTO, "recompute activations in the backward pass (less memory, slower); "
                                             "auto: the fewest layers the card's memory needs (docs/training.md)")
    padding_free: bool = key(True, "unsloth backend: flatten each batch, no padding tokens")
    varlen_attention: bool = key(True, "one variable-length attention call a layer where CUDA allows "
                                 "(tc3/attention.py)")
    dataset_num_proc: int | None = key(None, "processes that tokenize the data; null = one")

    # Length: null derives it from the tokenized train examples (percentile, capped)
    max_length: int | None = key(None, "tokens an example may hold; null derives it from the data")
    max_length_percentile: float = key(99.0, "with max_length null: percentile of the tokenized train lengths")
    max_length_cap: int = key(1024, "with max_length null: the most it may be")
    overlong: str = key("trim", "an example over max_length: trim its description at a word boundary, or drop it")

    # Optimisation
    epochs: float = key(1.0, "passes over the train sample")
    max_steps: int | None = key(None, "optimizer steps; when set, overrides epochs")
    per_device_batch_size: int | str = key(AUTO, "examples a device takes a step; auto: the fastest that fits the "
                                           "card, with the accumulation, for tokens_per_step")
    gradient_accumulation_steps: int | str = key(AUTO, "batches summed into one optimizer step; auto: "
                                                 "tokens_per_step over the batch")
    tokens_per_step: int = key(24000, "with a batch or accumulation auto: tokens an optimizer step aims at, over "
                               "every process")
    learning_rate: float = key(2e-4, "peak learning rate")
    lr_scheduler: str = key("linear", "learning-rate schedule after the warmup")
    warmup_ratio: float = key(0.03, "share of the steps that warm the learning rate up")
    weight_decay: float = key(0.01, "decoupled weight decay")
    optimizer: str = key("adamw_8bit", "the optimizer (8-bit ones need CUDA)")
    max_grad_norm: float = key(1.0, "gradients are clipped to this norm")
    neftune_noise_alpha: float | None = key(None, "NEFTune: noise on the input embeddings while training (e.g. 5)")

    # LoRA
    lora_r: int = key(32, "LoRA rank")
    lora_alpha: int = key(64, "LoRA scale numerator: the update is scaled by alpha / r")
    lora_dropout: float = key(0.0, "dropout on the LoRA inputs")
    lora_target_modules: list[str] = key(LLAMA_PROJECTIONS, "the linear layers that get LoRA adapters")

    # Bookkeeping
    logging_steps: int = key(10, "optimizer steps between loss lines")
    eval_steps: int = key(100, "optimizer steps between evaluations")
    save_steps: int = key(100, "optimizer steps between checkpoints")
    save_total_limit: int = key(3, "checkpoints kept (the oldest go first)")
    report_to: str = key("none", "experiment tracking: tensorboard (<output_dir>/runs), trackio, mlflow, wandb")

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
    """(the type of field `key` without None and without the `auto` of AUTO_KEYS, whether it may be null)."""
    expected = _TYPES[key]
    if isinstance(expected, types.UnionType):
        others = [t for t in typing.get_args(expected) if t is not type(None) and not (key in AUTO_KEYS and t is str)]
        return others[0], type(None) in typing.get_args(expected)
    return expected, False


def type_name(key: str) -> str:
    """How the value of field `key` is written: `int`, `float or null`, `bool (true or false)`, ..."""
    base, optional = _field_type(key)
    name = {bool: "bool (true or false)", int: "int", float: "float", str: "str"}.get(base, "a list of names (a,b,c)")
    return name + (" or null" if optional else "") + (" or auto" if key in AUTO_KEYS else "")


def _type_error(key: str, got: str) -> ConfigError:
    return ConfigError(f"{key} must be {type_name(key)}, got {got}")


def _written(value) -> str:
    """A default as it is written in a config file or an override."""
    if isinstance(value, list):
        return ",".join(value)
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def key_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default as written, meaning) of every config field, in the order of TrainConfig; the type of a
    key with a fixed set of values (CHOICES) lists them."""
    defaults = TrainConfig()
    rows = []
    for name, f in FIELDS.items():
        kind = f"one of {', '.join(CHOICES[name])}" if name in CHOICES else type_name(name)
        kind = kind.replace(" (true or false)", "").replace("a list of names (a,b,c)", "list (a,b,c)")
        rows.append((name, kind, _written(getattr(defaults, name)), f.metadata["about"]))
    return rows


def keys_help() -> str:
    """The config keys as `tc3-train --help` lists them: `key (type, default D)`, then its meaning indented."""
    return "\n".join(f"  {k} ({t}; default {d})\n      {about}" for k, t, d, about in key_rows())


def keys_markdown() -> str:
    """The config keys as docs/training.md's table (key, type, default, meaning)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | `{d}` | {about} |" for k, t, d, about in key_rows()]
    return "\n".join(lines)


def parse_value(key: str, text: str):
    """`text`, an override's value or a YAML scalar as written, read as the type of field `key`.

    A str field takes the text exactly as it is (`2024_06_01`, `Describe: {title}`); `auto` where the key is one of
    AUTO_KEYS; bool: true/false, yes/no, on/off; int and float as Python reads them (`100_000`, `5e-3`), finite; a list: names split at commas or a
    YAML flow list `[a, b]`; `null`, `none` or `~` where the field may be null. Raises ConfigError naming the key
    and the type expected.
    """
    base, optional = _field_type(key)
    word = text.strip()
    if optional and word.lower() in NULL_WORDS:
        return None
    if key in AUTO_KEYS and word.lower() == AUTO:
        return AUTO
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
    """A ConfigError naming every unknown key in `keys`, each with the closest valid key when one is close."""
    unknown = sorted(set(keys) - FIELDS.keys())
    if unknown:
        named = []
        for name in unknown:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            named.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(named)} in {where}; "
                          "tc3-train --help lists the keys")


def _validate(config: TrainConfig) -> None:
    for key, allowed in CHOICES.items():
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}")
    for key in POSITIVE:
        value = getattr(config, key)
        if value is not None and value != AUTO and value <= 0:
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
    for key, named in (("kinds", config.kinds), ("grounded_kinds", config.grounded_kinds)):
        if named is None:
            continue
        from tc3._rust_clean import CONTENT_KINDS  # the engine names the kinds; loaded only when asked for

        unknown = [k for k in named if k not in CONTENT_KINDS] or ([] if named else ["nothing"])
        if unknown:
            raise ConfigError(f"{key}: {', '.join(unknown)} is not a content kind (choose from {', '.join(CONTENT_KINDS)})")
    if config.grounded_kinds and config.kinds is None:
        raise ConfigError(f"grounded_kinds ({', '.join(config.grounded_kinds)}) needs kinds to name the closed-book "
                          "kinds; to train every kind closed book, set grounded_kinds=null with kinds=null")
    both = sorted(set(config.grounded_kinds or ()) & set(config.kinds or ()))
    if both:
        raise ConfigError(f"grounded_kinds: {', '.join(both)} is also trained closed book (kinds); leave it out of "
                          "kinds")
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


SHIPPED = files("tc3") / "configs"  # the configs that come with tc3, used by name: `--config llama3-8b-qlora`


def shipped_configs() -> dict[str, str]:
    """Name -> first comment line (what it is for) of each shipped config, sorted by name."""
    out = {}
    for item in sorted(SHIPPED.iterdir(), key=lambda item: item.name):
        if item.name.endswith(".yaml"):
            first = item.read_text(encoding="utf-8").splitlines()[0]
            out[item.name.removesuffix(".yaml")] = first.lstrip("# ").strip() if first.startswith("#") else ""
    return out


def config_path(name_or_path: str | Path) -> Path:
    """The config file meant by `name_or_path`: an existing file, else the shipped config of that name (with or
    without .yaml). Raises ConfigError, naming the shipped configs, when it is neither."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(".yaml")
    if name in shipped_configs():
        return Path(str(SHIPPED / f"{name}.yaml"))
    raise ConfigError(f"config {name_or_path} not found: neither a file nor a shipped config "
                      f"({', '.join(shipped_configs())})")


def _read_file(path: Path) -> dict:
    """The typed values of a YAML config file, each read by its field's type (see `parse_value`)."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a YAML config: not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode) or not all(isinstance(k, yaml.ScalarNode) for k, _ in root.value):
        raise ConfigError(f"{path} must be a mapping of key: value")
    _check_keys([k.value for k, _ in root.value], str(path))
    return {k.value: _node_value(k.value, v) for k, v in root.value}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file (a path or a shipped config's name: `config_path`), then the `key=value`
    overrides; every key and value checked.

    Each value is read by the type of its field (`parse_value`): a str field takes the text exactly as typed.
    Raises ConfigError (one line) on a missing file, bad YAML, an unknown key, a wrong type or a bad value.
    """
    values = _read_file(config_path(path)) if path is not None else {}
    pairs = [split_override(item) for item in overrides]
    _check_keys([key for key, _ in pairs], "the command line")
    values.update((key, parse_value(key, text)) for key, text in pairs)
    config = TrainConfig(**values)
    _validate(config)
    return config
