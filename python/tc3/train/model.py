"""The model a run trains: the environment the libraries read at import, then the base loaded by one of the two
backends (unsloth, or hf: transformers + PEFT, bitsandbytes 4-bit on CUDA) with the same LoRA settings, its template
token rows fitted and trained."""

from __future__ import annotations

import importlib
import importlib.util
import os

from tc3.config import ConfigError, TrainConfig
from tc3.models import check_model_ref, fit_embeddings, go_offline_if_possible, is_quantized, load_source
from tc3.runtime import torch_dtype
from tc3.template_tokens import expose_head_bias, make_rows_trainable, trainable_token_indices
from tc3.kernels import keep_unchecked_layers
from tc3.train.plan import TrainPlan


def prepare_environment(config: TrainConfig, backend: str) -> bool:
    """Environment the HF libraries and unsloth read at import: must run before any of them is imported.
    Returns whether the run is offline."""
    check_model_ref(config.model)
    offline = go_offline_if_possible(config.model)
    if backend == "unsloth":
        os.environ["UNSLOTH_DISABLE_STATISTICS"] = "1"
        if config.padding_free:  # unsloth would otherwise measure and may pick padded batches on its own
            os.environ["UNSLOTH_PADDING_CHOICE"] = "padding_free"
        else:
            os.environ["UNSLOTH_DISABLE_AUTO_PADDING_FREE"] = "1"
        import unsloth  # noqa: F401  (first, so that it patches transformers and TRL before they load)
    return offline


def base_shape(config: TrainConfig):
    """The base model's tc3.train.speed.ModelShape, read from its config.json (a language model's own config inside
    a multimodal one); None when it cannot be read or lacks a Llama-like field."""
    from transformers import AutoConfig

    from tc3.train.speed import ModelShape

    try:
        values = AutoConfig.from_pretrained(load_source(config.model)).to_dict()
        return ModelShape.from_config(values.get("text_config") or values)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lora_settings(config: TrainConfig) -> dict:
    """The LoRA settings both backends give PEFT's LoraConfig (unsloth passes them on)."""
    return {"r": config.lora_r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
            "target_modules": config.lora_target_modules, "bias": "none"}


def set_seed(seed: int) -> None:
    import transformers

    transformers.set_seed(seed)


def fit_template_rows(model, tokenizer) -> list[int]:
    """Resize the embeddings to the tokenizer, then initialise the template tokens' untrained or new rows (mean of
    the trained rows); returns their ids, to be trained."""
    from tc3.template_tokens import embedding_matrices, initialise_rows, rows_to_train

    rows_before = model.get_input_embeddings().weight.shape[0]
    fit_embeddings(model, tokenizer)
    token_rows = rows_to_train(tokenizer, embedding_matrices(model), rows_before)
    initialise_rows(model, token_rows)
    return token_rows


def load_model(config: TrainConfig, plan: TrainPlan, tokenizer, offline: bool, attn_implementation: str | None):
    """(PEFT model, tokenizer, trained template token ids) by the plan's backend. The hf backend trains with
    `tokenizer` (the one the examples were tokenized with); unsloth brings its own."""
    if plan.backend == "unsloth":
        return load_unsloth(config, plan, offline)
    return load_hf(config, plan, tokenizer, attn_implementation)


def _check_unsloth_data_parallel() -> None:
    """unsloth runs data parallel under torchrun / accelerate launch since it has loader_utils.prepare_device_map
    (one whole model a process); older releases stop training on several GPUs. Verified on CPU only (hf)."""
    if importlib.util.find_spec("unsloth.models.loader_utils") is None or not hasattr(
        importlib.import_module("unsloth.models.loader_utils"), "prepare_device_map"
    ):
        raise ConfigError(
            "this unsloth release cannot train on several processes (no data-parallel support): install "
            "'tc3[gpu]' (unsloth 2026.10.9) or use backend=hf"
        )


def load_unsloth(config: TrainConfig, plan: TrainPlan, offline: bool):
    import torch
    from unsloth import FastLanguageModel

    from tc3.prompts import ensure_chat_template

    kwargs = {}
    if plan.world_size > 1:
        _check_unsloth_data_parallel()
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # this process's GPU (set from LOCAL_RANK)
    set_seed(config.seed)  # before anything draws a random number (new embedding rows, LoRA's A matrices)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=load_source(config.model),
        max_seq_length=plan.max_length,
        dtype=torch_dtype(plan.precision),
        load_in_4bit=config.load_in_4bit,
        local_files_only=offline,
        **kwargs,
    )
    ensure_chat_template(tokenizer)
    token_rows = fit_template_rows(model, tokenizer)
    # unsloth hands keyword arguments it does not name on to PEFT's LoraConfig (FastLanguageModel.get_peft_model's
    # own signature is *args, **kwargs): only these rows train, never whole 128k-row embedding matrices
    extra = {"trainable_token_indices": trainable_token_indices(model, token_rows)} if token_rows else {}
    model = FastLanguageModel.get_peft_model(
        model,
        **lora_settings(config),
        use_gradient_checkpointing="unsloth" if plan.checkpointing else False,
        random_state=config.seed,
        **extra,
    )
    keep_unchecked_layers(model, plan.checkpointed_layers)
    make_rows_trainable(model, token_rows)
    expose_head_bias(model)
    return model, tokenizer, token_rows


def _hf_load_kwargs(config: TrainConfig, plan: TrainPlan, attn_implementation: str | None) -> dict:
    """from_pretrained's arguments on the hf backend: dtype, attention, this process's GPU, 4-bit quantization."""
    import torch
    from transformers import BitsAndBytesConfig

    dtype = torch_dtype(plan.precision)
    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if plan.on_cuda:  # under a launcher, process_state has made this process's own GPU (LOCAL_RANK) the current one
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if plan.on_cuda and config.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return kwargs


def load_hf(config: TrainConfig, plan: TrainPlan, tokenizer, attn_implementation: str | None = None):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM

    source = load_source(config.model)
    if not plan.on_cuda and is_quantized(AutoConfig.from_pretrained(source)):
        raise ConfigError(
            f"{config.model} is stored quantized (bitsandbytes), which needs CUDA: on CPU use its 16-bit "
            "original (for unsloth's ids, the id without -bnb-4bit)"
        )
    set_seed(config.seed)  # before anything draws a random number (new embedding rows, LoRA's A matrices)
    kwargs = _hf_load_kwargs(config, plan, attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    token_rows = fit_template_rows(model, tokenizer)
    if "quantization_config" in kwargs:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.checkpointing)
    lora = LoraConfig(**lora_settings(config), task_type="CAUSAL_LM",
                      trainable_token_indices=trainable_token_indices(model, token_rows))
    model = get_peft_model(model, lora)
    keep_unchecked_layers(model, plan.checkpointed_layers)
    make_rows_trainable(model, token_rows)
    expose_head_bias(model)
    return model, tokenizer, token_rows
