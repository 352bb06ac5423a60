"""tc3.evaluate: metric code on hand-made pairs with known scores, the reference loss against transformers' own, and
tc3-eval end to end on the tiny model (report.json, report.md, report.png)."""

from __future__ import annotations

import json
import math

import pytest
from tc3.evaluate import (
    bleu,
    chrf,
    distinct_n,
    has_loop,
    reference_loss,
    rouge,
    sample_records,
    text_metrics,
    words,
)


def test_rouge_on_known_pairs():
    assert rouge(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(
        {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    # 2 of 4 unigrams, 1 of 3 bigrams, LCS "a b" of 4
    assert rouge(["a b c d"], ["a b e f"]) == pytest.approx({"rouge1": 0.5, "rouge2": 1 / 3, "rougeL": 0.5})
    # mean over examples: (1 + 0) / 2
    assert rouge(["x y", "p q"], ["x y", "r s"])["rouge1"] == pytest.approx(0.5)
    # LCS "a c" (2 of 3 both ways) while the bigrams share nothing
    assert rouge(["a b c"], ["a c d"]) == pytest.approx({"rouge1": 2 / 3, "rouge2": 0.0, "rougeL": 2 / 3})


def test_bleu_and_chrf_on_known_pairs():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    # n-gram precisions 5/6, 3/5, 1/4, 1/6, brevity penalty 1
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert bleu(["the cat is on the mat"], ["the cat sat on the mat"]) == pytest.approx(expected, abs=1e-6)
    assert chrf(["abcdef"], ["abcdef"]) == pytest.approx(100.0)
    assert chrf(["xyz"], ["abc"]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        bleu(["a"], ["a", "b"])


def test_distinct_and_loops_on_known_texts():
    assert words("It's a Cat, isn't it?") == ["it's", "a", "cat", ",", "isn't", "it", "?"]
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert distinct_n(["a"], 2) == 0.0
    assert has_loop("buy it now and save , buy it now and save , buy it now and save")
    assert has_loop("great book . " * 6)
    assert not has_loop("buy it now and save , then buy it now and save more")  # twice is not a loop
    assert not has_loop("A charming picture book about a cat and her kittens, for ages 2 to 5.")
    metrics = text_metrics(["great book . " * 6, "a fine story"], ["a fine story", "a fine story"])
    assert metrics["loop_share"] == 0.5 and metrics["rouge1"] == pytest.approx(0.5)


def test_sample_is_seeded_and_skips_empty():
    records = [{"title": f"t{i}", "description": "d" if i % 5 else ""} for i in range(50)]
    a, b = sample_records(records, 10, 3407), sample_records(records, 10, 3407)
    assert a == b and len(a) == 10 and all(r["description"] for r in a)
    assert sample_records(records, 10, 1) != a
    assert len(sample_records(records, 1000, 0)) == 40


def test_reference_loss_matches_transformers_loss(tiny_model_dir):
    import torch
    from tc3.generate import load_model
    from tc3.prompts import completion_messages, prompt_messages, render_prompt

    loaded = load_model(str(tiny_model_dir), device="cpu")
    tok = loaded.tokenizer
    title, description = "Mog's Kittens", "A board book about a cat."
    result = reference_loss(loaded, [(title, description)], "pt")
    prompt = tok(render_prompt(tok, title, "pt"), add_special_tokens=False)["input_ids"]
    full = tok(tok.apply_chat_template(prompt_messages(title, "pt") + completion_messages(description),
                                       tokenize=False), add_special_tokens=False)["input_ids"]
    labels = [-100] * len(prompt) + full[len(prompt):]
    with torch.no_grad():
        expected = loaded.model(input_ids=torch.tensor([full]), labels=torch.tensor([labels])).loss.item()
    assert result["eval_loss"] == pytest.approx(expected, rel=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-4)
    assert result["reference_tokens"] == len(full) - len(prompt)
    # batching with padding does not change it
    pairs = [(title, description), ("X", "A much longer description of something else entirely, with words.")]
    alone = [reference_loss(loaded, [p], "pt") for p in pairs]
    together = reference_loss(loaded, pairs, "pt", batch_size=2)
    total = sum(r["eval_loss"] * r["reference_tokens"] for r in alone) / sum(r["reference_tokens"] for r in alone)
    assert together["eval_loss"] == pytest.approx(total, rel=1e-4)


def test_loss_chunks_bound_the_logits_of_a_batch():
    from tc3.eval.metrics import loss_chunks

    examples = [([0] * n, [0] * n) for n in (10, 20, 30, 40, 50)]
    # within the batch size when memory is plenty
    assert [len(c) for c in loss_chunks(examples, 2, 100, budget=1 << 30)] == [2, 2, 1]
    # a budget of 3 rows of 40 tokens (x vocab 100 x 4 bytes): rows are added while rows x longest fits
    chunks = loss_chunks(examples, 50, 100, budget=3 * 40 * 100 * 4)
    assert [len(c) for c in chunks] == [3, 2]
    assert all(len(c) * max(len(ids) for ids, _ in c) * 400 <= 3 * 40 * 400 for c in chunks)
    # an example over the budget alone is still scored, alone; every example is kept, in order
    chunks = loss_chunks(examples, 50, 100, budget=1)
    assert [len(c) for c in chunks] == [1] * 5 and [c[0] for c in chunks] == examples


def test_reference_loss_under_a_memory_budget_is_the_same(tiny_model_dir, monkeypatch):
    from tc3.eval import metrics
    from tc3.generate import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu")
    pairs = [(f"Title {i}", "A description " + "with words " * i) for i in range(6)]
    whole = reference_loss(loaded, pairs, "pt", batch_size=6)
    monkeypatch.setattr(metrics, "LOSS_LOGITS_BYTES", 1)  # one example a pass
    sizes, chunks = [], metrics.loss_chunks
    monkeypatch.setattr(metrics, "loss_chunks", lambda *a: [sizes.append(len(c)) or c for c in chunks(*a)])
    split = reference_loss(loaded, pairs, "pt", batch_size=6)
    assert sizes == [1] * 6
    assert split["reference_tokens"] == whole["reference_tokens"]
    assert split["eval_loss"] == pytest.approx(whole["eval_loss"], rel=1e-4)


def test_tc3_eval_writes_report(tiny_model_dir, prep_dir, tmp_path, capsys):
    from tc3.cli.eval import main

    out = tmp_path / "report"
    args = ["--model", str(tiny_model_dir), "--baseline", str(tiny_model_dir), "--data", str(prep_dir),
            "--n", "4", "--max-new-tokens", "4", "--batch-size", "4", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"baseline", "model"}
    metrics = report["models"]["model"]["metrics"]
    for key in ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "eval_loss", "perplexity", "mean_words",
                "mean_tokens", "distinct2", "loop_share", "stopped_share"):
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN
    # same model, same greedy settings: identical outputs and numbers, zero change
    assert report["models"]["baseline"]["metrics"]["rougeL"] == metrics["rougeL"]
    assert report["delta"]["eval_loss"] == 0
    assert len(report["examples"]) == 4 and len(report["generations"]["model"]) == 4
    assert report["settings"]["seed"] == 3407 and report["settings"]["repetition_penalty"] == 1.15
    assert report["settings"]["used"]["tc3_repetition_penalty"] == 1.15  # what generate() ran with
    assert report["settings"]["used"]["repetition_penalty"] == 1.0 and report["settings"]["used"]["num_beams"] == 1
    assert all(g["tokens"] <= 4 for g in report["generations"]["model"])
    md = (out / "report.md").read_text()
    assert "| ROUGE-L |" in md and "![metrics](report.png)" in md and "## 4 examples" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ROUGE-L" in capsys.readouterr().out

    assert main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tc3-eval: error:") and "validation" in err and err.count("\n") == 1


def test_tc3_eval_questions_unseen_reports_both_phrasings(tiny_model_dir, prep_dir, tmp_path, capsys):
    from tc3.cli.eval import main
    from tc3.prompts import QUESTION_TEMPLATES, UNSEEN_QUESTION_TEMPLATES

    out = tmp_path / "report"
    args = ["--model", str(tiny_model_dir), "--data", str(prep_dir), "--questions", "unseen", "--n", "6",
            "--max-new-tokens", "3", "--batch-size", "6", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["questions"] == "unseen"
    seen = report["generations"]["model"]
    unseen = report["generations_unseen"]["model"]
    assert [g["title"] for g in seen] == [g["title"] for g in unseen]
    assert all(g["question"] in QUESTION_TEMPLATES for g in seen)
    assert all(g["question"] in UNSEEN_QUESTION_TEMPLATES for g in unseen)
    row = report["phrasings"]["model"]
    assert row["rougeL_seen"] == report["models"]["model"]["metrics"]["rougeL"]
    if row["rougeL_seen"]:
        assert row["unseen_over_seen"] == pytest.approx(row["rougeL_unseen"] / row["rougeL_seen"])
    else:  # a random model scores 0: no ratio, written as null rather than NaN
        assert row["unseen_over_seen"] is None and row["within_target"] is False
    md = (out / "report.md").read_text()
    assert "## Seen and unseen question phrasings" in md and "| ROUGE-L seen | ROUGE-L unseen |" in md
    assert "ROUGE-L seen phrasings" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------------------
# Evaluation tells the truth (issue 12)


def test_rouge_keeps_non_ascii_letters():
    from rouge_score import rouge_scorer

    texts = ("Descrição do avião: confortável, útil e pequeno.", "これは猫と子猫についての素晴らしい絵本です。",
             "Книга о кошке и котятах")
    for text in texts:
        assert rouge([text], [text]) == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    # accents are letters, not word breaks: "avião" is not "avi" + "o"
    assert rouge(["o avião"], ["o avi o"])["rouge1"] < 1.0
    # Japanese is scored character by character (no spaces): half the characters shared
    assert rouge(["猫の本"], ["猫の絵"])["rouge1"] == pytest.approx(2 / 3)
    # English scores are rouge-score's own (same tokens, same Porter stemming)
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    pairs = [("The cats were running quickly, 10 times!", "A cat runs quick 10 time."),
             ("Board book about kittens", "A board-book about a kitten and her mother")]
    for prediction, reference in pairs:
        expected = {k: v.fmeasure for k, v in plain.score(reference, prediction).items()}
        assert rouge([prediction], [reference]) == pytest.approx(expected)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    from tc3.evaluate import bootstrap_ci

    values = [0.1, 0.5, 0.2, 0.9, 0.3, 0.0, 0.4, 0.7]
    low, high = bootstrap_ci(values, seed=1)
    assert low < sum(values) / len(values) < high and bootstrap_ci(values, seed=1) == (low, high)
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)
    assert bootstrap_ci([1.0]) is None  # one title: no interval to give
    wide, narrow = bootstrap_ci([0.0, 1.0] * 5), bootstrap_ci([0.0, 1.0] * 200)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]  # more titles, tighter interval


def test_unsupported_share_counts_words_and_numbers_from_nowhere():
    from tc3.evaluate import unsupported_share

    record = "Product record X1\nTitle: Anker PowerCore 10000\nDescription: A 10000 mAh portable charger."
    assert unsupported_share("A portable charger of 10000 mAh.", [record, "What is it?"]) == 0.0
    # "waterproof" and "20000" are in neither the record nor the question: 2 of 5 content words
    assert unsupported_share("A waterproof portable charger, 20000 mAh.", [record]) == pytest.approx(2 / 5)
    assert unsupported_share("It is for you.", [record]) is None  # no content word to check


@pytest.fixture(scope="module")
def pt_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter over the tiny model, trained (by its tc3 config) with the Portuguese instruction only. Its B
    matrices are zero, so it answers exactly as its base does when asked the same way."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("pt-adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(out)
    (out / "tc3_config.yaml").write_text(f"model: {tiny_model_dir}\ninstruction: pt\nquestions: fixed\n")
    return out


def test_eval_asks_the_model_as_trained_and_the_base_in_english_side_by_side(pt_adapter, tiny_model_dir, prep_dir,
                                                                            tmp_path, capsys):
    from tc3.cli.eval import main

    out = tmp_path / "report"
    assert main(["--model", str(pt_adapter), "--baseline", str(tiny_model_dir), "--data", str(prep_dir), "--n", "3",
                 "--max-new-tokens", "3", "--batch-size", "3", "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    models = report["models"]
    assert {label: m["instruction"] for label, m in models.items()} == {
        "baseline": "en", "baseline_as_model": "pt", "model": "pt"}
    # the adapter (zero B) is its base: asked the same way it answers the same; asked in English, it does not
    assert models["baseline_as_model"]["metrics"]["eval_loss"] == pytest.approx(models["model"]["metrics"]["eval_loss"])
    answers = {label: [g["description"] for g in report["generations"][label]] for label in models}
    assert answers["baseline_as_model"] == answers["model"]
    assert models["baseline"]["metrics"]["eval_loss"] != pytest.approx(models["model"]["metrics"]["eval_loss"])
    # every change is measured against the fairly asked base
    fair = models["baseline"]["metrics"]["eval_loss"]
    assert report["delta"]["eval_loss"] == pytest.approx(models["model"]["metrics"]["eval_loss"] - fair)
    assert report["relative_vs_baseline_as_model"]["eval_loss"] == pytest.approx(0.0, abs=1e-6)
    assert len(report["delta_ci"]["rougeL"]) == 2 and len(report["delta_ci"]["stopped_share"]) == 2
    md = (out / "report.md").read_text()
    assert "| metric | baseline | baseline_as_model | model | change |" in md
    assert "asked with `en`" in md and "asked with `pt`" in md and "fair comparison" in md
    assert "baseline_as_model" in capsys.readouterr().out
    # asked explicitly, the model follows --instruction, and the base is not asked twice the same way
    out2 = tmp_path / "report-en"
    assert main(["--model", str(pt_adapter), "--baseline", str(tiny_model_dir), "--data", str(prep_dir), "--n", "2",
                 "--max-new-tokens", "2", "--out", str(out2), "--device", "cpu", "--instruction", "en"]) == 0
    assert set(json.loads((out2 / "report.json").read_text())["models"]) == {"baseline", "model"}


def test_report_has_no_nan_rows_says_when_n_exceeds_the_split_and_warns_on_small_samples(tiny_model_dir, prep_dir,
                                                                                         tmp_path, capsys):
    from tc3.cli.eval import main
    from tc3.evaluate import usable_records
    from tc3.layout import PrepDir

    usable = len(usable_records(PrepDir(prep_dir).read_split("validation")))
    out = tmp_path / "report"
    # 2 new tokens: no reference fits the limit, so "stopped among titles whose reference fits" has no value
    assert main(["--model", str(tiny_model_dir), "--data", str(prep_dir), "--n", "100000", "--max-new-tokens", "2",
                 "--batch-size", "64", "--out", str(out), "--device", "cpu"]) == 0
    assert f"--n 100000 is more than the validation split holds: {usable} records" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["n_scored"] == usable and report["settings"]["n_usable"] == usable
    metrics = report["models"]["model"]["metrics"]
    assert metrics["stopped_share_short_refs"] is None  # strict JSON: null, not NaN
    low, high = metrics["rougeL_ci"]
    assert low <= metrics["rougeL"] <= high
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert not any(cell.strip() in ("nan", "None", "inf") for line in table for cell in line.split("|"))
    assert "Not shown, no value for every model: Stopped, among titles whose reference fits the limit" in md
    assert f"100000 titles were asked for; the split has only {usable}" in md
    assert f"Small sample ({usable} titles)" in md
    assert "| ROUGE-L | " in md and " [" in md.split("| ROUGE-L | ")[1].splitlines()[0]  # with its interval


def test_plot_has_a_panel_for_every_row_of_the_table(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from tc3.evaluate import METRIC_LABELS, plot_metrics, shown_metrics

    full = {key: 0.5 for key, _ in METRIC_LABELS} | {"bleu": 40.0, "perplexity": 80.0, "rougeL_ci": (0.4, 0.6)}
    metrics = {"baseline": full, "model": full | {"stopped_share_short_refs": float("nan")}}
    shown = shown_metrics(metrics)
    assert len(shown) == len(METRIC_LABELS) - 1 and "stopped_share_short_refs" not in dict(shown)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_metrics(tmp_path / "report.png", metrics, {"baseline": "base", "model": "tuned"})
    titles = [ax.get_title() for ax in figures[0].axes if ax.get_title()]
    assert titles == [title for _, title in shown]  # BLEU and perplexity too, each on its own scale
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_cache_key_covers_revision_base_device_and_references(tiny_model_dir, pt_adapter, tmp_path, monkeypatch):
    import shutil

    from types import SimpleNamespace

    from tc3.eval.run import _cache_key
    from tc3.generate import GenerationSettings
    from tc3.model_ref import resolve_model, stamp

    records = [{"title": "A", "description": "one"}, {"title": "B", "description": "two"}]
    settings = GenerationSettings()

    def key(name=str(pt_adapter), base=None, recs=records, device="cpu"):
        # a hub id that is not really downloaded: keyed by its fingerprint alone
        model = resolve_model(name, base) if "/" not in name or name.startswith("/") else SimpleNamespace(
            fingerprint=stamp(name))
        return _cache_key(model, recs, settings, 8, "fixed", device)

    assert key() == key()
    assert key(device="cuda") != key()
    assert key(recs=[records[0], {"title": "B", "description": "changed"}]) != key()  # same titles, new references
    other_base = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other_base)
    assert key(base=str(other_base)) != key()
    # a Hub id is keyed by the revision of its cached snapshot
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshots = tmp_path / "hub" / "models--org--model" / "snapshots"
    (snapshots / "aaaa").mkdir(parents=True)
    (snapshots / "aaaa" / "config.json").write_text("{}")
    first = key(name="org/model")
    (snapshots / "bbbb").mkdir()
    (snapshots / "bbbb" / "config.json").write_text("{}")
    import os
    os.utime(snapshots / "bbbb" / "config.json", (2**31, 2**31))  # the newer snapshot
    assert key(name="org/model") != first


def test_cache_key_covers_the_prompts_and_tc3_itself(pt_adapter, monkeypatch):
    """Answers cached before an edited question template or an upgrade of tc3 are not reused: they were asked
    another question, or made by other code."""
    import tc3
    from tc3 import prompts
    from tc3.cache_keys import code_digest
    from tc3.eval.run import _cache_key
    from tc3.generate import GenerationSettings
    from tc3.model_ref import resolve_model

    model = resolve_model(str(pt_adapter))

    def key():
        return _cache_key(model, [{"title": "A", "description": "one"}], GenerationSettings(), 8)

    before = key()
    monkeypatch.setitem(prompts.INSTRUCTIONS, "pt", "Descreva o produto.")
    assert key() != before
    monkeypatch.undo()
    assert key() == before
    monkeypatch.setattr(tc3, "__version__", "99.0")
    code_digest.cache_clear()
    try:
        assert key() != before
    finally:
        monkeypatch.undo()
        code_digest.cache_clear()
