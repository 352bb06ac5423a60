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
