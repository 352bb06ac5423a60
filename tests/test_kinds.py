"""Content kinds (issue 17): the kind column, its counts, --drop-kinds, --strip-attributed-quotes, the hand
labels, TrainConfig.kinds and the invented-attribution measure."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tc3 import prep
from tc3.errors import UserError

BENCHES = Path(__file__).resolve().parent.parent / "benches"
sys.path.insert(0, str(BENCHES))
import kinds_eval  # noqa: E402

LABELS = Path(__file__).resolve().parent / "data" / "kinds_labels.jsonl"

QUOTES = "'A triumph of storytelling, tense and beautifully paced.' Sunday Times 'Gripping from start to finish.' Observer"
MORE_QUOTES = "'Marie McCarthy brings a huge cast to life with warmth and wit.' AudioFile"
BIO = ("Jill Barklem was born in Epping in 1951. She studied illustration at St Martin's in London. "
       "Jill is now a full-time illustrator, working on the series of Brambly Hedge books.")
DESC = "A sturdy board book about a cat and her many kittens, with bright pictures, for ages one to three."
PLOT = ("Set in Elizabethan England during the war between Spain and England, this is a tangled tale of love, "
        "revenge and pride. Marie McCarthy makes the characters come alive, and she switches easily from Spanish "
        "to French to British accents over six cassettes of unabridged reading.")


def write_lines(path: Path, records: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(json.dumps({"uid": u, "title": t, "content": c}) + "\n" for u, t, c in records))
    return path


def rows(out: Path) -> list[dict]:
    files = sorted((out / "data").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()


def assert_invariant(stats: dict) -> None:
    total = stats["kept"]["total"] + sum(stats["dropped"].values()) + stats["sampled_out"]
    assert stats["lines"] - stats["blank_lines"] == total


@pytest.fixture
def mixed_input(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "trn.json", [
        ("q1", "Autumn Story", QUOTES),
        ("m1", "Silly Songs [VHS]", "VHS Tape"),
        ("m2", "The Very Bad Bunny", "By Marilyn Sadler, Illustrated by Roger Bollen"),
        ("b1", "Nice for Mice", BIO),
        ("d1", "Mog's Kittens", DESC),
        ("x1", "Lion Triumphant", f"{PLOT} {QUOTES} {MORE_QUOTES}"),
    ])


def test_seen_examples_get_their_kind() -> None:
    assert prep.classify_kind(QUOTES) == "review_quotes"
    assert prep.classify_kind("\"!the most research-crammed fantasy ever set before small children!\" Sunday Times Magazine") == "review_quotes"
    for metadata in ("VHS Tape", "Paperback", "By Marilyn Sadler, Illustrated by Roger Bollen", "Text: English (translation)Original Language: German"):
        assert prep.classify_kind(metadata) == "metadata_only", metadata
    assert prep.classify_kind(BIO) == "author_bio"
    assert prep.classify_kind(DESC) == "description"
    # A description with a little praise stays a description; with a third of it praise, it is mixed.
    assert prep.classify_kind(f"{PLOT} {QUOTES}") == "description"
    assert prep.classify_kind(f"{PLOT} {QUOTES} {MORE_QUOTES}") == "mixed"
    assert prep.CONTENT_KINDS == ("description", "review_quotes", "author_bio", "metadata_only", "mixed")


def test_kind_column_and_counts(mixed_input: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = prep.run([mixed_input], out, val_fraction=0.0, min_desc_chars=0)
    kinds = {r["uid"]: r["kind"] for r in rows(out)}
    assert kinds == {"q1": "review_quotes", "m1": "metadata_only", "m2": "metadata_only", "b1": "author_bio",
                     "d1": "description", "x1": "mixed"}
    assert stats["kinds"] == {k: Counter(kinds.values())[k] for k in prep.CONTENT_KINDS}
    card = (out / "README.md").read_text()
    assert "| kind | rows |" in card and "| review_quotes | 1 |" in card and "| metadata_only | 2 |" in card
    assert json.loads((out / "stats.json").read_text())["kinds"] == stats["kinds"]


def test_drop_kinds_counts_each_record_with_its_reason(mixed_input: Path, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    stats = prep.run([mixed_input], tmp_path / "out", val_fraction=0.0, min_desc_chars=0, rejects=rejects,
                     drop_kinds=["review_quotes", "metadata_only"])
    assert {r["uid"] for r in rows(tmp_path / "out")} >= {"b1", "d1"}
    assert stats["dropped"]["kind_review_quotes"] >= 1 and stats["dropped"]["kind_metadata_only"] == 2
    assert stats["kinds"]["review_quotes"] == stats["kinds"]["metadata_only"] == 0
    assert_invariant(stats)
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert {(r["uid"], r["reason"]) for r in rejected} >= {("q1", "kind_review_quotes"), ("m1", "kind_metadata_only"),
                                                           ("m2", "kind_metadata_only")}
    assert stats["options"]["drop_kinds"] == ["review_quotes", "metadata_only"]


def test_drop_kinds_on_real_records_keeps_the_invariant(tmp_path: Path) -> None:
    stats = prep.run([prep_example()], tmp_path / "out", drop_kinds="review_quotes,metadata_only")  # as typed
    assert stats["dropped"]["kind_review_quotes"] > 100
    assert stats["kinds"]["review_quotes"] == 0 and stats["kinds"]["description"] > 100
    assert_invariant(stats)


def prep_example() -> str:
    from tc3.cli.prep import EXAMPLE_INPUT

    return str(EXAMPLE_INPUT)


def test_strip_attributed_quotes_keeps_the_rest(mixed_input: Path, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    stats = prep.run([mixed_input], tmp_path / "out", val_fraction=0.0, rejects=rejects, strip_attributed_quotes=True)
    kept = {r["uid"]: r for r in rows(tmp_path / "out")}
    assert kept["x1"]["description"] == PLOT and kept["x1"]["kind"] == "description"
    assert kept["d1"]["description"] == DESC and kept["b1"]["description"] == BIO
    # Nothing but praise: nothing left, so the record is dropped and counted, not lost.
    assert "q1" not in kept and stats["dropped"]["empty_description"] == 1
    assert {json.loads(line)["uid"] for line in rejects.read_text().splitlines()} >= {"q1"}
    assert stats["cleaned"]["attributed_quotes"] == 2  # q1 and x1
    assert_invariant(stats)


def test_cli_options_and_their_errors(mixed_input: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tc3.cli.prep", str(mixed_input), "-q", *args],
                              capture_output=True, text=True)

    done = cli("-o", str(tmp_path / "a"), "--drop-kinds", "review_quotes,metadata_only", "--strip-attributed-quotes")
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["options"]["strip_attributed_quotes"] is True
    for bad in ("reviews", "", "description,nope"):
        failed = cli("-o", str(tmp_path / "b"), "--drop-kinds", bad)
        assert failed.returncode == 2 and "not a content kind" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="not a kind"):
        prep.run([mixed_input], tmp_path / "c", drop_kinds=["reviews"])


def test_kinds_do_not_depend_on_threads(tmp_path: Path) -> None:
    for threads in (1, 2):
        prep.run([prep_example()], tmp_path / f"t{threads}", threads=threads, strip_attributed_quotes=True)
    one, two = (sorted((tmp_path / f"t{n}" / "data").glob("*.parquet")) for n in (1, 2))
    assert [f.read_bytes() for f in one] == [f.read_bytes() for f in two]


def test_clean_batch_gives_kinds() -> None:
    table = pa.table({"uid": ["a", "b"], "title": ["Autumn Story", "Mog"], "content": [QUOTES, DESC]})
    kept, counts = prep.clean_batch(table, drop_kinds=["review_quotes"])
    assert kept.column("kind").to_pylist() == ["description"]
    assert counts["dropped"]["kind_review_quotes"] == 1 and counts["kinds"]["description"] == 1


def test_hand_labels_cover_real_records_and_rules_meet_the_precision_bar() -> None:
    labels = [json.loads(line) for line in LABELS.read_text().splitlines()]
    sample = {r["uid"] for r in kinds_eval.sample_records()}
    assert len(labels) >= 200 and len({d["uid"] for d in labels}) == len(labels)
    assert all(d["uid"] in sample and d["kind"] in prep.CONTENT_KINDS for d in labels)
    result = kinds_eval.label_scores(LABELS)
    for kind, value in result["precision"].items():
        assert value is None or value >= 0.9, (kind, value)
    assert result["recall"]["review_quotes"] >= 0.9 and result["scored"] >= 200
    recorded = json.loads((BENCHES / "results" / "content-kinds.json").read_text())
    assert (recorded["precision"], recorded["recall"]) == (result["precision"], result["recall"])


def test_invented_attributions_in_hand_made_answers() -> None:
    record = {"title": "The Golden Gate", "reference": "'Startlingly good...tense...ingenious' Sunday Express "
              "'Alistair MacLean is a magnificent storyteller' Sunday Mirror"}
    answers = [
        "'A masterpiece of suspense.' The Guardian 'Unputdownable.' Daily Mail",  # both sources invented
        "'Startlingly good.' Sunday Express",  # the record names this source
        "A thriller about the hijacking of a presidential motorcade on the Golden Gate Bridge.",  # no quote
        "'Superb.' - SUNDAY MIRROR",  # case and punctuation aside, the record's own source
        "\"A gripping read\" --\"New York Times\"",  # a quoted source name, invented
    ]
    flagged = [bool(kinds_eval.invented_attributions(a, f"{record['title']} {record['reference']}")) for a in answers]
    assert flagged == [True, False, False, False, True]
    assert kinds_eval.invented_attributions(answers[0], record["reference"]) == ["The Guardian", "Daily Mail"]
    share = kinds_eval.invented_attribution_share([{**record, "answer": a} for a in answers])
    assert share == {"answers": 5, "with_invented_attribution": 2, "invented_attribution_share": 0.4}


def test_train_config_filters_rows_by_kind(prep_dir: Path) -> None:
    from tc3.config import ConfigError, load_config
    from tc3.data import keep_kinds, load_splits

    config = load_config(None, ["kinds=description,author_bio", f"data={prep_dir}"])
    assert config.kinds == ["description", "author_bio"]
    splits = load_splits(prep_dir)
    kept = keep_kinds(splits, config.kinds, prep_dir)
    assert set(kept["train"]["kind"]) == {"description", "author_bio"}
    assert len(kept["train"]) == sum(k in config.kinds for k in splits["train"]["kind"]) < len(splits["train"])
    for bad in ("kinds=reviews", "kinds=[]"):
        with pytest.raises(ConfigError, match="not a content kind"):
            load_config(None, [bad])
    no_kind = {name: split.remove_columns("kind") for name, split in splits.items()}
    with pytest.raises(ConfigError, match="no kind column"):
        keep_kinds(no_kind, ["description"], prep_dir)


@pytest.mark.parametrize("name", ["llama3-8b-qlora", "llama3-8b-qlora-80gb", "tiny-cpu", None])
def test_shipped_configs_train_without_review_quotes(prep_dir: Path, name) -> None:
    """Issue 25: trained on press quotes, two answers in three were invented quotes. Every shipped config (and the
    default) trains on the descriptive kinds only; `kinds=null` trains on all; the prep output keeps every row."""
    from tc3.config import load_config
    from tc3.data import load_splits, training_splits

    overrides = [f"data={prep_dir}", "train_samples=null", "eval_samples=null"]
    config = load_config(name, overrides)
    assert "review_quotes" not in config.kinds and "description" in config.kinds
    splits = load_splits(prep_dir)
    quotes = [k == "review_quotes" for k in splits["train"]["kind"]]
    assert sum(quotes) > 50  # the sample has press quotes to leave out
    train, _ = training_splits(config)
    assert len(train) == len(quotes) - sum(quotes)
    everything, _ = training_splits(load_config(name, [*overrides, "kinds=null"]))
    assert len(everything) == len(quotes)
