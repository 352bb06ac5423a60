"""`train`: a run set up (tc3.train.trainer.build_run), trained, and its final files written whole; `dry_run`: what a
run would do, without loading the model's weights or training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tc3.config import ConfigError, TrainConfig
from tc3.layout import RunDir
from tc3.train.checkpoints import checkpoint_step, publish_final
from tc3.train.distributed import say
from tc3.train.examples import (check_some_fit, describe_fits, describe_token_rows, measure_lengths,
                                render_example)
from tc3.train.trace import tracing, write_trace
from tc3.train.trainer import Run, build_run, save_plan


def final_eval_loss(trainer) -> float:
    """Eval loss at the last step: the one logged there, or a fresh evaluation when the last step was not one."""
    step = trainer.state.global_step
    logged = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == step]
    return logged[-1] if logged else trainer.evaluate()["eval_loss"]


def final_metrics(run: Run, result) -> dict:
    """metrics.json of a finished run. Collectives: every process calls it (the totals are the whole run's, all
    processes, across --resume)."""
    trainer, plan = run.trainer, run.plan
    trained_tokens, train_loss = run.totals.total(), run.totals.mean_loss(result.global_step)
    session_tokens = trained_tokens - run.totals.base_tokens
    return {
        "train_loss": round(train_loss, 4),
        "global_step": result.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        "eval_loss": round(final_eval_loss(trainer), 4),
        "train_examples": len(trainer.train_dataset),
        "eval_examples": len(trainer.eval_dataset),
        "max_length": plan.max_length,
        "token_lengths": run.lengths["stats"],
        "examples_fit_max_length": run.fits,
        "trained_template_tokens": run.tokenizer.convert_ids_to_tokens(run.token_rows),
        "backend": plan.backend,
        "attention": plan.attention,
        "trained_tokens": trained_tokens,
        "tokens_per_s": round(session_tokens / run.totals.busy_s, 1) if run.totals.busy_s else None,
        "world_size": plan.world_size,
        "global_batch_size": plan.global_batch,
        **speed_metrics(run, session_tokens / run.totals.busy_s if run.totals.busy_s else None),
    }


def speed_metrics(run: Run, tokens_per_s: float | None) -> dict:
    """How the run fitted the card: the checkpointing and batch chosen and why, the predicted and measured peak
    (GB = 1e9 bytes, torch's max allocated), and MFU against the measured matmul rate and the datasheet's peak
    (tc3.train.speed.mfu_both; CUDA only)."""
    import torch

    from tc3.train import card, speed

    plan = run.plan
    out = {"speed_choice": plan.speed_choice, "checkpointed_layers": plan.checkpointed_layers,
           "predicted_peak_gb": plan.predicted_peak_gb}
    if not plan.on_cuda:
        return out
    out["peak_gb"] = round(torch.cuda.max_memory_allocated() / speed.GB, 2)
    if tokens_per_s and run.shape is not None:
        measured = card.matmul_tflops()["tflops"]
        out["mfu"] = speed.mfu_both(run.shape.params(), tokens_per_s, card.device_name(), measured)
    return out


def train(config: TrainConfig, resume: bool = False, callbacks=()) -> dict:
    """Fine-tune as `config` says; returns the final metrics. Writes adapter, tokenizer, config, plan, log and model
    card to the output dir (tc3.layout.RunDir). `callbacks`: extra transformers TrainerCallbacks."""
    run, result = fit_first_step(lambda attempt, options: build_run(config, resume, callbacks, attempt, options))
    trainer = run.trainer
    if tracing():
        write_trace(trainer)
    metrics = final_metrics(run, result)  # every process, before the main one goes on alone
    write_final(run, metrics)
    trainer.args.distributed_state.wait_for_everyone()  # no process returns before the output dir is complete
    return metrics


def fit_first_step(build):
    """(the run, its train() result): `build(attempt, options)` (a tc3.train.trainer.Run) trained; an out-of-memory
    error at the first step (global step 0) frees that run and builds the next option of `run.options`, with one
    line on the log. ConfigError (one line) when it comes later, with several processes, or with no option left."""
    import gc

    import torch

    run = build(0, None)
    while True:
        if torch.cuda.is_available():  # the peak metrics.json reports is this attempt's
            torch.cuda.reset_peak_memory_stats()
        try:
            return run, run.trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
        except torch.OutOfMemoryError:
            step, following, described = run.trainer.state.global_step, run.next_option, run.describe(run.option)
            first = checkpoint_step(run.resume_from) if run.resume_from else 0  # this session's first step
            if step > first or following is None or run.plan.world_size > 1:
                raise ConfigError(f"out of memory at step {step + 1} with {described}: set gradient_checkpointing and "
                                  "per_device_batch_size to auto, or lower per_device_batch_size") from None
        attempt, options = run.attempt + 1, run.options
        say(f"tc3-train: out of memory at the first step with {described}; trying {run.describe(following)}")
        del run
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        run = build(attempt, options)


def write_final(run: Run, metrics: dict) -> None:
    """The final adapter, tokenizer, config, plan, metrics and card, staged then moved into the output dir. Every
    process takes part in saving (the Trainer writes from the main one); the rest is the main one's alone."""
    from tc3.model_card import write_model_card

    trainer = run.trainer
    main = trainer.args.should_save
    output_dir = Path(run.config.output_dir)
    staging = output_dir / RunDir.STAGING
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if not main:
        return
    (staging / RunDir.TRAINING_ARGS).unlink(missing_ok=True)  # a pickle; the resolved config says it all
    run.tokenizer.save_pretrained(str(staging))
    save_plan(staging, run.config, run.plan)
    (staging / RunDir.METRICS).write_text(json.dumps(metrics, indent=2))
    write_model_card(staging, run.config, metrics, plan=run.plan)
    publish_final(staging, output_dir)


def dry_run(config: TrainConfig) -> None:
    """Print the resolved config and plan (with the gradient checkpointing and batch chosen for this machine's card,
    and their predicted peak), dataset sizes, token-length statistics, what max_length does to the examples, the
    template tokens whose rows will be trained, the attention path and three rendered examples."""
    from dataclasses import replace

    from tc3.data import tokenize_examples, training_splits
    from tc3.models import load_source, model_dir
    from tc3.prompts import load_tokenizer
    from tc3.template_tokens import rows_to_train_on_disk
    from tc3.train import card
    from tc3.train.model import base_shape, prepare_environment
    from tc3.train.plan import resolve_plan, resolved_config, speed_options, with_option

    prepare_environment(config, "hf")  # the tokenizer alone: no backend is loaded
    plan, _ = resolve_plan(config)
    train, evaluation = training_splits(config)
    tokenizer = load_tokenizer(load_source(config.model))
    lengths = measure_lengths(config, tokenizer, train)
    plan = replace(plan, max_length=lengths["max_length"])
    options, reason = speed_options(config, plan, lengths["stats"]["mean"], base_shape(config), card.free_bytes())
    plan = with_option(plan, options[0], reason)
    print("# resolved config\n" + resolved_config(config, plan).to_yaml())
    print("# plan\n" + json.dumps(plan.to_dict(), indent=2))
    print(f"# data: {len(train)} train examples, {len(evaluation)} eval examples from {config.data}")
    print(f"# token lengths (sample of {lengths['stats']['count']}): {json.dumps(lengths['stats'])}")
    for name, split in (("train", train), ("eval", evaluation)):
        fits = tokenize_examples(split, tokenizer, plan.max_length, config.overlong, config.dataset_num_proc)[1]
        print(f"# max_length {plan.max_length}, {name}: {describe_fits(fits, config)}")
        check_some_fit(name, fits, plan.max_length)
    token_rows = rows_to_train_on_disk(model_dir(config.model), tokenizer)
    print(f"# template token rows: {describe_token_rows(tokenizer, token_rows)}")
    print(f"# backend {plan.backend}, attention: {plan.attention}")
    print(f"# gradient checkpointing and batch: {reason}")
    for i in range(min(3, len(train))):
        print(f"\n# example {i + 1}\n{render_example(tokenizer, train[i])}")
