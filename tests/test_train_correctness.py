"""Known traps of fine-tuning, each tested on CPU with the tiny Llama: examples that lose their end token, untrained
template-token rows, chat templates whose last assistant turn differs from the generation prompt, unseeded
initialisation, and experiment tracking."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import child_env, realdata_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tc3.config import ConfigError, load_config
from tc3.prompts import ANSWER_MARK, encode_example, end_token_ids, prompt_messages, render_prompt, split_rendered

CONFIGS = Path(__file__).resolve().parents[1] / "python" / "tc3" / "configs"
EOT = "<|eot_id|>"
LONG = ("This handsome volume collects the poems and parables of the author, with notes on each of them, a "
        "foreword by the translator, and twelve full-page illustrations printed on heavy cream paper.")
# Like Qwen3's template: the last assistant turn opens with an empty think block the generation prompt lacks, and
# a newline follows the end of each turn.
THINKING_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{% if m['role'] == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}"
    "{{ m['content'] | trim }}<|eot_id|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def config_for(model, data, output_dir, *overrides):
    return load_config(
        CONFIGS / "tiny-cpu.yaml", [f"model={model}", f"data={data}", f"output_dir={output_dir}", *overrides]
    )


def with_template(model_dir: Path, out: Path, template: str) -> Path:
    from transformers import AutoTokenizer

    shutil.copytree(model_dir, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    return out


def trained_texts(tokenizer, rows) -> list[str]:
    """What the loss covers in each training row, decoded with its special tokens."""
    return [tokenizer.decode([t for t in row["labels"] if t != -100]) for row in rows]


# ---------------------------------------------------------------------------------------------------------------------
# No example loses its end token


def test_an_overlong_example_is_trimmed_at_a_word_boundary_and_keeps_its_end(tiny_tokenizer):
    eot = tiny_tokenizer.convert_tokens_to_ids(EOT)
    messages = prompt_messages("The Prophet", "pt")
    prompt, completion, fit = encode_example(tiny_tokenizer, messages, LONG)
    assert fit == "whole" and completion[-1] == eot
    limit = len(prompt) + len(completion) // 2

    prompt_t, completion_t, fit = encode_example(tiny_tokenizer, messages, LONG, limit, "trim")
    assert fit == "trimmed" and prompt_t == prompt and completion_t[-1] == eot
    assert len(prompt_t) + len(completion_t) <= limit
    text = tiny_tokenizer.decode(completion_t[:-1])
    assert LONG.startswith(text) and LONG[len(text)] == " " and len(text.split()) > 5  # whole words, most that fit
    longer = LONG[: LONG.index(" ", len(text) + 1)]  # one more word does not fit
    assert len(prompt) + len(encode_example(tiny_tokenizer, messages, longer)[1]) > limit

    assert encode_example(tiny_tokenizer, messages, LONG, limit, "drop") == ([], [], "dropped")
    assert encode_example(tiny_tokenizer, messages, LONG, len(prompt) + 1, "trim")[2] == "dropped"  # no word fits


WORDS = sorted({w for r in realdata_records()[:50] for w in r["content"].split()})


@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=60), room=st.integers(-2, 80),
       overlong=st.sampled_from(["trim", "drop"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_encoded_example_exceeds_the_length_or_loses_its_end(tiny_tokenizer, words, room, overlong):
    eot = tiny_tokenizer.convert_tokens_to_ids(EOT)
    description = " ".join(words)
    messages = prompt_messages("The Prophet", "en")
    prompt_len = len(encode_example(tiny_tokenizer, messages, description)[0])
    prompt, completion, fit = encode_example(tiny_tokenizer, messages, description, prompt_len + room, overlong)
    if fit == "dropped":
        first = encode_example(tiny_tokenizer, messages, words[0])
        assert (prompt, completion) == ([], [])
        assert overlong == "drop" or len(first[0]) + len(first[1]) > prompt_len + room  # not one word fits
        return
    assert len(prompt) + len(completion) <= prompt_len + room and completion[-1] == eot
    text = tiny_tokenizer.decode(completion[:-1])
    assert text == description if fit == "whole" else (description.startswith(text + " ") and overlong == "trim")


@pytest.mark.parametrize("overlong", ["trim", "drop"])
def test_every_training_example_ends_with_its_end_token(tiny_model_dir, prep_dir, tmp_path, overlong):
    """Seen: TRL cut examples over max_length with their end-of-turn token, teaching the model not to stop."""
    from tc3.layout import PrepDir
    from tc3.train import build_run

    run = build_run(config_for(tiny_model_dir, prep_dir, tmp_path / "run", "max_length_cap=96",
                               f"overlong={overlong}"))
    eot = run.tokenizer.convert_tokens_to_ids(EOT)
    rows = run.trainer.train_dataset
    fits = run.fits["train"]
    descriptive = sum(r["kind"] != "review_quotes" for r in PrepDir(prep_dir).read_split("train"))  # tiny-cpu's kinds
    assert sum(fits.values()) == min(400, descriptive) and fits["trimmed" if overlong == "trim" else "dropped"] > 100
    assert len(rows) == fits["whole"] + fits["trimmed"]
    for row in rows:
        assert len(row["input_ids"]) <= 96
        assert row["input_ids"][-1] == eot and row["labels"][-1] == eot
    assert all(row["input_ids"][-1] == eot for row in run.trainer.eval_dataset)


def test_reference_loss_trims_like_training(tiny_model_dir, tiny_tokenizer):
    from types import SimpleNamespace

    from tc3.evaluate import reference_loss
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loaded = SimpleNamespace(model=model, tokenizer=tiny_tokenizer, device="cpu")
    prompt, whole, _ = encode_example(tiny_tokenizer, prompt_messages("The Prophet", "pt"), LONG)
    limit = len(prompt) + len(whole) // 2
    _, trimmed, fit = encode_example(tiny_tokenizer, prompt_messages("The Prophet", "pt"), LONG, limit)
    assert fit == "trimmed"
    scored = reference_loss(loaded, [("The Prophet", LONG)], "pt", max_length=limit)
    assert scored["reference_tokens"] == len(trimmed)  # the trimmed description and its end token, not a cut


# ---------------------------------------------------------------------------------------------------------------------
# Untrained template tokens


@pytest.fixture(scope="module")
def zeroed_eot_model(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with the <|eot_id|> rows of its input and output embeddings zeroed, as in Llama-3 base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("zeroed-eot")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    with torch.no_grad():
        model.get_input_embeddings().weight[eot] = 0
        model.get_output_embeddings().weight[eot] = 0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def one_sentence_prep(tmp_path_factory):
    """A tc3-prep output of the real records cut to their first sentence: a stop the tiny model can learn."""
    from tc3.prep import run

    work = tmp_path_factory.mktemp("one-sentence")
    records = []
    for record in realdata_records():
        first = re.split(r"(?<=\.)\s", record["content"].strip(), maxsplit=1)[0]
        if first.endswith(".") and 3 <= len(first.split()) <= 20:
            records.append({**record, "content": first})
    (work / "trn.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    run(inputs=[str(work / "trn.json")], out_dir=str(work / "prep"), val_fraction=0.1)
    return work / "prep"


@pytest.fixture(scope="module")
def stop_run(zeroed_eot_model, one_sentence_prep, tmp_path_factory):
    """48 steps on the zeroed model, TensorBoard on: (output dir, config, metrics)."""
    from tc3.train import train

    out = tmp_path_factory.mktemp("stop") / "run"
    config = config_for(
        zeroed_eot_model, one_sentence_prep, out, "max_steps=48", "per_device_batch_size=4", "train_samples=null",
        "eval_samples=8", "context_fraction=0", "questions=fixed", "learning_rate=1e-2", "logging_steps=8",
        "eval_steps=100", "save_steps=100", "report_to=tensorboard",
    )
    return out, config, train(config)


def test_an_untrained_end_of_turn_row_is_trained_and_the_model_stops(stop_run):
    """Without training the <|eot_id|> rows (LoRA alone, as the hf backend did) the same run stops on 0 of 16
    titles and never ranks <|eot_id|> first after a description."""
    from tc3.data import training_splits
    from tc3.models import load_trained

    out, config, metrics = stop_run
    assert metrics["trained_template_tokens"] == [EOT]
    model, tokenizer = load_trained(out)
    model.eval()
    eot = tokenizer.convert_tokens_to_ids(EOT)
    rows = training_splits(config)[0].select(range(16))
    ranked_first, stopped = 0, 0
    for row in rows:
        prompt, completion, _ = encode_example(tokenizer, row["prompt"], row["completion"][0]["content"])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0]
        ranked_first += int(logits[-2].argmax() == eot)  # the position that predicts the end token
        ids = torch.tensor([prompt])
        generated = model.generate(input_ids=ids, max_new_tokens=48, do_sample=False,
                                   eos_token_id=end_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
        stopped += int(generated[0, -1].item() in end_token_ids(tokenizer) and generated.shape[1] < ids.shape[1] + 48)
    assert ranked_first >= 12 and stopped >= 12, (ranked_first, stopped)

    merged = model.merge_and_unload()
    for weight in (merged.get_input_embeddings().weight, merged.get_output_embeddings().weight):
        assert weight[eot].norm() > 0.2 * weight.norm(dim=1).mean()  # no longer near zero
    card = (out / "README.md").read_text()
    assert f"untrained or new, set to the mean trained row and trained (PEFT trainable tokens, saved with the " \
           f"adapter): `{EOT}`" in card
    fits = metrics["examples_fit_max_length"]["train"]
    assert f"- train: {fits['whole']} whole, {fits['trimmed']} trimmed, {fits['dropped']} dropped" in card
    assert "those over `max_length`" in card and sum(fits.values()) == metrics["train_examples"] + fits["dropped"]


def test_new_and_near_zero_template_rows_are_found_and_set_to_the_mean_row(tiny_model_dir, tiny_tokenizer):
    from tc3.template_tokens import initialise_rows, rows_to_train, template_token_ids, trainable_token_indices
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = {t: tiny_tokenizer.convert_tokens_to_ids(t) for t in ("<|begin_of_text|>", "<|start_header_id|>",
                                                                "<|end_header_id|>", EOT)}
    assert template_token_ids(tiny_tokenizer) == sorted(ids.values())
    weights = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    assert rows_to_train(tiny_tokenizer, weights) == []  # every row of the random model is "trained"
    with torch.no_grad():
        weights[1][ids["<|start_header_id|>"]] *= 1e-4  # near zero in the output embeddings only
    # rows from id 5 on were added by a resize: <|eot_id|> (5) has no trained row
    fix = rows_to_train(tiny_tokenizer, weights, rows_before=ids[EOT])
    assert fix == [ids["<|start_header_id|>"], ids[EOT]]
    trained = [[i for i in range(w.shape[0]) if i not in fix and w[i].norm() > 0.1] for w in weights]
    assert len(trained[0]) == len(weights[0]) - 3  # the padding row is zero in the input embeddings: left out
    initialise_rows(model, fix)
    for weight, rows in zip(weights, trained):
        assert torch.allclose(weight[fix], weight[rows].mean(0).expand(2, -1), atol=1e-6)
    assert trainable_token_indices(model, fix) == {"embed_tokens": fix, "lm_head": fix}


def test_dry_run_lists_untrained_template_rows_and_fit_counts(zeroed_eot_model, tiny_model_dir, prep_dir,
                                                               tmp_path, capsys):
    from tc3.cli.train import main

    for model in (zeroed_eot_model, tiny_model_dir):
        argv = ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"model={model}", f"data={prep_dir}",
                f"output_dir={tmp_path / 'out'}", "max_length_cap=96", "--dry-run"]  # fmt: skip
        assert main(argv) == 0
    zeroed, plain = capsys.readouterr().out.split("# resolved config")[1:]
    assert f"# template token rows: {EOT} (5): untrained or new" in zeroed
    assert "# template token rows: none: every template token has a trained row" in plain
    assert re.search(r"# max_length 96, train: \d+ whole, \d+ trimmed \(cut at a word boundary", zeroed)


def test_tensorboard_event_file_holds_the_training_loss(stop_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _ = stop_run
    (events,) = out.glob("runs/*/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    logged = {e["step"]: e["loss"] for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
              if "loss" in e}
    scalars = {s.step: s.value for s in accumulator.Scalars("train/loss")}
    assert scalars.keys() == logged.keys() and len(scalars) == 6
    assert all(scalars[step] == pytest.approx(loss, rel=1e-4) for step, loss in logged.items())


def test_tracking_and_neftune_are_checked(tiny_model_dir, prep_dir, tmp_path):
    import importlib.util

    from tc3.train import build_run

    with pytest.raises(ConfigError, match="report_to must be one of none, tensorboard, trackio, mlflow, wandb"):
        config_for(tiny_model_dir, prep_dir, tmp_path, "report_to=comet")
    with pytest.raises(ConfigError, match="neftune_noise_alpha must be positive"):
        config_for(tiny_model_dir, prep_dir, tmp_path, "neftune_noise_alpha=0")
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match="report_to wandb needs the wandb package"):
            build_run(config_for(tiny_model_dir, prep_dir, tmp_path / "w", "report_to=wandb"))
    run = build_run(config_for(tiny_model_dir, prep_dir, tmp_path / "n", "neftune_noise_alpha=5"))
    assert run.trainer.args.neftune_noise_alpha == 5.0 and run.trainer.args.report_to == []


# ---------------------------------------------------------------------------------------------------------------------
# The prompt is what the template renders before the answer


def test_a_thinking_template_puts_its_markup_in_the_prompt(tiny_tokenizer):
    """Seen with Qwen3: every completion began with `<think>\\n\\n</think>\\n\\n`, which then showed up in answers."""
    tokenizer = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = THINKING_TEMPLATE
    messages = prompt_messages("The Prophet", "pt")
    prompt, completion = split_rendered(tokenizer, messages, " A book of poems. ")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n\n</think>\n\n")
    assert completion == f"A book of poems.{EOT}"  # the description and the end token, not the newline after it
    assert render_prompt(tokenizer, "The Prophet", "pt") == prompt  # generation is fed the same prompt
    prompt_ids, completion_ids, _ = encode_example(tokenizer, messages, "A book of poems.")
    assert tokenizer.decode(completion_ids) == completion and "<think>" not in tokenizer.decode(completion_ids)


def test_training_rows_of_a_thinking_template_hold_the_description_only(tiny_model_dir, prep_dir, tmp_path):
    from tc3.data import training_splits
    from tc3.train import build_run

    model = with_template(tiny_model_dir, tmp_path / "thinking", THINKING_TEMPLATE)
    run = build_run(config_for(model, prep_dir, tmp_path / "run", "max_length_cap=4096", "train_samples=40"))
    inputs = training_splits(run.config)[0]
    texts = trained_texts(run.tokenizer, run.trainer.train_dataset)
    whole = [i for i, row in enumerate(inputs) if len(run.trainer.train_dataset[i]["input_ids"]) < 1000]
    assert whole and all(texts[i] == inputs[i]["completion"][0]["content"].strip() + EOT for i in whole[:20])
    assert not any("think>" in text for text in texts)


def test_a_template_whose_prompt_is_not_a_prefix_is_a_clear_error(tiny_model_dir, prep_dir, tmp_path, capsys):
    from tc3.cli.train import main
    from tc3.prompts import TemplateError

    renamed = THINKING_TEMPLATE.replace("<|start_header_id|>{{ m['role'] }}", "<|start_header_id|>{{ m['role'] }}:")
    model = with_template(tiny_model_dir, tmp_path / "mismatch", renamed)
    from transformers import AutoTokenizer

    with pytest.raises(TemplateError, match="renders its generation prompt differently"):
        split_rendered(AutoTokenizer.from_pretrained(model), prompt_messages("The Prophet", "pt"), ANSWER_MARK)
    shouting = AutoTokenizer.from_pretrained(tiny_model_dir)
    shouting.chat_template = THINKING_TEMPLATE.replace("| trim", "| upper")
    with pytest.raises(TemplateError, match="does not write an answer verbatim"):
        split_rendered(shouting, prompt_messages("The Prophet", "pt"), "A book.")
    argv = ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"model={model}", f"data={prep_dir}",
            f"output_dir={tmp_path / 'out'}", "--dry-run"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "renders its generation prompt differently from the start of an example" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------------
# Seeding


def test_every_random_initialisation_is_seeded(tiny_model_dir, prep_dir, tmp_path):
    """A model with fewer embedding rows than its tokenizer is resized: the new rows are drawn at random, so they
    must be drawn after the seed is set (they were drawn before), like LoRA's A matrices."""
    from tc3.train import build_run
    from transformers import AutoModelForCausalLM

    short = tmp_path / "short-vocab"
    shutil.copytree(tiny_model_dir, short)
    model = AutoModelForCausalLM.from_pretrained(short, dtype=torch.float32)
    model.resize_token_embeddings(990)
    model.save_pretrained(short)

    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # whatever the process drew before
        run = build_run(config_for(short, prep_dir, tmp_path / f"run{global_seed}", "train_samples=16"))
        model = run.trainer.model
        assert model.get_input_embeddings().weight.shape[0] == 1000
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def gpu_train(model, data, out, backend, *overrides) -> None:
    """tc3-train in a fresh process (unsloth must be imported first): 48 steps at learning rate 1e-2 on the
    one-sentence data, checkpoints every 24."""
    import subprocess
    import sys

    argv = ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"model={model}", f"data={data}", f"output_dir={out}",
            f"backend={backend}", "optimizer=adamw_8bit", "max_steps=48", "per_device_batch_size=4",
            "train_samples=null", "eval_samples=8", "context_fraction=0", "questions=fixed", "learning_rate=1e-2",
            "eval_steps=100", "save_steps=24", *overrides]  # fmt: skip
    env = child_env()
    done = subprocess.run([sys.executable, "-m", "tc3.cli.train", *argv], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]


def eot_rows(model, tokenizer) -> list:
    """The <|eot_id|> rows of the input and output embeddings (fp32, on CPU)."""
    eot = tokenizer.convert_tokens_to_ids(EOT)
    return [m.weight[eot].detach().float().cpu() for m in (model.get_input_embeddings(), model.get_output_embeddings())]


def assert_trained(model, tokenizer) -> list:
    rows = eot_rows(model, tokenizer)
    for row, module in zip(rows, (model.get_input_embeddings(), model.get_output_embeddings())):
        assert row.norm() > 0.2 * module.weight.float().norm(dim=1).mean(), (float(row.norm()), type(module))
    return rows


@pytest.fixture(scope="module")
def zeroed_eot_model_bf16(zeroed_eot_model, tmp_path_factory):
    """The zeroed model stored in bf16, as most released checkpoints are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("zeroed-eot-bf16")
    AutoModelForCausalLM.from_pretrained(zeroed_eot_model, dtype=torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(zeroed_eot_model).save_pretrained(out)
    return out


# Every combination a user can choose on CUDA is one of these: backend, the base as loaded (4-bit, or 16/32-bit as
# stored), the compute precision.
GPU_PATHS = [
    ("unsloth", "4bit", "bf16"),
    ("unsloth", "4bit", "fp16"),
    ("unsloth", "stored-bf16", "bf16"),
    ("hf", "4bit", "bf16"),
    ("hf", "4bit", "fp16"),
    ("hf", "stored-fp32", "bf16"),
    ("hf", "stored-bf16", "fp16"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("backend, base, precision", GPU_PATHS)
def test_template_rows_are_trained_saved_and_loaded_on_every_cuda_path(
    zeroed_eot_model, zeroed_eot_model_bf16, one_sentence_prep, tmp_path, backend, base, precision
):
    """The untrained <|eot_id|> rows are trained (unsloth froze them: norm 0.049 after 48 steps), saved in the
    adapter, loaded back over the base (generate, eval), kept by `--resume` and merged by tc3-export (and its GGUF)."""
    import importlib.util

    from safetensors import safe_open

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("needs CUDA and bitsandbytes")
    if backend == "unsloth" and importlib.util.find_spec("unsloth") is None:
        pytest.skip("needs unsloth")
    from tc3.models import load_trained

    model_dir = zeroed_eot_model_bf16 if base == "stored-bf16" else zeroed_eot_model
    overrides = [f"load_in_4bit={str(base == '4bit').lower()}", f"precision={precision}"]
    out = tmp_path / "run"
    gpu_train(model_dir, one_sentence_prep, out, backend, *overrides)
    assert json.loads((out / "metrics.json").read_text())["trained_template_tokens"] == [EOT]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as saved:
        deltas = [k for k in saved.keys() if "trainable_tokens_delta" in k]
    assert len(deltas) == 2, deltas  # input and output embeddings (the tiny model's are untied)
    model, tokenizer = load_trained(out, device="cuda")
    rows = assert_trained(model, tokenizer)
    del model
    if (backend, base, precision) not in (("unsloth", "4bit", "bf16"), ("hf", "4bit", "bf16")):
        return

    # --resume from the checkpoint half-way: the rows come back from it and end where the whole run ended
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed, ignore=shutil.ignore_patterns("checkpoint-48"))
    for name in ("adapter_model.safetensors", "adapter_config.json", "metrics.json", "README.md"):
        (resumed / name).unlink(missing_ok=True)
    gpu_train(model_dir, one_sentence_prep, resumed, backend, *overrides, "--resume")
    model, tokenizer = load_trained(resumed, device="cuda")
    for row, again in zip(rows, assert_trained(model, tokenizer)):
        assert (row - again).norm() < 0.1 * row.norm(), (float((row - again).norm()), float(row.norm()))
    del model

    # tc3-export: the merged model (and its GGUF) hold the trained rows
    from tc3.cli.export import main as export

    merged_dir = tmp_path / "merged"
    assert export([str(out), str(merged_dir), "--device", "cuda", "--no-check", "--gguf"]) == 0
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    for row, kept in zip(rows, eot_rows(merged, tokenizer)):
        torch.testing.assert_close(kept, row, atol=1e-2, rtol=1e-2)
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(next(merged_dir.glob("*.gguf")))
    tensors = {t.name: t for t in reader.tensors}
    eot = tokenizer.convert_tokens_to_ids(EOT)
    for name, row in zip(("token_embd.weight", "output.weight"), rows):
        tensor = tensors[name]
        matrix = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(-1, row.numel())
        torch.testing.assert_close(torch.tensor(matrix[eot], dtype=torch.float32), row, atol=1e-2, rtol=1e-2)


def test_trainable_parameters_stay_fp32_when_trl_sees_a_4bit_base(tiny_model_dir, prep_dir, tmp_path, monkeypatch):
    """TRL 1.15 casts every trainable parameter of a 4-bit model to bf16: an fp16 run's gradient scaler then fails
    ("not implemented for 'BFloat16'", seen on an H100 with backend=hf precision=fp16). The run puts them back in fp32.
    The tiny model is marked 4-bit as bitsandbytes marks it, which is what TRL reads."""
    import tc3.train.model
    from tc3.train import build_run

    load_hf = tc3.train.model.load_hf

    def marked_4bit(*args, **kwargs):
        model, tokenizer, rows = load_hf(*args, **kwargs)
        model.is_loaded_in_4bit = True
        return model, tokenizer, rows

    monkeypatch.setattr(tc3.train.model, "load_hf", marked_4bit)
    run = build_run(config_for(tiny_model_dir, prep_dir, tmp_path / "run", "train_samples=16"))
    trainable = {name: p.dtype for name, p in run.trainer.model.named_parameters() if p.requires_grad}
    assert trainable and set(trainable.values()) == {torch.float32}, trainable
