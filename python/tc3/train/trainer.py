"""A run set up to train: the plan resolved, the examples tokenized, the model loaded and TRL's SFTTrainer made
(`build_run`), in that order, each step reading what the step before resolved."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tc3.config import ConfigError, TrainConfig
from tc3.layout import RunDir
from tc3.outputs import claim_dir
from tc3.train.checkpoints import RunTotals, check_output_dir, make_callbacks, start_record
from tc3.train.distributed import check_processes_agree, launched_world_size, process_state, say
from tc3.train.examples import describe_fits, describe_token_rows, tokenized_splits
from tc3.train.model import base_shape, load_model, prepare_environment
from tc3.train.plan import TrainPlan, resolve_plan, resolved_config, speed_options, with_option
from tc3.train.trace import trace_training_steps, tracing

TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "mlflow": ("mlflow",),
                    "wandb": ("wandb",)}


def check_tracker(config: TrainConfig) -> None:
    """report_to names a tracker whose package is installed (else transformers fails at the first log)."""
    packages = TRACKER_PACKAGES.get(config.report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise ConfigError(f"report_to {config.report_to} needs the {packages[0]} package: pip install {packages[0]}")


@dataclass
class Run:
    """A trainer ready to start, and what the run resolved on the way."""

    trainer: object
    tokenizer: object
    config: TrainConfig  # as run: tc3.train.plan.resolved_config
    plan: TrainPlan  # with max_length and the attention path the run uses
    lengths: dict
    resume_from: Path | None
    fits: dict  # split -> {"whole", "trimmed", "dropped"} example counts under max_length
    token_rows: list[int]  # template token ids whose embedding rows are trained
    totals: RunTotals
    shape: object  # the base's tc3.train.speed.ModelShape, or None
    options: list  # tc3.train.speed.Option: the settings to try in order (`attempt`: the one this run has)
    attempt: int = 0

    @property
    def option(self):
        """The settings this run has: `options[attempt]`."""
        return self.options[self.attempt]

    @property
    def next_option(self):
        """The settings to try after an out-of-memory error at the first step, or None."""
        return self.options[self.attempt + 1] if self.attempt + 1 < len(self.options) else None

    def describe(self, option) -> str:
        """`option` (this run's or another) in words, for this model and backend."""
        return option_words(option, self.shape, self.backend)

    @property
    def backend(self) -> str:
        return self.plan.backend

    @property
    def attention(self) -> str:
        return self.plan.attention


def sft_args(config: TrainConfig, plan: TrainPlan, output_dir: Path, varlen: bool):
    """TRL's SFTConfig of a run: the schedule from the config, every resolved value from the plan. `varlen`: the hf
    backend's padding-free batches with variable-length attention."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=plan.per_device_batch,
        per_device_eval_batch_size=plan.per_device_batch,
        gradient_accumulation_steps=plan.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=config.weight_decay,
        optim=plan.optimizer,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=not plan.on_cuda,
        # unsloth brings its own checkpointing (set in get_peft_model); PEFT needs the non-reentrant kind
        gradient_checkpointing=plan.checkpointing and plan.backend == "hf",
        gradient_checkpointing_kwargs={"use_reentrant": False},
        # the examples come tokenized and fitted to max_length (tokenize_examples); TRL refuses a max_length with
        # padding-free batches, which it cannot enforce there
        max_length=None if varlen else plan.max_length,
        completion_only_loss=True,  # loss on the description only, never on the prompt
        packing=False,
        # hf backend with variable-length attention: one flat row a batch. Left unset otherwise: unsloth turns its
        # own padding-free batching on only where `padding_free` is unset.
        **({"padding_free": True} if varlen else {}),
        dataset_num_proc=config.dataset_num_proc,
        logging_steps=config.logging_steps,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient each step: skip DDP's graph search
        report_to=config.report_to,
        neftune_noise_alpha=config.neftune_noise_alpha,
    )


def start_processes(plan: TrainPlan, resume_from: Path | None):
    """(accelerate's process state, the plan with its world size), made after prepare_environment (accelerate
    imports the Hub client); the plan said on the log."""
    state = process_state(plan.on_cuda)
    plan = dataclasses.replace(plan, world_size=state.num_processes)
    if resume_from and plan.world_size > 1 and not plan.on_cuda:
        # transformers maps the optimizer state to the process's device, "cpu:0" on CPU, which torch.load rejects
        raise ConfigError("--resume with several processes needs CUDA (on CPU transformers cannot reload optimizers)")
    for note in plan.notes:
        say(f"tc3-train: {note}")
    return state, plan


def option_words(option, shape, backend: str) -> str:
    """A tc3.train.speed.Option in words, for a base of `shape` (its ModelShape, or None) under `backend`."""
    return option.describe(shape and shape.layers, backend == "unsloth")


def fit_to_card(config: TrainConfig, plan: TrainPlan, lengths: dict, attempt: int, options: list | None):
    """(the plan with its checkpointing, batch and accumulation, the options to try in order, the base's shape):
    option `attempt` of `options` (made here when None: tc3.train.plan.speed_options on this process's GPU). The
    choice and the global batch said on the log."""
    from tc3.train import card

    shape = base_shape(config)
    if options is None:
        options, reason = speed_options(config, plan, lengths["stats"]["mean"], shape, card.free_bytes())
    else:
        reason = f"after out of memory at the first step: {option_words(options[attempt], shape, plan.backend)}"
    plan = with_option(plan, options[attempt], reason)
    say(f"tc3-train: gradient checkpointing and batch: {reason}")
    say(
        f"tc3-train: {plan.world_size} process(es); global batch {plan.global_batch} sequences an optimizer step "
        f"(per_device_batch_size {plan.per_device_batch} x gradient_accumulation_steps "
        f"{plan.gradient_accumulation} x {plan.world_size})"
    )
    return plan, options, shape


def build_run(config: TrainConfig, resume: bool = False, callbacks=(), attempt: int = 0, options=None) -> Run:
    """Load data, model and tokenizer as `config` says and set up the SFTTrainer (nothing trained yet). `attempt`,
    `options`: the settings a run tries after an out-of-memory error (tc3.train.run.train)."""
    from tc3 import attention, kernels
    from tc3.data import content_digest
    from tc3.models import load_source
    from tc3.prompts import load_tokenizer

    plan, planned = resolve_plan(config, launched_world_size())
    check_tracker(config)
    resume_from = check_output_dir(config, resume)
    offline = prepare_environment(config, plan.backend)  # before any HF library is imported
    state, plan = start_processes(plan, resume_from)
    if not plan.on_cuda:
        kernels.use_eager_loss_off_gpu()
    tokenizer = load_tokenizer(load_source(config.model))
    data = tokenized_splits(config, tokenizer, state)
    plan = dataclasses.replace(plan, max_length=data["lengths"]["max_length"], attention=attention.apply(planned))
    plan, options, shape = fit_to_card(config, plan, data["lengths"], attempt, options)
    if plan.world_size > 1:  # auto settings too: each process chose from its own GPU's free memory
        facts = {"train": content_digest(data["train"]), "eval": content_digest(data["eval"]),
                 "max_length": plan.max_length, "per_device_batch_size": plan.per_device_batch,
                 "gradient_accumulation_steps": plan.gradient_accumulation,
                 "checkpointed_layers": plan.checkpointed_layers}
        check_processes_agree(state, facts)
    say(f"tc3-train: attention: {plan.attention}")
    model, tokenizer, token_rows = load_model(config, plan, tokenizer, offline, planned.hf_implementation)
    config = resolved_config(config, plan)
    if state.is_main_process:
        save_plan(claim_dir(Path(config.output_dir), "tc3-train"), config, plan)
        start_record(Path(config.output_dir), resume_from)
    trainer, totals = make_trainer(config, plan, model, tokenizer, data, resume_from, callbacks,
                                   varlen=planned.hf_implementation == attention.HF_VARLEN)
    say(f"tc3-train: max_length {plan.max_length}, train examples: {describe_fits(data['fits']['train'], config)}")
    say(f"tc3-train: template token rows: {describe_token_rows(tokenizer, token_rows)}")
    return Run(trainer, tokenizer, config, plan, data["lengths"], resume_from, data["fits"], token_rows, totals,
               shape, options, attempt)


def save_plan(folder: Path, config: TrainConfig, plan: TrainPlan) -> None:
    """The resolved config and the plan, written into a run dir (or its final files' staging dir)."""
    config.save(folder / RunDir.CONFIG)
    plan.save(folder / RunDir.PLAN)


def make_trainer(config: TrainConfig, plan: TrainPlan, model, tokenizer, data: dict, resume_from, callbacks,
                 varlen: bool):
    """(TRL's SFTTrainer over the tokenized splits, the run's totals): its trainable parameters in fp32, its
    placeholder card off, every step counted (and traced under TC3_TRACE_DIR)."""
    from trl import SFTTrainer

    from tc3 import kernels

    output_dir = Path(config.output_dir)
    totals = RunTotals.from_checkpoint(resume_from, output_dir / RunDir.LOG)
    trainer = SFTTrainer(
        model=model,
        args=sft_args(config, plan, output_dir, varlen),
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        processing_class=tokenizer,
        callbacks=[*make_callbacks(output_dir / RunDir.LOG, totals), *callbacks],
    )
    kernels.trainable_in_fp32(trainer.model)
    totals.watch(trainer)
    kernels.no_placeholder_card(trainer)
    if tracing():
        trace_training_steps(trainer)
    return trainer, totals
