"""End to end on CPU: the tiny random Llama trained for a few dozen steps on a tc3-prep output of the real records."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import child_env
import torch
from tc3.config import load_config
from tc3.prompts import end_token_ids, prompt_ids

CONFIGS = Path(__file__).resolve().parents[1] / "python" / "tc3" / "configs"
TITLE = "The Prophet"
# Small enough for CI on 2 cores; a learning rate high enough that the loss visibly falls in 32 steps.
TINY_RUN = [
    "max_steps=32", "per_device_batch_size=4", "max_length_cap=128", "train_samples=160", "eval_samples=16",
    "learning_rate=5e-3", "logging_steps=4", "eval_steps=16", "save_steps=16", "save_total_limit=2",
]  # fmt: skip


def tiny_config(model, data, output_dir, *overrides):
    return load_config(
        CONFIGS / "tiny-cpu.yaml", [f"model={model}", f"data={data}", f"output_dir={output_dir}", *overrides]
    )


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def probe_logits(model, tokenizer):
    """Logits of a fixed prompt, the model in eval mode."""
    ids = torch.tensor([prompt_ids(tokenizer, TITLE, "pt")], device=model.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().cpu()
    model.train(was_training)
    return logits


@pytest.fixture(scope="module")
def trained(tiny_model_dir, prep_dir, tmp_path_factory):
    """One 32-step run shared by the tests below: (output dir, metrics, logits of the trained model in memory)."""
    from tc3.train import train
    from transformers import TrainerCallback

    final = {}

    class KeepFinalLogits(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            final["logits"] = probe_logits(model, processing_class)

    out = tmp_path_factory.mktemp("run") / "tiny"
    metrics = train(tiny_config(tiny_model_dir, prep_dir, out, *TINY_RUN), callbacks=[KeepFinalLogits()])
    return out, metrics, final["logits"]


def test_loss_falls(trained):
    out, metrics, _ = trained
    log = read_log(out)
    train_losses = [e["loss"] for e in log if "loss" in e]
    eval_losses = [e["eval_loss"] for e in log if "eval_loss" in e]
    assert len(train_losses) == 8 and len(eval_losses) == 2
    assert train_losses[-1] < train_losses[0] - 0.3
    assert eval_losses[-1] < eval_losses[0]
    assert metrics["global_step"] == 32 and metrics["eval_loss"] == pytest.approx(eval_losses[-1], abs=1e-4)
    # every step is in one logged window of 4: the run's train loss is their mean, as the Trainer's own
    assert metrics["train_loss"] == pytest.approx(sum(train_losses) / 8, abs=1e-4) == log[-1]["train_loss"]
    assert all({"step", "loss", "learning_rate"} <= e.keys() for e in log if "loss" in e)
    assert any("tokens_per_s" in e for e in log)


def test_outputs_are_complete(trained):
    out, metrics, _ = trained
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tc3_config.yaml",
                 "train_log.jsonl", "README.md", "metrics.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not (out / ".final.partial").exists() and not (out / "training_args.bin").exists()
    resolved = load_config(out / "tc3_config.yaml")
    assert resolved.max_length == metrics["max_length"] == 128  # derived (p99 of far longer examples), capped
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-16", "checkpoint-32"]
    assert all((out / c / "tc3_checkpoint_complete").is_file() for c in checkpoints)
    card = (out / "README.md").read_text()
    # a plain local base dir has no hub id: no base_model (the Hub would reject a path), the text names it
    assert card.startswith("---\nlibrary_name: peft") and "license: other" in card
    assert f"for `{Path(resolved.model).name}` (a local model folder, not on the Hub)" in card
    assert resolved.model not in card and resolved.data not in card  # no absolute local path in a published card
    assert '"eval_loss"' in card and "lora_r: 16" in card
    assert_usual_modes(out)


def assert_usual_modes(folder: Path) -> None:
    """Every file an output holds, weights included, has the mode of a file made under the umask (0644 under 022):
    safetensors 0.8 writes its files 0600 (safetensors#782)."""
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.relative_to(folder).as_posix(): oct(p.stat().st_mode & 0o777) for p in folder.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes


def assert_masked_and_well_formed(rows, tokenizer):
    """Training rows (input_ids, labels, prompt messages): one BOS first, the end-of-turn token last, labels -100
    exactly over the prompt as generation renders it and equal to the input over the description."""
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        prompt = tokenizer(
            tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
        assert ids[: len(prompt)] == prompt
        assert labels[: len(prompt)] == [-100] * len(prompt)  # no loss on the prompt ...
        assert labels[len(prompt) :] == ids[len(prompt) :]  # ... all of it on the description and its end
        assert ids[-1] == eot


def test_a_remade_prep_dir_is_not_read_from_a_stale_cache(prep_dir, tmp_path):
    """datasets caches a local dir under its name alone: two dirs named `prep` must still load their own rows."""
    import pyarrow.parquet as pq
    from tc3.data import load_splits

    other = tmp_path / "prep"
    shutil.copytree(prep_dir, other)
    table = pq.read_table(other / "data" / "validation-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 5), other / "data" / "validation-00000-of-00001.parquet")
    assert len(load_splits(prep_dir)["validation"]) == table.num_rows
    assert len(load_splits(other)["validation"]) == 5


def test_the_examples_cache_follows_the_prompts_and_rendering(tiny_model_dir, prep_dir, tmp_path, monkeypatch):
    """datasets keys its cache by imported functions' names alone (datasets#3297): an edited instruction or end-of-
    turn list (as an upgrade of tc3 makes) must give new examples on the same prep dir, not the cached ones."""
    from tc3 import prompts
    from tc3.data import load_splits, to_prompt_completion, tokenize_examples

    data = tmp_path / "prep"
    shutil.copytree(prep_dir, data)  # a cache of its own
    config = tiny_config(tiny_model_dir, data, tmp_path / "run", "questions=fixed", "instruction=en")
    tokenizer = prompts.load_tokenizer(str(tiny_model_dir))
    rows = load_splits(data)["validation"].select(range(4))

    def examples():
        pairs = to_prompt_completion(rows, config)
        return pairs, tokenize_examples(pairs, tokenizer, 256, "trim")[0]

    before, before_ids = examples()
    assert len(before.cache_files) == 1  # on disk: a second run would read it back
    monkeypatch.setitem(prompts.INSTRUCTIONS, "en", "Tell me about this product.")
    after, after_ids = examples()
    assert before[0]["prompt"][0]["content"].startswith("Based on the product title")
    assert after[0]["prompt"][0]["content"].startswith("Tell me about this product.")
    assert after_ids[0]["input_ids"] != before_ids[0]["input_ids"]
    # the end-of-turn markers decide where a completion ends: without <|eot_id|> among them, EOS is appended
    monkeypatch.setattr(prompts, "END_OF_TURN_TOKENS", ("<|end_of_text|>",))
    _, closed = examples()
    assert closed[0]["input_ids"][-1] == tokenizer.eos_token_id != after_ids[0]["input_ids"][-1]
    monkeypatch.undo()
    assert examples()[0].cache_files == before.cache_files  # the same inputs still hit the same cache


def test_model_sources(tmp_path):
    from tc3.models import hub_id, load_source

    snapshot = tmp_path / "hub" / "models--unsloth--llama-3-8b-bnb-4bit" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    plain = tmp_path / "my-model"
    plain.mkdir()
    assert (
        hub_id("unsloth/llama-3-8b-bnb-4bit")
        == load_source("unsloth/llama-3-8b-bnb-4bit")
        == "unsloth/llama-3-8b-bnb-4bit"
    )
    assert hub_id(str(snapshot)) == "unsloth/llama-3-8b-bnb-4bit"
    assert hub_id(str(plain)) is None and load_source(str(plain)) == str(plain.resolve())


def test_training_examples_are_masked_and_well_formed(tiny_model_dir, prep_dir, tmp_path):
    """The examples SFTTrainer actually trains on: every one ends with its end token, the p99 length trims 1%."""
    from tc3.train import build_run

    from tc3.data import training_splits

    run = build_run(tiny_config(tiny_model_dir, prep_dir, tmp_path / "run", "max_length_cap=4096"))
    assert run.tokenizer.convert_tokens_to_ids("<|eot_id|>") in end_token_ids(run.tokenizer)
    inputs = training_splits(run.config)[0]  # rows in the same order (TRL does not shuffle the dataset)
    rows = run.trainer.train_dataset
    assert len(rows) == len(inputs) and run.fits["train"]["dropped"] == 0 and run.fits["train"]["trimmed"] > 0
    assert_masked_and_well_formed([{**rows[i], "prompt": inputs[i]["prompt"]} for i in range(len(rows))],
                                  run.tokenizer)


def test_eager_loss_matches_the_model_loss(tiny_model_dir):
    """The CPU stand-in for TRL's Triton loss kernel gives the model's own loss and gradients."""
    from tc3.kernels import use_eager_loss_off_gpu
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    use_eager_loss_off_gpu()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.randint(10, 900, (2, 24))
    labels = ids.clone()
    labels[:, :8] = -100
    expected = model(input_ids=ids, labels=labels).loss
    (expected_grad,) = torch.autograd.grad(expected, model.model.norm.weight)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    fused = model(input_ids=ids, labels=labels, fused_lm_head=True)
    (fused_grad,) = torch.autograd.grad(fused.loss, model.model.norm.weight)
    assert fused.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(fused_grad, expected_grad, atol=1e-6)


def test_adapter_reloads_with_the_same_logits(trained, tiny_model_dir):
    from tc3.models import load_trained
    from transformers import AutoModelForCausalLM

    out, _, trained_logits = trained
    model, tokenizer = load_trained(out)
    assert torch.allclose(probe_logits(model, tokenizer), trained_logits, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not torch.allclose(probe_logits(base, tokenizer), trained_logits, atol=1e-3)  # the adapter does something


def test_resume_continues_at_the_right_step(trained, tiny_model_dir, prep_dir, tmp_path):
    """Killed after step 16 while saving step 32: --resume skips the half-written checkpoint, restarts at 16 and
    retraces the uninterrupted run (same data order, optimizer and schedule). Its record reads as the uninterrupted
    run's: each step logged once, tokens counted on from the checkpoint, the whole run's mean train loss."""
    from tc3.train import train

    original, original_metrics, _ = trained
    out = tmp_path / "tiny"
    shutil.copytree(original, out)  # its log runs to step 32: the steps after 16 are trained and logged again
    (out / "checkpoint-32" / "tc3_checkpoint_complete").unlink()  # saving was interrupted
    metrics = train(tiny_config(tiny_model_dir, prep_dir, out, *TINY_RUN), resume=True)
    timing = ("tokens_per_s", "s_per_step")
    resumed, uninterrupted = ([{k: v for k, v in e.items() if k not in timing} for e in read_log(run)]
                              for run in (out, original))
    assert [sorted(e) for e in resumed] == [sorted(e) for e in uninterrupted]
    assert [e["step"] for e in resumed if "loss" in e] == list(range(4, 33, 4))
    for r, u in zip(resumed, uninterrupted):
        assert r == pytest.approx(u, rel=1e-3)
    assert metrics["global_step"] == 32 and metrics["trained_tokens"] == original_metrics["trained_tokens"]
    assert metrics["train_loss"] == pytest.approx(original_metrics["train_loss"], abs=1e-3)
    assert metrics["train_loss"] == pytest.approx(resumed[-1]["train_loss"], abs=1e-4)  # the log's summary


def test_totals_of_a_checkpoint_from_before_they_were_recorded(tmp_path):
    """A marker holding only world_size: the loss sum from the checkpoint's log history (each logged mean loss
    times the steps it covers), the tokens from the last log record up to the checkpoint's step."""
    from tc3.train import COMPLETE_MARKER, RunTotals

    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps({"world_size": 1}))
    history = [{"step": 2, "loss": 3.0}, {"step": 2, "eval_loss": 9.0}, {"step": 6, "loss": 1.5}]
    (checkpoint / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [{"step": 2, "tokens": 100}, {"step": 6, "tokens": 310},
                                                          {"step": 8, "tokens": 400}]) + '{"step": 9, "tok')
    totals = RunTotals.from_checkpoint(checkpoint, log)
    assert (totals.base_tokens, totals.base_loss_sum) == (310, 3.0 * 2 + 1.5 * 4)
    assert totals.total() == 310 and totals.mean_loss(6) == 2.0


class Interrupted(Exception):
    pass


def interrupt_at(step: int, event: str):
    """A callback that stops training by an exception at `event` ("on_log", "on_save") of optimizer step `step`."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        pass

    def stop(self, args, state, control, **kwargs):
        if state.global_step == step:
            raise Interrupted(f"{event} of step {step}")

    setattr(Interrupt, event, stop)
    return Interrupt()


def test_an_interrupted_run_leaves_an_honest_record(tiny_model_dir, prep_dir, tmp_path, capsys):
    """A fresh run into a folder whose run died before its first complete checkpoint starts a new log (and replaces
    a half-saved checkpoint, which --resume cannot use); a run killed after a checkpoint leaves no placeholder model
    card; its resumed log has each step once, tokens counted on, and the train loss is the mean of every step's
    loss, the steps before the resume included."""
    from tc3.config import ConfigError
    from tc3.train import train

    out = tmp_path / "run"
    steps = ["per_device_batch_size=2", "max_length_cap=64", "train_samples=32", "eval_samples=4",
             "logging_steps=1", "eval_steps=100", "save_steps=2", "max_steps=4"]  # a log record every step
    config = tiny_config(tiny_model_dir, prep_dir, out, *steps)
    with pytest.raises(Interrupted):
        train(config, callbacks=[interrupt_at(1, "on_log")])
    assert [e["step"] for e in read_log(out)] == [1]
    (out / "checkpoint-2").mkdir()  # and killed again while saving its first checkpoint
    (out / "checkpoint-2" / "stale.bin").write_bytes(b"cut short")
    with pytest.raises(ConfigError, match="no complete checkpoint .* run without --resume"):
        train(config, resume=True)
    with pytest.raises(Interrupted):
        train(config, callbacks=[interrupt_at(3, "on_log")])  # a fresh run: nothing to resume
    assert [e["step"] for e in read_log(out)] == [1, 2, 3]
    assert not (out / "checkpoint-2" / "stale.bin").exists()
    assert "starting afresh (its 1 log record(s) and 1 half-saved checkpoint(s) replaced)" in capsys.readouterr().out
    assert not list(out.rglob("README.md"))  # neither TRL's card in out nor PEFT's in checkpoint-2
    metrics = train(config, resume=True)
    assert "resuming from checkpoint-2; the log goes on from step 2 (1 record(s) after it dropped" in (
        capsys.readouterr().out)
    log = read_log(out)
    losses = [e["loss"] for e in log if "loss" in e]
    tokens = [e["tokens"] for e in log if "tokens" in e]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    assert tokens == sorted(set(tokens)) and tokens[-1] == metrics["trained_tokens"]
    assert metrics["train_loss"] == pytest.approx(sum(losses) / 4, abs=1e-4)
    card = (out / "README.md").read_text()
    assert "[None]" not in card and f"{metrics['train_loss']}" in card
    assert not list(out.glob("checkpoint-*/README.md"))


def test_resume_refuses_a_changed_run(trained, tiny_model_dir, prep_dir, tmp_path):
    from tc3.config import ConfigError
    from tc3.train import train

    out = tmp_path / "tiny"
    shutil.copytree(trained[0], out)
    with pytest.raises(ConfigError, match="differs .* in: learning_rate"):
        train(tiny_config(tiny_model_dir, prep_dir, out, *TINY_RUN, "learning_rate=1e-3"), resume=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_config(tiny_model_dir, prep_dir, out, *TINY_RUN))
    with pytest.raises(ConfigError, match="already reached its last step, 32"):
        train(tiny_config(tiny_model_dir, prep_dir, out, *TINY_RUN), resume=True)


def test_resume_refuses_a_longer_decaying_schedule(trained, tiny_model_dir, prep_dir, tmp_path):
    """A linear schedule laid out for 32 steps, stretched to 48 on resume, would jump from ~0 back to a third of its
    peak: refused."""
    from tc3.config import ConfigError
    from tc3.train import train

    out = tmp_path / "tiny"
    shutil.copytree(trained[0], out)
    with pytest.raises(ConfigError, match="linear learning-rate schedule .* laid out for 32 steps"):
        train(tiny_config(tiny_model_dir, prep_dir, out, *TINY_RUN, "max_steps=48"), resume=True)
    assert not (out / "checkpoint-48").exists()


def test_resume_extends_a_constant_schedule_without_a_jump(tiny_model_dir, prep_dir, tmp_path):
    from tc3.train import train

    out = tmp_path / "constant"
    short = ["per_device_batch_size=2", "max_length_cap=64", "train_samples=32", "eval_samples=4",
             "logging_steps=2", "eval_steps=100", "save_steps=4", "lr_scheduler=constant", "warmup_ratio=0"]
    train(tiny_config(tiny_model_dir, prep_dir, out, *short, "max_steps=4"))
    metrics = train(tiny_config(tiny_model_dir, prep_dir, out, *short, "max_steps=8"), resume=True)
    rates = [e["learning_rate"] for e in read_log(out) if "loss" in e]
    assert metrics["global_step"] == 8 and len(rates) == 4 and len(set(rates)) == 1


def test_dry_run_prints_examples(tiny_model_dir, prep_dir, tmp_path, capsys):
    from tc3.cli.train import main

    argv = ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"model={tiny_model_dir}", f"data={prep_dir}",
            f"output_dir={tmp_path / 'out'}", "--dry-run"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    import pyarrow.parquet as pq

    rows = {s: sum(kind != "review_quotes" for kind in  # tiny-cpu trains on the descriptive kinds
                   pq.read_table(next((prep_dir / "data").glob(f"{s}-*")), columns=["kind"])["kind"].to_pylist())
            for s in ("train", "validation")}
    config = load_config(CONFIGS / "tiny-cpu.yaml")
    assert (f"# data: {min(config.train_samples, rows['train'])} train examples, "
            f"{min(config.eval_samples, rows['validation'])} eval examples") in out
    assert out.count("[loss from here →]") == 3
    for example in out.split("# example ")[1:]:
        assert example.count("<|begin_of_text|>") == 1
    assert "# token lengths" in out and "max_length" in out
    assert "# backend hf, attention: SDPA over padded batches" in out  # CPU: no variable-length kernel
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_export_merges_into_a_plain_model(trained, tmp_path):
    from tc3.export import export_merged
    from transformers import AutoModelForCausalLM

    out, _, trained_logits = trained
    merged_dir = export_merged(out, tmp_path / "merged", dtype="bf16")
    assert not (merged_dir / "adapter_config.json").exists()
    assert "library_name: transformers" in (merged_dir / "README.md").read_text()
    assert_usual_modes(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    from tc3.prompts import load_tokenizer

    tokenizer = load_tokenizer(str(merged_dir))
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in merged.generation_config.eos_token_id
    logits = probe_logits(merged, tokenizer)
    assert torch.allclose(logits, trained_logits, atol=0.15, rtol=0.02)  # bf16 weights
    assert (logits[0, -1].argmax() == trained_logits[0, -1].argmax()).item()


def test_the_plan_is_saved_with_the_run_and_in_the_card(trained):
    from tc3.layout import RunDir

    out, metrics, _ = trained
    plan = RunDir(out).plan
    assert (plan.backend, plan.device, plan.precision, plan.optimizer) == ("hf", "cpu", "fp32", "adamw_torch")
    assert plan.max_length == metrics["max_length"] == RunDir(out).config.max_length
    assert (plan.per_device_batch, plan.gradient_accumulation, plan.world_size, plan.checkpointing) == (4, 1, 1, False)
    assert plan.attention == metrics["attention"] and plan.global_batch == metrics["global_batch_size"]
    assert "## Training plan\nBackend `hf` on cpu, fp32, optimizer `adamw_torch`" in (out / "README.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="8-bit optimizers run as asked on CUDA")
def test_an_8bit_optimizer_on_cpu_is_recorded_as_the_one_that_ran(tiny_model_dir, prep_dir, tmp_path):
    """Seen: on CPU the optimizer fell back to adamw_torch while tc3_config.yaml and the model card said adamw_8bit."""
    from tc3.layout import RunDir
    from tc3.train import check_output_dir, train

    out = tmp_path / "run"
    config = tiny_config(tiny_model_dir, prep_dir, out, "optimizer=adamw_8bit", "max_steps=2", "train_samples=16",
                         "eval_samples=4", "eval_steps=2", "save_steps=2", "max_length_cap=64", "lr_scheduler=constant")
    train(config)
    run = RunDir(out)
    assert run.config.optimizer == run.plan.optimizer == "adamw_torch"
    assert run.plan.notes == ["adamw_8bit needs CUDA (bitsandbytes): adamw_torch"]
    card = (out / "README.md").read_text()
    assert "optimizer: adamw_torch" in card and "optimizer: adamw_8bit" not in card
    # the run resumes, extended, with the config as the user wrote it (adamw_8bit asked for, adamw_torch run)
    assert check_output_dir(dataclasses.replace(config, max_steps=4), resume=True) == out / "checkpoint-2"


def test_a_run_saved_before_plans_still_exports_generates_and_resumes(trained, tmp_path):
    """A run dir without tc3_plan.json (and with the optimizer as asked, not as run): every reader falls back to what
    it did before plans were saved."""
    from tc3.export import trained_dtype
    from tc3.generate import GenerationSettings, generate_batch, load_model
    from tc3.layout import RunDir
    from tc3.model_ref import resolve_model
    from tc3.train import check_output_dir

    out, _, _ = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "tc3_plan.json").unlink()
    config = load_config(old / "tc3_config.yaml", [f"output_dir={old}", "optimizer=adamw_8bit"])
    config.save(old / "tc3_config.yaml")
    assert RunDir(old).plan is None
    assert trained_dtype(resolve_model(str(old))) == "fp32"  # the config's precision, as before
    loaded = load_model(str(old), device="cpu")
    assert loaded.precision == "fp32" and generate_batch(loaded, ["X"], GenerationSettings(max_new_tokens=2))
    # resumable with the config as saved (tc3-train's check, before anything loads): the schedule extended
    extended = load_config(old / "tc3_config.yaml", ["max_steps=48", "lr_scheduler=constant"])
    (old / "tc3_config.yaml").write_text((old / "tc3_config.yaml").read_text().replace("linear", "constant"))
    assert check_output_dir(extended, resume=True) == old / "checkpoint-32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA a quantized model is simply loaded")
def test_a_quantized_model_on_cpu_is_a_clear_error(tiny_model_dir, prep_dir, tmp_path, capsys):
    from tc3.cli.train import main

    quantized = tmp_path / "model-bnb-4bit"
    shutil.copytree(tiny_model_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    argv = ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"model={quantized}", f"data={prep_dir}",
            f"output_dir={tmp_path / 'out'}"]  # fmt: skip
    assert main(argv) == 2
    assert "stored quantized (bitsandbytes), which needs CUDA" in capsys.readouterr().err


@pytest.mark.gpu
def test_unsloth_backend_on_gpu(tiny_model_dir, prep_dir, tmp_path):
    """The CUDA path as a user runs it, in fresh processes so that unsloth is imported first: 4-bit, unsloth's
    gradient checkpointing, padding-free batches, 8-bit AdamW. Its examples are masked like the hf backend's, the
    loss falls and the adapter reloads."""
    import importlib.util
    import subprocess
    import sys

    if not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None:
        pytest.skip("needs CUDA and unsloth")  # found, not imported: importing it here would go online
    out = tmp_path / "unsloth"
    overrides = [f"model={tiny_model_dir}", f"data={prep_dir}", f"output_dir={out}", "backend=unsloth",
                 "load_in_4bit=true", "precision=auto", "optimizer=adamw_8bit", "gradient_checkpointing=true",
                 *TINY_RUN]  # fmt: skip
    env = child_env()
    # unsloth's prepared rows lose the prompt column: pair them with the input rows (same order, TRL does not shuffle)
    inspect = (
        "import json; from tc3.config import load_config; from tc3.data import training_splits; "
        "from tc3.train import build_run; "
        f"run = build_run(load_config({str(CONFIGS / 'tiny-cpu.yaml')!r}, {overrides + ['max_length_cap=4096']!r})); "
        "inputs = training_splits(run.config)[0]; rows = run.trainer.train_dataset; assert len(rows) == len(inputs); "
        "print(json.dumps([{'input_ids': rows[i]['input_ids'], 'labels': rows[i]['labels'], "
        "'prompt': inputs[i]['prompt']} for i in range(20)]))"
    )
    done = subprocess.run([sys.executable, "-c", inspect], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    from tc3.prompts import load_tokenizer

    assert_masked_and_well_formed(json.loads(done.stdout.splitlines()[-1]), load_tokenizer(str(tiny_model_dir)))

    shutil.rmtree(out)
    argv = ["--config", str(CONFIGS / "tiny-cpu.yaml"), *overrides]
    done = subprocess.run(
        [sys.executable, "-m", "tc3.cli.train", *argv], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    log = read_log(out)
    losses = [e["loss"] for e in log if "loss" in e]
    eval_losses = [e["eval_loss"] for e in log if "eval_loss" in e]
    assert losses[-1] < losses[0] - 0.3 and eval_losses[-1] < eval_losses[0] - 0.05, log
    assert all("gpu_max_memory_gb" in e for e in log)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "unsloth"
    # tc3 sums the losses unsloth's training_step returns: the run's mean is the mean of the logged windows (4 steps)
    assert metrics["train_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-3)
    assert not list(out.glob("checkpoint-*/README.md"))
    from tc3.models import load_trained

    model, tokenizer = load_trained(out, device="cuda")
    assert torch.isfinite(probe_logits(model, tokenizer)).all()


def test_library_internals_tc3_patches_are_there():
    """tc3.kernels changes TRL from outside: each name it replaces must still be there, in the release it was read
    against (a newer TRL: read the patches again, then raise TRL_WRITTEN_FOR)."""
    import trl
    import trl.trainer.utils
    from tc3 import kernels
    from trl import SFTTrainer

    assert hasattr(trl.trainer.utils, "_ChunkedLogProbFunction")
    assert callable(SFTTrainer.create_model_card)
    assert trl.__version__.startswith(kernels.TRL_WRITTEN_FOR + ".")
