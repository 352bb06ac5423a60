"""QLoRA / LoRA fine-tuning with TRL's SFTTrainer on conversational prompt/completion pairs.

Two backends share everything but model loading: `unsloth` (CUDA: FastLanguageModel, its gradient checkpointing and
padding-free batching) and `hf` (transformers + PEFT; bitsandbytes 4-bit on CUDA, plain LoRA on CPU).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tc3.config import ConfigError, TrainConfig
from tc3.models import check_model_ref, fit_embeddings, go_offline_if_possible, load_source, model_dir
from tc3.outputs import check_dest, claim_dir, usual_modes
from tc3.template_tokens import expose_head_bias, make_rows_trainable, trainable_token_indices

CONFIG_NAME = "tc3_config.yaml"
LOG_NAME = "train_log.jsonl"
COMPLETE_MARKER = "tc3_checkpoint_complete"  # written after the Trainer has saved every file of a checkpoint
LENGTH_SAMPLE = 5000  # examples tokenized to measure the length distribution
EIGHT_BIT_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")  # bitsandbytes: CUDA only
TRACE_ENV = "TC3_TRACE_DIR"  # debugging and tests: each process writes what it trained on to <dir>/rank<N>.json


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(config: TrainConfig) -> str:
    if config.backend == "hf":
        return "hf"
    unsloth_usable = cuda_available() and importlib.util.find_spec("unsloth") is not None
    if config.backend == "unsloth" and not unsloth_usable:
        raise ConfigError("backend unsloth needs CUDA and the unsloth package (pip install 'tc3[gpu]'); use backend=hf")
    return "unsloth" if unsloth_usable else "hf"


TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "mlflow": ("mlflow",),
                    "wandb": ("wandb",)}


def check_tracker(config: TrainConfig) -> None:
    """report_to names a tracker whose package is installed (else transformers fails at the first log)."""
    packages = TRACKER_PACKAGES.get(config.report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise ConfigError(f"report_to {config.report_to} needs the {packages[0]} package: pip install {packages[0]}")


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


def mixed_precision(config: TrainConfig, on_cuda: bool) -> str:
    """bf16 / fp16 / fp32: bf16 where the GPU has it, fp32 on CPU (CPU half precision is slow and lossy)."""
    if config.precision != "auto":
        return config.precision
    if not on_cuda:
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


# ---------------------------------------------------------------------------------------------------------------------
# Several processes (torchrun / accelerate launch: one process a GPU, data parallel)


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun and accelerate launch set WORLD_SIZE); 1 when run alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_state(on_cuda: bool):
    """accelerate's process state, made before any data or model is loaded. Under a launcher it joins the process
    group (nccl on CUDA, gloo on CPU) and pins this process to its own GPU (LOCAL_RANK); alone it is one process."""
    from accelerate import PartialState

    return PartialState(cpu=not on_cuda)


def say(message: str) -> None:
    """Print once: on the main process only (every process runs the same code)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def check_processes_agree(state, facts: dict) -> None:
    """Every process must hold the same sample, in the same order, and the same max_length: the sampler gives each
    process its share of one index order, so processes holding different data would overlap or skip examples
    without any error. All processes raise together (no process is left waiting)."""
    if state.num_processes == 1:
        return
    from accelerate.utils import gather_object

    gathered = gather_object([facts])
    differing = sorted(k for k in facts if any(g[k] != gathered[0][k] for g in gathered))
    if differing:
        raise ConfigError(f"the {state.num_processes} processes disagree on {', '.join(differing)}: {gathered}")


# ---------------------------------------------------------------------------------------------------------------------
# Data and lengths


def measure_lengths(config: TrainConfig, tokenizer, train) -> dict:
    """Token-length statistics of a seeded sample of training sequences, and the max_length the run uses."""
    from tc3.data import derive_max_length, length_stats, sample, token_lengths

    lengths = token_lengths(tokenizer, sample(train, LENGTH_SAMPLE, config.seed))
    max_length = config.max_length or derive_max_length(lengths, config.max_length_percentile, config.max_length_cap)
    return {"stats": length_stats(lengths), "max_length": max_length}


def render_example(tokenizer, row) -> str:
    """A training example as the model sees it, with the point where the loss starts marked."""
    from tc3.prompts import split_rendered

    prompt, completion = split_rendered(tokenizer, row["prompt"], row["completion"][0]["content"])
    return f"{prompt}[loss from here →]{completion}"


def describe_fits(fits: dict, config: TrainConfig) -> str:
    """One line on what max_length did to the examples of a split."""
    done = "cut at a word boundary, turn closed" if config.overlong == "trim" else "left out"
    return (f"{fits['whole']} whole, {fits['trimmed']} trimmed ({done}), {fits['dropped']} dropped "
            f"(overlong: {config.overlong}; no example loses its end token)")


def check_some_fit(name: str, fits: dict, max_length: int) -> None:
    """ConfigError when max_length left no example of a split (every one dropped): training would stop in TRL."""
    if fits["whole"] + fits["trimmed"] == 0:
        raise ConfigError(f"no {name} example fits max_length {max_length} (all {fits['dropped']} dropped, even "
                          "trimmed to a word): raise max_length, or leave it null to derive it from the data")


def describe_token_rows(tokenizer, ids: list[int] | None) -> str:
    if ids is None:
        return "not checked (the weights are not on this machine yet)"
    if not ids:
        return "none: every template token has a trained row"
    names = ", ".join(f"{token} ({i})" for token, i in zip(tokenizer.convert_ids_to_tokens(ids), ids))
    return f"{names}: untrained or new, set to the mean trained row and trained (PEFT trainable tokens)"


def dry_run(config: TrainConfig) -> None:
    """Print the resolved config, dataset sizes, token-length statistics, what max_length does to the examples,
    the template tokens whose rows will be trained, the attention path and three rendered examples."""
    from tc3 import attention
    from tc3.data import tokenize_examples, training_splits
    from tc3.prompts import load_tokenizer
    from tc3.template_tokens import rows_to_train_on_disk

    prepare_environment(config, "hf")  # the tokenizer alone: no backend is loaded
    backend = resolve_backend(config)
    train, evaluation = training_splits(config)
    tokenizer = load_tokenizer(load_source(config.model))
    lengths = measure_lengths(config, tokenizer, train)
    max_length = lengths["max_length"]
    print("# resolved config\n" + replace(config, max_length=max_length).to_yaml())
    print(f"# data: {len(train)} train examples, {len(evaluation)} eval examples from {config.data}")
    print(f"# token lengths (sample of {lengths['stats']['count']}): {json.dumps(lengths['stats'])}")
    for name, split in (("train", train), ("eval", evaluation)):
        fits = tokenize_examples(split, tokenizer, max_length, config.overlong, config.dataset_num_proc)[1]
        print(f"# max_length {max_length}, {name}: {describe_fits(fits, config)}")
        check_some_fit(name, fits, max_length)
    token_rows = rows_to_train_on_disk(model_dir(config.model), tokenizer)
    print(f"# template token rows: {describe_token_rows(tokenizer, token_rows)}")
    planned = attention.plan(backend, config.padding_free, config.varlen_attention,
                             mixed_precision(config, cuda_available()))
    print(f"# backend {backend}, attention: {planned.path}")
    for i in range(min(3, len(train))):
        print(f"\n# example {i + 1}\n{render_example(tokenizer, train[i])}")


# ---------------------------------------------------------------------------------------------------------------------
# Models


def load_unsloth(config: TrainConfig, max_length: int, precision: str, offline: bool, world_size: int = 1):
    import torch
    from unsloth import FastLanguageModel

    from tc3.prompts import ensure_chat_template

    kwargs = {}
    if world_size > 1:
        # unsloth runs data parallel under torchrun / accelerate launch since it has loader_utils.prepare_device_map
        # (one whole model a process); older releases stop training on several GPUs. Verified on CPU only (hf).
        if importlib.util.find_spec("unsloth.models.loader_utils") is None or not hasattr(
            importlib.import_module("unsloth.models.loader_utils"), "prepare_device_map"
        ):
            raise ConfigError(
                "this unsloth release cannot train on several processes (no data-parallel support): install "
                "'tc3[gpu]' (unsloth 2026.10.9) or use backend=hf"
            )
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # this process's GPU (set from LOCAL_RANK)
    set_seed(config.seed)  # before anything draws a random number (new embedding rows, LoRA's A matrices)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=load_source(config.model),
        max_seq_length=max_length,
        dtype=torch_dtype(precision),
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
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
        random_state=config.seed,
        **extra,
    )
    make_rows_trainable(model, token_rows)
    expose_head_bias(model)
    return model, tokenizer, token_rows


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


def load_hf(config: TrainConfig, precision: str, on_cuda: bool, attn_implementation: str | None = None):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    from tc3.prompts import load_tokenizer

    source = load_source(config.model)
    if not on_cuda and getattr(AutoConfig.from_pretrained(source), "quantization_config", None):
        raise ConfigError(
            f"{config.model} is stored quantized (bitsandbytes), which needs CUDA: on CPU use its 16-bit "
            "original (for unsloth's ids, the id without -bnb-4bit)"
        )
    tokenizer = load_tokenizer(source)
    set_seed(config.seed)  # before anything draws a random number (new embedding rows, LoRA's A matrices)
    dtype = torch_dtype(precision)
    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    quantized = on_cuda and config.load_in_4bit
    if on_cuda:  # under a launcher, process_state has made this process's own GPU (LOCAL_RANK) the current one
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    token_rows = fit_template_rows(model, tokenizer)
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
        trainable_token_indices=trainable_token_indices(model, token_rows),
    )
    model = get_peft_model(model, lora)
    make_rows_trainable(model, token_rows)
    expose_head_bias(model)
    return model, tokenizer, token_rows


class _EagerLogProb:
    """Stand-in for TRL's Triton `ChunkedLogProbFunction` off GPU (Triton has no CPU driver: "0 active drivers").
    Same arguments and outputs, computed with plain PyTorch ops and autograd."""

    @staticmethod
    def apply(hidden, weight, bias, labels, temperature, chunk_size, softcap, logit_scale, outputs):
        import torch.nn.functional as F

        logits = F.linear(hidden, weight, bias).float() * logit_scale
        if softcap is not None:
            logits = softcap * (logits / softcap).tanh()
        logits = logits / temperature
        log_probs = logits.log_softmax(-1)
        target = log_probs.gather(-1, labels[:, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1) if "entropy" in outputs else None
        log_sum_sq = (2 * log_probs).logsumexp(-1).detach() if "log_sum_sq_probs" in outputs else None
        mean_logits = logits.mean(-1).detach() if "mean_logits" in outputs else None
        is_top1 = (logits.argmax(-1) == labels) if "is_top1" in outputs else None
        return target, entropy, log_sum_sq, mean_logits, is_top1


def use_eager_loss_off_gpu() -> None:
    import trl.trainer.utils

    trl.trainer.utils._ChunkedLogProbFunction = _EagerLogProb


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints and logs


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint dirs whose saving finished, oldest first (a run killed while saving leaves one without marker)."""
    found = [p for p in output_dir.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


class RunTotals:
    """What the whole run has done up to now, across `--resume`: the real tokens trained on (padding excluded, all
    processes; counted from the batches the Trainer feeds, on every backend: TRL's own `num_tokens` is missing from
    unsloth's logs) and the sum of the optimizer steps' training losses (the mean over processes, as the Trainer's
    logged `loss` is). The Trainer's own `training_loss` of a resumed run divides the resumed steps' losses by all
    steps. `busy_s` is this session's wall time inside optimizer steps, this process (evaluation and checkpoint
    saving left out). Counting adds to device tensors: no host sync until a total is read at a log or save step.

    `tokens` and `loss_sum` are the totals a checkpoint recorded (`from_checkpoint`), for a resumed run."""

    def __init__(self, tokens: int = 0, loss_sum: float = 0.0):
        self.base_tokens, self.base_loss_sum = tokens, loss_sum
        self.count = 0  # this process's tokens this session: an int until the first batch, then a device tensor
        self.loss = 0.0  # this process's sum of training_step losses this session: likewise
        self.busy_s = 0.0
        self.step_start = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Path | None, log_path: Path) -> RunTotals:
        """The totals at `checkpoint` (None: a fresh run, zeros), as its marker records them. A marker from before
        they were recorded: the loss from the checkpoint's log history (exact when its step was a logging step)
        and the tokens of the last log record up to its step."""
        if checkpoint is None:
            return cls()
        marker = (checkpoint / COMPLETE_MARKER).read_text().strip()
        saved = json.loads(marker) if marker else {}
        if "tokens" in saved and "loss_sum" in saved:
            return cls(saved["tokens"], saved["loss_sum"])
        loss_sum, logged = 0.0, 0
        for entry in json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]:
            if "loss" in entry:  # the mean loss of the steps since the previous training log
                loss_sum, logged = loss_sum + entry["loss"] * (entry["step"] - logged), entry["step"]
        tokens = [r["tokens"] for r in read_log(log_path) if "tokens" in r and r["step"] <= checkpoint_step(checkpoint)]
        return cls(tokens[-1] if tokens else 0, loss_sum)

    def watch(self, trainer) -> None:
        original = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            mask = inputs.get("attention_mask")
            # padding-free batches are one flat row with no mask: every position is a real token
            self.count = self.count + (mask.sum() if mask is not None else inputs["input_ids"].numel())
            loss = original(model, inputs, *args, **kwargs)
            self.loss = self.loss + loss.detach()  # the Trainer adds these up, over accumulation, to a step's loss
            return loss

        trainer.training_step = training_step

    def total(self) -> int:
        """Tokens of the whole run so far: a collective, so every process must call it at the same point."""
        return self.base_tokens + int(_all_reduce(self.count, "sum"))

    def loss_sum(self) -> float:
        """Sum of every step's training loss so far, the whole run: a collective, like `total`."""
        return self.base_loss_sum + float(_all_reduce(self.loss, "mean"))

    def mean_loss(self, steps: int) -> float:
        """Mean training loss of the `steps` optimizer steps of the whole run: a collective, like `total`."""
        return self.loss_sum() / max(steps, 1)

    def saved(self) -> dict:
        """What a checkpoint records of the totals (`from_checkpoint` reads it back): a collective, like `total`."""
        return {"tokens": self.total(), "loss_sum": self.loss_sum()}


def _all_reduce(value, op: str):
    """`value` (a number or this process's tensor) summed, or averaged, over all processes; itself when alone."""
    import torch
    import torch.distributed as dist

    tensor = torch.as_tensor(value, dtype=torch.float64 if op == "mean" else torch.int64)
    if dist.is_available() and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        tensor = tensor.to(device).clone()  # all_reduce works in place: never on the running count itself
        dist.all_reduce(tensor)
        if op == "mean":
            tensor = tensor / dist.get_world_size()
    return tensor.item()


def read_log(log_path: Path) -> list[dict]:
    """The records of a train_log.jsonl (none when absent); a line cut short by a killed run is left out."""
    if not log_path.is_file():
        return []
    records = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def start_record(output_dir: Path, resume_from: Path | None) -> None:
    """The log (LOG_NAME) a run appends to, and its checkpoints. A fresh run starts a new log and removes the half-saved
    checkpoints of a run interrupted before its first complete one (nothing of it could be resumed; its log is not
    this run's). A resumed run keeps the records up to its checkpoint's step: the steps after it are trained again
    and logged then, once; an earlier end's summary (`train_loss`) goes too."""
    log_path, kept = output_dir / LOG_NAME, []
    records = read_log(log_path)
    if resume_from is None:
        half_saved = list(output_dir.glob("checkpoint-*"))  # none complete: check_output_dir saw to it
        for checkpoint in half_saved:
            shutil.rmtree(checkpoint)
        if records or half_saved:
            say(f"tc3-train: {output_dir} held a run stopped before its first complete checkpoint: starting afresh "
                f"(its {len(records)} log record(s) and {len(half_saved)} half-saved checkpoint(s) replaced)")
    else:
        step = checkpoint_step(resume_from)
        kept = [r for r in records if r["step"] <= step and "train_loss" not in r]
        dropped = len(records) - len(kept)
        say(f"tc3-train: resuming from {resume_from.name}; the log goes on from step {step}"
            + (f" ({dropped} record(s) after it dropped: those steps train again)" if dropped else ""))
    staged = log_path.with_name(log_path.name + ".partial")
    staged.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(staged, log_path)


def make_callbacks(log_path: Path, totals: RunTotals):
    from transformers import TrainerCallback

    class MarkCompleteCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            # Every process writes its own RNG state into the checkpoint: mark it only once all of them are done.
            args.distributed_state.wait_for_everyone()
            saved = totals.saved()  # every process takes part
            if state.is_world_process_zero:
                checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                (checkpoint / "README.md").unlink(missing_ok=True)  # PEFT's placeholder card ("Model ID")
                usual_modes(checkpoint)
                (checkpoint / COMPLETE_MARKER).write_text(json.dumps({"world_size": args.world_size, **saved}))

    class JsonLinesLog(TrainerCallback):
        """step, loss, eval loss, learning rate, tokens (the whole run's, all processes, padding excluded), tokens/s
        and seconds a step over the steps since the last training log, peak GPU memory, and at the end the whole
        run's mean train loss: one JSON object a log event."""

        def __init__(self):
            self.last = (0.0, 0, 0)  # (busy seconds, tokens, step) at the previous training log

        def on_step_begin(self, args, state, control, **kwargs):
            totals.step_start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            totals.busy_s += time.monotonic() - totals.step_start

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = (0.0, totals.base_tokens, state.global_step)  # a resumed run counts from where it starts

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            import torch

            record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
            if "loss" in logs:  # every process logs here: the token count is summed over them
                now = (totals.busy_s, totals.total(), state.global_step)
                record["tokens"] = now[1]
                if now[0] > self.last[0] and now[2] > self.last[2]:
                    record["tokens_per_s"] = round((now[1] - self.last[1]) / (now[0] - self.last[0]), 1)
                    record["s_per_step"] = round((now[0] - self.last[0]) / (now[2] - self.last[2]), 3)
                self.last = now
            if "train_loss" in logs:  # the Trainer's own counts only the steps since a resume
                logs = {**logs, "train_loss": totals.mean_loss(state.global_step)}
            if not state.is_world_process_zero:
                return
            for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy", "train_loss"):
                if key in logs:
                    record[key] = logs[key]
            if len(record) == 2:  # nothing this log knows about (e.g. runtime figures only)
                return
            if torch.cuda.is_available():
                record["gpu_max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            with log_path.open("a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")

    return [MarkCompleteCheckpoint(), JsonLinesLog()]


def check_output_dir(config: TrainConfig, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses to mix a new run into an old output dir."""
    output_dir = Path(config.output_dir)
    check_dest(output_dir, "tc3-train")  # a folder of the user's, or of another command, is never trained into
    saved = output_dir / CONFIG_NAME
    if not resume:
        # a run that died before its first checkpoint was complete left nothing to resume: a fresh run replaces it
        if (output_dir / "adapter_model.safetensors").exists() or complete_checkpoints(output_dir):
            raise ConfigError(f"{output_dir} already holds a run: pass --resume, or choose another output_dir")
        return None
    if not output_dir.is_dir():
        raise ConfigError(f"--resume: {output_dir} does not exist (no run to resume): run without --resume")
    checkpoints = complete_checkpoints(output_dir)
    if not checkpoints:
        raise ConfigError(f"--resume: no complete checkpoint in {output_dir} (the run stopped before its first was "
                          "saved): run without --resume to start it again")
    from tc3.config import load_config

    before = load_config(saved).to_dict() if saved.exists() else {}
    # The schedule may be extended on resume; anything else would silently train a different run.
    ignored = {"output_dir", "epochs", "max_steps", "eval_steps", "save_steps", "save_total_limit", "logging_steps",
               "report_to"}
    if config.max_length is None:  # derived again, the same way
        ignored.add("max_length")
    changed = sorted(k for k, v in config.to_dict().items() if k not in ignored and before.get(k, v) != v)
    if changed:
        raise ConfigError(f"--resume with a config that differs from {saved} in: {', '.join(changed)}")
    marker = (checkpoints[-1] / COMPLETE_MARKER).read_text().strip()
    saved_world = json.loads(marker).get("world_size", 1) if marker else 1  # markers before world_size: 1 process
    if saved_world != launched_world_size():
        raise ConfigError(
            f"--resume: {checkpoints[-1].name} was written by {saved_world} process(es), this run has "
            f"{launched_world_size()}; the batch of a step and the data order depend on it: launch "
            f"{saved_world} process(es)"
        )
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    same_length = (
        config.max_steps == before.get("max_steps", config.max_steps)
        if config.max_steps is not None or before.get("max_steps") is not None
        else config.epochs == before.get("epochs", config.epochs)
    )
    if not same_length and config.lr_scheduler != "constant":
        # The scheduler's rate is a function of the step and the total: a new total makes it jump (linear, at the
        # end of a run: from 0 back to about half its peak).
        raise ConfigError(
            f"--resume: the {config.lr_scheduler} learning-rate schedule of {output_dir} was laid out for "
            f"{state['max_steps']} steps; a run of another length would restart it mid-way with a jump. Resume "
            "with the same max_steps and epochs, or start a new run (lr_scheduler constant can be extended)"
        )
    if same_length and state["global_step"] >= state["max_steps"]:
        raise ConfigError(f"--resume: the run in {output_dir} already reached its last step, {state['global_step']}")
    return checkpoints[-1]


def sequence_digest(ids) -> str:
    """A short digest of one token sequence."""
    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()[:16]


def lora_digest(state_dict) -> str:
    """A digest of adapter weights, by name and exact bytes: what get_peft_model_state_dict gives in memory and
    adapter_model.safetensors holds on disk digest alike."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trace_training_steps(trainer) -> None:
    """TC3_TRACE_DIR set: record the digest of every sequence this process trains on (its padding left out), to be
    written with its final adapter digest by write_trace. Padding-free batches are one flat row: a digest a batch."""
    seen = trainer.tc3_trained_sequences = []
    original = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        for i in range(ids.shape[0]):
            seen.append(sequence_digest((ids[i][mask[i].bool()] if mask is not None else ids[i]).tolist()))
        return original(model, inputs, *args, **kwargs)

    trainer.training_step = training_step


def write_trace(trainer) -> None:
    """<TC3_TRACE_DIR>/rank<N>.json: this process's world size, the sequences it trained on, every sequence of the
    training set, and the digest of its LoRA weights at the end."""
    from peft import get_peft_model_state_dict

    trace_dir = Path(os.environ[TRACE_ENV])
    trace_dir.mkdir(parents=True, exist_ok=True)
    args = trainer.args
    record = {
        "rank": args.process_index,
        "world_size": args.world_size,
        "trained": trainer.tc3_trained_sequences,
        "train_set": [sequence_digest(ids) for ids in trainer.train_dataset["input_ids"]],
        "lora_digest": lora_digest(get_peft_model_state_dict(trainer.accelerator.unwrap_model(trainer.model))),
    }
    (trace_dir / f"rank{args.process_index}.json").write_text(json.dumps(record))


def final_eval_loss(trainer) -> float:
    """Eval loss at the last step: the one logged there, or a fresh evaluation when the last step was not one."""
    step = trainer.state.global_step
    logged = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == step]
    return logged[-1] if logged else trainer.evaluate()["eval_loss"]


def publish_final(staging: Path, output_dir: Path) -> None:
    """Move the finished adapter files into the output dir, weights last: a half-written final model never looks
    complete."""
    usual_modes(staging)
    files = sorted(staging.iterdir(), key=lambda p: p.name.startswith("adapter_model"))
    for path in files:
        os.replace(path, output_dir / path.name)
    staging.rmdir()


# ---------------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class Run:
    """A trainer ready to start, and what the run resolved on the way."""

    trainer: object
    tokenizer: object
    config: TrainConfig  # with max_length resolved
    lengths: dict
    backend: str
    resume_from: Path | None
    fits: dict  # split -> {"whole", "trimmed", "dropped"} example counts under max_length
    token_rows: list[int]  # template token ids whose embedding rows are trained
    attention: str  # the attention path, in words
    totals: RunTotals


def trainable_in_fp32(model) -> None:
    """Put the trainable parameters (LoRA matrices, trainable-token rows) in fp32, the master copy the optimizer
    updates: a bf16 one loses updates under 1/256 of a weight. The token rows come in the embedding's own dtype, and
    TRL 1.15's SFTTrainer casts every trainable parameter to bf16 on a 4-bit base whatever the run's precision ("the
    PEFT adapter weights are converted to bf16", sft_trainer.py), after which an fp16 run fails in its gradient
    scaler, which cannot unscale bf16 gradients. The optimizer is made when training starts, after this."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def build_run(config: TrainConfig, resume: bool = False, callbacks=()) -> Run:
    """Load data, model and tokenizer as `config` says and set up the SFTTrainer (nothing trained yet)."""
    backend = resolve_backend(config)
    check_tracker(config)
    resume_from = check_output_dir(config, resume)
    offline = prepare_environment(config, backend)
    on_cuda = cuda_available()

    from trl import SFTConfig, SFTTrainer

    from tc3 import attention
    from tc3.data import content_digest, tokenize_examples, training_splits
    from tc3.prompts import load_tokenizer

    state = process_state(on_cuda)
    world_size = state.num_processes
    if resume_from and world_size > 1 and not on_cuda:
        # transformers maps the optimizer state to the process's device, "cpu:0" on CPU, which torch.load rejects
        raise ConfigError("--resume with several processes needs CUDA (on CPU transformers cannot reload optimizers)")
    precision = mixed_precision(config, on_cuda)
    optimizer = config.optimizer
    if not on_cuda and optimizer in EIGHT_BIT_OPTIMIZERS:
        say(f"tc3-train: {optimizer} needs CUDA (bitsandbytes); using adamw_torch on CPU")
        optimizer = "adamw_torch"
    if not on_cuda:
        use_eager_loss_off_gpu()
    global_batch = config.per_device_batch_size * config.gradient_accumulation_steps * world_size
    say(
        f"tc3-train: {world_size} process(es); global batch {global_batch} sequences an optimizer step "
        f"(per_device_batch_size {config.per_device_batch_size} x gradient_accumulation_steps "
        f"{config.gradient_accumulation_steps} x {world_size})"
    )

    tokenizer = load_tokenizer(load_source(config.model))
    with state.main_process_first(), state.local_main_process_first():  # one process fills the datasets cache
        train_set, eval_set = training_splits(config)
        lengths = measure_lengths(config, tokenizer, train_set)
        max_length = lengths["max_length"]
        # tokenized here, not by TRL, whose truncation would cut the end token off long examples
        (train_set, train_fits), (eval_set, eval_fits) = (
            tokenize_examples(split, tokenizer, max_length, config.overlong, config.dataset_num_proc)
            for split in (train_set, eval_set)
        )
    check_some_fit("train", train_fits, max_length)
    check_some_fit("eval", eval_fits, max_length)
    resolved = replace(config, max_length=max_length)
    if world_size > 1:
        facts = {"train": content_digest(train_set), "eval": content_digest(eval_set), "max_length": max_length}
        check_processes_agree(state, facts)

    planned = attention.plan(backend, config.padding_free, config.varlen_attention, precision)
    attention_path = attention.apply(planned)
    say(f"tc3-train: attention: {attention_path}")
    if backend == "unsloth":
        model, tokenizer, token_rows = load_unsloth(config, max_length, precision, offline, world_size)
    else:
        model, tokenizer, token_rows = load_hf(config, precision, on_cuda, planned.hf_implementation)

    output_dir = Path(config.output_dir)
    if state.is_main_process:
        claim_dir(output_dir, "tc3-train")
        resolved.save(output_dir / CONFIG_NAME)
        start_record(output_dir, resume_from)
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=config.weight_decay,
        optim=optimizer,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_cuda,
        # unsloth brings its own checkpointing (set in get_peft_model); PEFT needs the non-reentrant kind
        gradient_checkpointing=config.gradient_checkpointing and backend == "hf",
        gradient_checkpointing_kwargs={"use_reentrant": False},
        # the examples come tokenized and fitted to max_length (tokenize_examples); TRL refuses a max_length with
        # padding-free batches, which it cannot enforce there
        max_length=None if planned.hf_implementation == attention.HF_VARLEN else max_length,
        completion_only_loss=True,  # loss on the description only, never on the prompt
        packing=False,
        # hf backend with variable-length attention: one flat row a batch. Left unset otherwise: unsloth turns its
        # own padding-free batching on only where `padding_free` is unset.
        **({"padding_free": True} if planned.hf_implementation == attention.HF_VARLEN else {}),
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
    totals = RunTotals.from_checkpoint(resume_from, output_dir / LOG_NAME)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=[*make_callbacks(output_dir / LOG_NAME, totals), *callbacks],
    )
    trainable_in_fp32(trainer.model)
    totals.watch(trainer)
    # TRL writes a placeholder card ("fine-tuned version of [None]") into output_dir at every checkpoint; tc3 writes
    # its own card with the final adapter, and an interrupted run leaves none
    trainer.create_model_card = lambda *args, **kwargs: None
    if os.environ.get(TRACE_ENV):
        trace_training_steps(trainer)
    fits = {"train": train_fits, "eval": eval_fits}
    say(f"tc3-train: max_length {max_length}, train examples: {describe_fits(train_fits, config)}")
    say(f"tc3-train: template token rows: {describe_token_rows(tokenizer, token_rows)}")
    return Run(trainer, tokenizer, resolved, lengths, backend, resume_from, fits, token_rows, attention_path, totals)


def train(config: TrainConfig, resume: bool = False, callbacks=()) -> dict:
    """Fine-tune as `config` says; returns the final metrics. Writes adapter, tokenizer, config, log and model card
    to the output dir. `callbacks`: extra transformers TrainerCallbacks."""
    from tc3.model_card import write_model_card

    run = build_run(config, resume, callbacks)
    trainer = run.trainer
    result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    if os.environ.get(TRACE_ENV):
        write_trace(trainer)
    args = trainer.args
    # collectives of every process, before the main one goes on alone; the whole run's, across --resume
    trained_tokens, train_loss = run.totals.total(), run.totals.mean_loss(result.global_step)
    session_tokens = trained_tokens - run.totals.base_tokens
    metrics = {
        "train_loss": round(train_loss, 4),
        "global_step": result.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        "eval_loss": round(final_eval_loss(trainer), 4),
        "train_examples": len(trainer.train_dataset),
        "eval_examples": len(trainer.eval_dataset),
        "max_length": run.config.max_length,
        "token_lengths": run.lengths["stats"],
        "examples_fit_max_length": run.fits,
        "trained_template_tokens": run.tokenizer.convert_ids_to_tokens(run.token_rows),
        "backend": run.backend,
        "attention": run.attention,
        "trained_tokens": trained_tokens,
        "tokens_per_s": round(session_tokens / run.totals.busy_s, 1) if run.totals.busy_s else None,
        "world_size": args.world_size,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
    }

    # Every process takes part in saving (the Trainer writes from the main one); the rest is the main one's alone.
    main = args.should_save
    output_dir = Path(config.output_dir)
    staging = output_dir / ".final.partial"
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if main:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved config says it all
        run.tokenizer.save_pretrained(str(staging))
        run.config.save(staging / CONFIG_NAME)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_model_card(staging, run.config, metrics)
        publish_final(staging, output_dir)
    args.distributed_state.wait_for_everyone()  # no process returns before the output dir is complete
    return metrics
