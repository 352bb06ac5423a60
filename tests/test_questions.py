"""Question variety: templates drawn per example under the seed, every template through the one chat-template path,
context turns, and the templates recorded in the dataset card and the model card."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import child_env
from tc3.config import load_config
from tc3.data import load_splits, sample, training_splits
from tc3.prompts import (
    INSTRUCTIONS,
    QUESTION_TEMPLATES,
    UNSEEN_QUESTION_TEMPLATES,
    choose_question,
    completion_messages,
    prompt_ids,
    prompt_messages,
    render_question,
    title_in_question,
    user_turn,
)

CONFIGS = Path(__file__).resolve().parents[1] / "python" / "tc3" / "configs"
TITLE = "The Prophet: a (Hardcover) edition?"
RECORD = {"uid": "B000TEST01", "title": TITLE, "description": "Poetic essays on love, work and death. " * 60}


def test_question_choice_is_seeded_by_uid_and_free_of_order():
    uids = [f"B{i:09d}" for i in range(3000)]
    first = [choose_question(uid, 3407) for uid in uids]
    assert first == [choose_question(uid, 3407) for uid in uids]
    assert [choose_question(uid, 3407) for uid in reversed(uids)] == first[::-1]
    assert set(first) == set(QUESTION_TEMPLATES)  # every template is used ...
    assert max(Counter(first).values()) < 2 * len(uids) / len(QUESTION_TEMPLATES)  # ... about evenly
    other_seed = [choose_question(uid, 1) for uid in uids]
    assert sum(a != b for a, b in zip(first, other_seed)) > len(uids) / 2
    assert set(choose_question(uid, 3407, UNSEEN_QUESTION_TEMPLATES) for uid in uids) == set(UNSEEN_QUESTION_TEMPLATES)
    assert not set(QUESTION_TEMPLATES) & set(UNSEEN_QUESTION_TEMPLATES)
    assert INSTRUCTIONS["pt"] in QUESTION_TEMPLATES and INSTRUCTIONS["en"] in QUESTION_TEMPLATES


@pytest.mark.parametrize("template", QUESTION_TEMPLATES + UNSEEN_QUESTION_TEMPLATES)
@pytest.mark.parametrize("grounded", [False, True])
def test_every_template_renders_through_the_chat_template(tiny_tokenizer, template, grounded):
    context = RECORD if grounded else None
    turn = user_turn(TITLE, template, context)
    assert turn.endswith(render_question(template, TITLE)) and TITLE in turn and "{title}" not in turn
    assert title_in_question(render_question(template, TITLE)) == TITLE  # the lookup can take the title back out
    if grounded:
        assert turn.startswith(f"Product record {RECORD['uid']}\nTitle: {TITLE}\nDescription: Poetic essays")
        assert len(turn) < len(RECORD["description"])  # a long description is cut in the prompt
    ids = prompt_ids(tiny_tokenizer, TITLE, template, context)
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    full = tiny_tokenizer.apply_chat_template(
        prompt_messages(TITLE, template, context) + completion_messages("A book."), tokenize=True, return_dict=True
    )["input_ids"]
    assert full[: len(ids)] == ids  # generation feeds exactly the prompt part of a training example


def _config(prep_dir, *overrides):
    # every kind: the rows below are sampled from the whole split, as the trainer's are with kinds=null
    return load_config(CONFIGS / "tiny-cpu.yaml", [f"data={prep_dir}", "train_samples=200", "eval_samples=20",
                                                   "kinds=null", *overrides])


def _user_turns(dataset):
    return [row["prompt"][0]["content"] for row in dataset]


def test_training_examples_draw_questions_and_context_turns(prep_dir):
    config = _config(prep_dir, "questions=varied", "context_fraction=0.5")
    train, _ = training_splits(config)
    rows = sample(load_splits(prep_dir)["train"], 200, config.seed)
    turns = _user_turns(train)
    grounded = 0
    for row, turn in zip(rows, turns):
        question = render_question(choose_question(row["uid"], config.seed), row["title"])
        assert turn.endswith(question)
        if turn.startswith(f"Product record {row['uid']}\nTitle: {row['title'].strip()}\n"):
            grounded += 1
            assert turn == user_turn(row["title"], choose_question(row["uid"], config.seed), row)
        else:
            assert turn == question
    assert 60 < grounded < 140  # about half, seeded by uid
    assert len(set(turn.split("\n")[-1][:12] for turn in turns)) > 5  # varied phrasings, not one
    assert _user_turns(training_splits(config)[0]) == turns  # the same examples on a second run

    fixed = training_splits(_config(prep_dir, "questions=fixed", "context_fraction=0"))[0]
    assert _user_turns(fixed) == [user_turn(row["title"], "pt") for row in rows]


def test_grounded_kinds_train_only_with_their_record(prep_dir):
    """Rows of grounded_kinds join the sample and always see their record; the other kinds keep the seeded share
    (none here); the seen mode leaves the grounded-only rows out, as they were never asked closed book."""
    from tc3.eval.modes import trained_rows
    from tc3.model_card import kinds_line

    config = load_config(CONFIGS / "tiny-cpu.yaml", [f"data={prep_dir}", "train_samples=200", "eval_samples=40",
                                                     "context_fraction=0", "grounded_kinds=[review_quotes]"])
    train, evaluation = training_splits(config)
    rows = sample(_kept(prep_dir, config), 200, config.seed).to_list()
    by_kind = Counter(row["kind"] for row in rows)
    assert by_kind["review_quotes"] > 10 and by_kind["description"] > 10
    for row, turn in zip(rows, _user_turns(train)):
        assert turn.startswith(f"Product record {row['uid']}\n") == (row["kind"] == "review_quotes"), row["kind"]
    assert any(turn.startswith("Product record ") for turn in _user_turns(evaluation))  # validation rendered alike
    seen = trained_rows(str(prep_dir), config)
    assert seen == [row for row in rows if row["kind"] != "review_quotes"]
    assert kinds_line(config.kinds, config.grounded_kinds).endswith(
        "(grounded examples, never closed book): `review_quotes`.")
    without = load_config(CONFIGS / "tiny-cpu.yaml", [f"data={prep_dir}", "context_fraction=0"])
    assert not any(row["kind"] == "review_quotes" for row in trained_rows(str(prep_dir), without))


def _kept(prep_dir, config):
    wanted = set(config.kinds + (config.grounded_kinds or []))
    return load_splits(prep_dir)["train"].filter(lambda kind: kind in wanted, input_columns="kind")


def test_config_checks_the_question_switches(prep_dir):
    from tc3.config import ConfigError

    with pytest.raises(ConfigError, match="questions must be one of varied, fixed"):
        _config(prep_dir, "questions=random")
    with pytest.raises(ConfigError, match="context_fraction"):
        _config(prep_dir, "context_fraction=1.5")
    with pytest.raises(ConfigError, match="grounded_kinds: description is also trained closed book"):
        _config(prep_dir, "kinds=[description,author_bio]", "grounded_kinds=[description,review_quotes]")
    with pytest.raises(ConfigError, match=r"grounded_kinds \(review_quotes\) needs kinds to name the closed-book kinds; to train every kind closed book, set grounded_kinds=null"):
        _config(prep_dir, "grounded_kinds=[review_quotes]")  # kinds=null: every kind is closed book
    with pytest.raises(ConfigError, match="grounded_kinds: quotes is not a content kind"):
        _config(prep_dir, "kinds=[description]", "grounded_kinds=[quotes]")


def test_cards_record_the_questions(prep_dir, tmp_path):
    from tc3.model_card import write_model_card

    dataset_card = (prep_dir / "README.md").read_text(encoding="utf-8")
    assert "## Training prompts" in dataset_card
    assert all(f"- `{t}`" in dataset_card for t in QUESTION_TEMPLATES + UNSEEN_QUESTION_TEMPLATES)
    assert dataset_card.startswith("---\nconfigs:")  # still a card datasets can load

    varied = _config(prep_dir, f"output_dir={tmp_path}", "context_fraction=0.25")
    write_model_card(tmp_path, varied, {"train_examples": 200})
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert all(f"- `{t}`" in card for t in QUESTION_TEMPLATES) and "25% of the examples" in card

    write_model_card(tmp_path, _config(prep_dir, f"output_dir={tmp_path}", "questions=fixed"), {})
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert INSTRUCTIONS["pt"] in card and "What can you tell me about" not in card


def test_the_title_read_out_of_a_question_is_shown(tiny_model_dir, capsys):
    """Seen: "What are the dimensions of the Anker PowerCore 10000?" was silently asked as a title."""
    from tc3.cli.generate import main

    base = ["--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "2"]
    question = "What are the dimensions of the Anker PowerCore 10000?"
    assert main([*base, "--title", question]) == 0
    captured = capsys.readouterr()
    assert '(read as the title "the dimensions of the Anker PowerCore 10000")' in captured.err
    assert "read as" not in captured.out  # stdout stays the answer alone
    assert main([*base, "--title", question, "--literal"]) == 0
    assert "read as" not in capsys.readouterr().err


def test_reading_a_title_out_of_a_huge_adversarial_question_takes_linear_time():
    """~100,000-character texts built to make backtracking regexes quadratic (runs of white space or of `?`
    between a question's words and its end, repeated tail words): every question parser answers in well under a
    second. Run in a child with a deadline: the regexes held the GIL for minutes on these (44 s at 64,014
    characters), where no timeout in this process could stop them."""
    import subprocess
    import sys

    code = """
import time
from tc3.generate import title_from_query
from tc3.prompts import title_in_question
n = 100_000
texts = ["What can you tell me about" + " " * n + "x", "What is x" + " ?" * (n // 2), "Tell me about" + " about" * (n // 6) + "?",
         "Describe '" + "' " * (n // 2) + "x", "O que é '" + "x' " * (n // 3), "Me fale sobre" + "\\n \\t" * (n // 3) + "y.",
         "What is '" + " " * n + "' about?", "Could you summarize what" + " is" * (n // 3) + "?"]
began = time.perf_counter()
for text in texts:
    title_from_query(text), title_in_question(text), title_from_query(text + "?")
print(time.perf_counter() - began)
"""
    env = child_env()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, env=env)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 0.5
