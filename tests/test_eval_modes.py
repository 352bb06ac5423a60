"""tc3-eval --modes (issue 25): seen, unseen and grounded, each against the base in one report; the faithfulness
measures (invented attributions, the hallucination proxy) on hand-made answers; the records of each mode."""

from __future__ import annotations

import json

import pytest
from conftest import child_env

from tc3.eval.faithfulness import claimed_facts, invented_attributions, unsupported_facts
from tc3.eval.modes import HEADLINE, asks_of, chrf_ci, copy_answers, parse_modes, trained_rows

QUOTE = "'A book that will make you laugh, cry and feel the full range of emotions.' Daily Mail"


def test_facts_are_numbers_and_names_not_sentence_starts():
    text = ("This novel by Stephen King won the 1987 Bram Stoker Award. It has 320 pages.\n"
            "Readers love Tolkien's maps. \"Great\", said The Guardian.")
    # "This", "It", "Readers" start sentences; "The" is a stopword; the possessive is the name
    assert claimed_facts(text) == ["stephen", "king", "1987", "bram", "stoker", "award", "320", "tolkien",
                                   "guardian"]
    facts, unsupported = unsupported_facts(text, ["What about It by Stephen King?", "It", "320 pages of Tolkien"])
    assert len(facts) == 9 and unsupported == ["1987", "bram", "stoker", "award", "guardian"]
    assert claimed_facts("a plain answer with nothing to check.") == []


def test_invented_attributions_use_the_engines_rule_and_spare_the_records_own():
    assert invented_attributions(QUOTE, "Some Title. A novel of love.") == ["Daily Mail"]
    assert invented_attributions(QUOTE, f"Title {QUOTE}") == []  # the record quoted it: not invented
    assert invented_attributions("A warm story of a family in Daily life.", "x") == []  # no quote, no source


def test_answer_set_metrics_pool_facts_and_break_down_by_kind():
    from tc3.eval.modes import answer_set_metrics

    records = [{"uid": "a", "title": "The Prophet", "kind": "description",
                "description": "Kahlil Gibran's 1923 book of prose poetry, in 26 essays."},
               {"uid": "b", "title": "Mog's Kittens", "kind": "review_quotes",
                "description": "'Charming.' The Times"}]
    answers = ["A book by Kahlil Gibran, first printed in 1923 by Knopf. " + QUOTE,  # Knopf, Daily Mail invented
               "A story about Mog, read by 300 families."]  # 300 unsupported; Mog is in the title
    asks = asks_of("unseen", records)
    metrics, rows = answer_set_metrics(answers, asks, records, "en", seed=0, stopped=[True, False])
    assert rows[0]["invented_attributions"] == ["Daily Mail"] and rows[1]["invented_attributions"] == []
    assert rows[0]["unsupported_facts"] == ["knopf", "mail"] and rows[1]["unsupported_facts"] == ["300"]
    assert metrics["invented_attribution_share"] == 0.5
    assert metrics["hallucination_share"] == pytest.approx(3 / (rows[0]["facts"] + rows[1]["facts"]))
    kinds = metrics["by_kind"]
    assert set(kinds) == {"description", "review_quotes"}
    assert kinds["review_quotes"]["hallucination_share"] == 0.5  # "300" of "mog" (the title's) and "300"
    assert kinds["description"]["stopped_share"] == 1.0 and kinds["review_quotes"]["invented_attribution_share"] == 0


def test_chrf_interval_is_seeded_and_brackets_the_corpus_score():
    from tc3.evaluate import chrf

    predictions = ["the cat sat on the mat", "a dog barks", "blue sky today", "nothing alike here", "a red car"]
    references = ["the cat is on the mat", "the dog barked", "a blue sky", "completely different text", "red cars"]
    low, high = chrf_ci(predictions, references, seed=1)
    assert low < chrf(predictions, references) < high and chrf_ci(predictions, references, seed=1) == (low, high)
    assert chrf_ci(predictions[:1], references[:1]) is None


def test_modes_parse_in_order_and_refuse_unknown_words():
    from tc3.errors import UserError

    assert parse_modes("grounded, seen") == ["seen", "grounded"]
    for bad in ("", "seen,heldout"):
        with pytest.raises(UserError, match="--modes takes seen, unseen, grounded"):
            parse_modes(bad)


def test_seen_records_are_the_products_trained_on_asked_as_trained(prep_dir):
    """The seen mode draws from exactly the rows tc3-train trained on (kinds, then the seeded sample), and asks each
    with the question its training example had; grounded prompts hold the record, the copy answer is its text."""
    from tc3.config import load_config
    from tc3.data import training_splits
    from tc3.prompts import choose_question, render_context, render_question

    config = load_config("tiny-cpu", [f"data={prep_dir}", "train_samples=60", "questions=varied",
                                      "context_fraction=0"])
    rows = trained_rows(str(prep_dir), config)
    train, _ = training_splits(config)
    assert [r["description"].strip() for r in rows] == [t["completion"][0]["content"] for t in train]
    assert len(rows) == 60 and not any(r["kind"] == "review_quotes" for r in rows)
    asks = asks_of("seen", rows, config)
    assert [a.question for a in asks] == [choose_question(r["uid"], config.seed) for r in rows]
    assert [t["prompt"][0]["content"] for t in train] == [render_question(a.question, a.title) for a in asks]
    fixed = load_config("tiny-cpu", [f"data={prep_dir}", "questions=fixed"])
    assert all(a.question is None and a.context is None for a in asks_of("seen", rows, fixed))
    grounded = asks_of("grounded", rows)
    assert all(a.context is r for a, r in zip(grounded, rows))
    for record, answer in zip(rows, copy_answers(rows)):
        assert answer in render_context(record)
        assert answer == record["description"].strip() or len(record["description"]) > 1500


@pytest.fixture(scope="module")
def recall_adapter(tiny_model_dir, tmp_path_factory):
    """A zero-B LoRA adapter over the tiny model whose tc3 config says it trained on 40 descriptive rows with one
    fixed English question."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("recall-adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(out)
    (out / "tc3_config.yaml").write_text(f"model: {tiny_model_dir}\ninstruction: en\nquestions: fixed\n"
                                         "context_fraction: 0\ntrain_samples: 40\nepochs: 20\n")
    return out


def test_tc3_eval_modes_scores_seen_unseen_grounded_against_the_base(recall_adapter, tiny_model_dir, prep_dir,
                                                                      tmp_path, capsys):
    from tc3.cli.eval import main
    from tc3.config import load_config

    out = tmp_path / "report"
    args = ["--model", str(recall_adapter), "--baseline", str(tiny_model_dir), "--data", str(prep_dir),
            "--modes", "seen,unseen,grounded", "--n", "4", "--max-new-tokens", "4", "--batch-size", "4",
            "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["modes"]) == ["seen", "unseen", "grounded"]
    assert report["settings"]["used"]["repetition_penalty"] == 1.0  # what generate() ran with, recorded
    assert report["models"]["model"]["training"]["epochs"] == 20 and report["settings"]["device"] == "cpu"
    trained = {r["uid"] for r in trained_rows(str(prep_dir), load_config(recall_adapter / "tc3_config.yaml"))}
    seen = report["generations"]["seen"]
    assert {g["uid"] for g in seen["model"]} <= trained and len(seen["model"]) == 4
    unseen_uids = [g["uid"] for g in report["generations"]["unseen"]["model"]]
    assert unseen_uids == [g["uid"] for g in report["generations"]["grounded"]["model"]]
    assert not set(unseen_uids) & trained
    for mode, entry in report["modes"].items():
        assert set(entry["metrics"]) == ({"model", "baseline", "copy"} if mode == "grounded" else
                                         {"model", "baseline"})
        for label in ("model", "baseline"):
            metrics = entry["metrics"][label]
            assert all(key in metrics for key in HEADLINE) and len(metrics["rougeL_ci"]) == 2
            assert len(metrics["chrf_ci"]) == 2 and metrics["perplexity"] > 1 and metrics["by_kind"]
        assert entry["delta"]["rougeL"] == pytest.approx(entry["metrics"]["model"]["rougeL"]
                                                         - entry["metrics"]["baseline"]["rougeL"])
    # the adapter's B is zero: asked the same way (English, no record), it answers as its base does
    answers = {label: [g["description"] for g in report["generations"]["unseen"][label]]
               for label in ("model", "baseline")}
    assert answers["model"] == answers["baseline"]
    copy = report["modes"]["grounded"]["metrics"]["copy"]
    assert copy["rougeL"] > 0.9 and copy["hallucination_share"] == 0 and copy["perplexity"] is None
    md = (out / "report.md").read_text()
    for heading in ("## seen:", "## unseen:", "## grounded:", "| Hallucination proxy |", "By content kind:"):
        assert heading in md
    assert all((out / f"report-{mode}.png").read_bytes()[:4] == b"\x89PNG" for mode in report["modes"])
    printed = capsys.readouterr().out
    assert "grounded copy" in printed and "seen     model" in printed

    # a rerun reuses every answer; user mistakes are one line, before any model loads
    assert main(args) == 0 and "reusing" in capsys.readouterr().err
    for extra in (["--modes", "seen,later"], ["--modes", "seen", "--split", "train"],
                  ["--modes", "seen", "--questions", "unseen"]):
        assert main([*args[:6], *extra, "--out", str(tmp_path / "other")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tc3-eval: error:") and err.count("\n") == 1


def test_summary_script_records_both_goals_and_the_attribution_shares(recall_adapter, tiny_model_dir, prep_dir,
                                                                      tmp_path):
    """benches/smollm2_eval.py on tiny-model reports: summary.json's shape, targets, the copied reports, and
    content-kinds.json's invented_attribution_share filled with its other keys kept."""
    import sys
    from pathlib import Path

    from tc3.cli.eval import main

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
    import smollm2_eval

    report = tmp_path / "eval"
    assert main(["--model", str(recall_adapter), "--baseline", str(tiny_model_dir), "--data", str(prep_dir),
                 "--modes", "seen,unseen,grounded", "--n", "3", "--max-new-tokens", "2", "--batch-size", "3",
                 "--out", str(report), "--device", "cpu"]) == 0
    kinds = tmp_path / "content-kinds.json"
    kinds.write_text(json.dumps({"accuracy": 0.9, "invented_attribution_share": {"unfiltered": None}}))
    out = tmp_path / "smollm2-eval"
    assert smollm2_eval.main(["--recall", str(report), "--describe", str(report), "--unfiltered", str(report),
                              "--out", str(out), "--content-kinds", str(kinds), "--commit", "abc123"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    written = json.loads((report / "report.json").read_text())
    for mode in ("seen", "unseen", "grounded"):
        for label in ("model", "baseline"):
            assert set(summary[mode][label]) >= {"rougeL", "rougeL_ci", "chrf", "perplexity", "stopped_share",
                                                 "loop_share", "invented_attribution_share", "hallucination_share"}
            assert summary[mode][label]["rougeL"] == written["modes"][mode]["metrics"][label]["rougeL"]
    assert summary["grounded"]["copy"]["rougeL"] > 0.9
    settings = summary["settings"]
    assert settings["config"] == {"seen": "smollm2-recall", "unseen": "smollm2-describe",
                                  "grounded": "smollm2-describe"}
    assert settings["epochs"]["seen"] == 20 and settings["n"]["recall"] == 3 and settings["commit"] == "abc123"
    assert settings["max_new_tokens"]["describe"] == 2 and settings["device"]["recall"] == "cpu"
    assert summary["targets"]["seen_rougeL"]["met"] is (summary["seen"]["model"]["rougeL"] >= 0.7)
    assert (out / "recall" / "report.md").is_file() and (out / "describe-all-kinds" / "report-unseen.png").is_file()
    shares = json.loads(kinds.read_text())
    assert shares["accuracy"] == 0.9 and shares["invented_attribution_share"]["measured"] is True
    assert shares["invented_attribution_share"]["filtered"] == summary["unseen"]["model"]["invented_attribution_share"]
    other = tmp_path / "unseen-only"
    other.mkdir()
    (other / "report.json").write_text(json.dumps({"modes": {}}))
    with pytest.raises(SystemExit, match="has no seen mode"):
        smollm2_eval.main(["--recall", str(other), "--describe", str(report)])


@pytest.mark.slow
def test_goals_script_runs_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    """scripts/smollm2_goals.sh, the GPU proof's one command, on CPU with the tiny model in place of SmolLM2: three
    runs trained with the shipped goal configs, three reports, summary.json and the attribution shares."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = child_env(N="3", MAX_NEW="4", BATCH="3", RESULTS=str(tmp_path / "results"),
                    TRAIN_EXTRA="max_steps=2 eval_samples=4")
    done = subprocess.run(["bash", str(root / "scripts" / "smollm2_goals.sh"), str(tiny_model_dir),
                           str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / "smollm2-eval" / "summary.json").read_text())
    assert summary["settings"]["epochs"] == {"seen": 20, "unseen": 5, "grounded": 5}
    kinds = json.loads((tmp_path / "results" / "content-kinds.json").read_text())["invented_attribution_share"]
    assert kinds["measured"] is True and "seen_rougeL" in done.stdout
    recall = load_saved_config(tmp_path / "work" / "recall")
    assert (recall.questions, recall.context_fraction, recall.lora_r) == ("fixed", 0.0, 64)
    assert load_saved_config(tmp_path / "work" / "describe-all-kinds").kinds is None
    assert load_saved_config(tmp_path / "work" / "describe").grounded_kinds == ["review_quotes"]


def load_saved_config(run_dir):
    from tc3.config import load_config

    return load_config(run_dir / "tc3_config.yaml")


def test_seen_coverage_says_how_much_of_the_train_rows_a_run_can_have_seen(tmp_path):
    """A run of 3 steps of 4 examples has seen at most 12 of 400 rows: 'seen' is then mostly unseen, and said so."""
    import json

    from tc3.eval.modes import seen_coverage
    from tc3.layout import RunDir

    for rows, coverage in ((400, pytest.approx(0.03)), (10, 1.0)):
        facts = {"global_step": 3, "global_batch_size": 4, "train_examples": rows}
        (tmp_path / "metrics.json").write_text(json.dumps(facts))
        assert seen_coverage(RunDir(tmp_path)) == coverage
    assert seen_coverage(RunDir(tmp_path / "other")) is None


def test_perplexity_by_kind_groups_the_unseen_references(recall_adapter, tiny_model_dir, prep_dir, tmp_path):
    """benches/perplexity_by_kind.py: one row per content kind of tc3-eval's unseen draw and `all`, the counts adding
    up; the zero-B adapter is its base, so every ratio is 1 (the fine-tuned model asked as trained, in English)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
    import perplexity_by_kind

    out = tmp_path / "by-kind.json"
    assert perplexity_by_kind.main([str(recall_adapter), str(tiny_model_dir), str(prep_dir), "-o", str(out),
                                    "--n", "8"]) == 0
    rows = json.loads(out.read_text())["by_kind"]
    kinds = [kind for kind in rows if kind != "all"]
    assert kinds and rows["all"]["n"] == 8 == sum(rows[kind]["n"] for kind in kinds)
    assert rows["all"]["reference_tokens"] == sum(rows[kind]["reference_tokens"] for kind in kinds)
    assert all(row["ratio"] == pytest.approx(1.0, abs=1e-3) for row in rows.values())
