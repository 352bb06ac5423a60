"""A run's record on disk, across --resume: whether an output dir may be trained into, the checkpoint to resume from,
the whole run's totals (tokens, loss) a checkpoint carries, the log, and the final files put in place whole."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tc3.config import ConfigError, TrainConfig
from tc3.layout import RunDir, checkpoint_step
from tc3.outputs import check_dest, usual_modes
from tc3.runtime import cuda_available
from tc3.train.distributed import all_reduce, launched_world_size, say
from tc3.train.plan import resolve_optimizer

COMPLETE_MARKER = RunDir.COMPLETE_MARKER
# Keys a resumed run may change: the schedule may be extended; anything else would silently train a different run.
RESUMABLE_CHANGES = {"output_dir", "epochs", "max_steps", "eval_steps", "save_steps", "save_total_limit",
                     "logging_steps", "report_to"}


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
        records = RunDir(log_path.parent).log_records()  # log_path: the run's RunDir.LOG
        tokens = [r["tokens"] for r in records if "tokens" in r and r["step"] <= checkpoint_step(checkpoint)]
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
        return self.base_tokens + int(all_reduce(self.count, "sum"))

    def loss_sum(self) -> float:
        """Sum of every step's training loss so far, the whole run: a collective, like `total`."""
        return self.base_loss_sum + float(all_reduce(self.loss, "mean"))

    def mean_loss(self, steps: int) -> float:
        """Mean training loss of the `steps` optimizer steps of the whole run: a collective, like `total`."""
        return self.loss_sum() / max(steps, 1)

    def saved(self) -> dict:
        """What a checkpoint records of the totals (`from_checkpoint` reads it back): a collective, like `total`."""
        return {"tokens": self.total(), "loss_sum": self.loss_sum()}


def start_record(output_dir: Path, resume_from: Path | None) -> None:
    """The log a run appends to, and its checkpoints. A fresh run starts a new log and removes the half-saved
    checkpoints of a run interrupted before its first complete one (nothing of it could be resumed; its log is not
    this run's). A resumed run keeps the records up to its checkpoint's step: the steps after it are trained again
    and logged then, once; an earlier end's summary (`train_loss`) goes too."""
    run = RunDir(output_dir)
    log_path, kept = run.file(RunDir.LOG), []
    records = run.log_records()
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
    """The Trainer callbacks of a run: the checkpoint marker, written once a checkpoint is whole, and the log."""
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

    return [MarkCompleteCheckpoint(), json_lines_log(log_path, totals)]


LOGGED_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy", "train_loss")


def json_lines_log(log_path: Path, totals: RunTotals):
    """A callback that writes step, loss, eval loss, learning rate, tokens (the whole run's, all processes, padding
    excluded), tokens/s and seconds a step over the steps since the last training log, peak GPU memory, and at the
    end the whole run's mean train loss: one JSON object a log event."""
    from transformers import TrainerCallback

    class JsonLinesLog(TrainerCallback):
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
            record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
            if "loss" in logs:  # every process logs here: the token count is summed over them
                self.add_speed(record, (totals.busy_s, totals.total(), state.global_step))
            if "train_loss" in logs:  # the Trainer's own counts only the steps since a resume
                logs = {**logs, "train_loss": totals.mean_loss(state.global_step)}
            if state.is_world_process_zero:
                write_record(log_path, record, logs)

        def add_speed(self, record: dict, now: tuple) -> None:
            record["tokens"] = now[1]
            if now[0] > self.last[0] and now[2] > self.last[2]:
                record["tokens_per_s"] = round((now[1] - self.last[1]) / (now[0] - self.last[0]), 1)
                record["s_per_step"] = round((now[0] - self.last[0]) / (now[2] - self.last[2]), 3)
            self.last = now

    return JsonLinesLog()


def write_record(log_path: Path, record: dict, logs: dict) -> None:
    """Append `record` with the LOGGED_KEYS of `logs` and the peak GPU memory; nothing when `logs` holds none of
    them (runtime figures only, say)."""
    import torch

    record = {**record, **{key: logs[key] for key in LOGGED_KEYS if key in logs}}
    if not any(key in record for key in LOGGED_KEYS):
        return
    if torch.cuda.is_available():
        record["gpu_max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def check_output_dir(config: TrainConfig, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses to mix a new run into an old output dir."""
    output_dir = Path(config.output_dir)
    check_dest(output_dir, "tc3-train")  # a folder of the user's, or of another command, is never trained into
    run = RunDir(output_dir)
    if not resume:
        # a run that died before its first checkpoint was complete left nothing to resume: a fresh run replaces it
        if run.file(RunDir.ADAPTER_WEIGHTS).exists() or run.checkpoints():
            raise ConfigError(f"{output_dir} already holds a run: pass --resume, or choose another output_dir")
        return None
    if not output_dir.is_dir():
        raise ConfigError(f"--resume: {output_dir} does not exist (no run to resume): run without --resume")
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise ConfigError(f"--resume: no complete checkpoint in {output_dir} (the run stopped before its first was "
                          "saved): run without --resume to start it again")
    check_same_run(config, run)
    check_same_world(checkpoints[-1])
    check_schedule(config, run, checkpoints[-1])
    return checkpoints[-1]


def check_same_run(config: TrainConfig, run: RunDir) -> None:
    """ConfigError unless `config` is the saved one but for RESUMABLE_CHANGES (the optimizer compared as it runs
    here: a run saved before its optimizer was recorded as run names the one asked for)."""
    before = run.config.to_dict() if run.config else {}
    on_cuda = cuda_available()
    now = {**config.to_dict(), "optimizer": resolve_optimizer(config.optimizer, on_cuda)}
    if "optimizer" in before:
        before["optimizer"] = resolve_optimizer(before["optimizer"], on_cuda)
    ignored = RESUMABLE_CHANGES | ({"max_length"} if config.max_length is None else set())  # derived again alike
    changed = sorted(k for k, v in now.items() if k not in ignored and before.get(k, v) != v)
    if changed:
        raise ConfigError(f"--resume with a config that differs from {run.file(RunDir.CONFIG)} in: {', '.join(changed)}")


def check_same_world(checkpoint: Path) -> None:
    """ConfigError unless as many processes run as wrote `checkpoint`."""
    marker = (checkpoint / COMPLETE_MARKER).read_text().strip()
    saved_world = json.loads(marker).get("world_size", 1) if marker else 1  # markers before world_size: 1 process
    if saved_world != launched_world_size():
        raise ConfigError(
            f"--resume: {checkpoint.name} was written by {saved_world} process(es), this run has "
            f"{launched_world_size()}; the batch of a step and the data order depend on it: launch "
            f"{saved_world} process(es)"
        )


def check_schedule(config: TrainConfig, run: RunDir, checkpoint: Path) -> None:
    """ConfigError when resuming would make the learning-rate schedule jump, or the run already ended."""
    before = run.config.to_dict() if run.config else {}
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    same_length = (
        config.max_steps == before.get("max_steps", config.max_steps)
        if config.max_steps is not None or before.get("max_steps") is not None
        else config.epochs == before.get("epochs", config.epochs)
    )
    if not same_length and config.lr_scheduler != "constant":
        # The scheduler's rate is a function of the step and the total: a new total makes it jump (linear, at the
        # end of a run: from 0 back to about half its peak).
        raise ConfigError(
            f"--resume: the {config.lr_scheduler} learning-rate schedule of {run.path} was laid out for "
            f"{state['max_steps']} steps; a run of another length would restart it mid-way with a jump. Resume "
            "with the same max_steps and epochs, or start a new run (lr_scheduler constant can be extended)"
        )
    if same_length and state["global_step"] >= state["max_steps"]:
        raise ConfigError(f"--resume: the run in {run.path} already reached its last step, {state['global_step']}")


def publish_final(staging: Path, output_dir: Path) -> None:
    """Move the finished adapter files into the output dir, weights last: a half-written final model never looks
    complete."""
    usual_modes(staging)
    files = sorted(staging.iterdir(), key=lambda p: p.name.startswith("adapter_model"))
    for path in files:
        os.replace(path, output_dir / path.name)
    staging.rmdir()
