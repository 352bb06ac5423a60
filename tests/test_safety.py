"""Nothing a user has is deleted or lost: outputs replace only what tc3 wrote, mistakes are one line before any long
work, model references fail within a second, bad input is never success (issue 11)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tc3.errors import UserError, command
from tc3.outputs import MARKER, claim_dir, split_lines, staged_dir

SAMPLE = Path(__file__).resolve().parents[1] / "python" / "tc3" / "samples" / "amazon_titles_sample500.jsonl.gz"


def cli(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"tc3.cli.{name}", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def one_line_error(result: subprocess.CompletedProcess, prog: str, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{prog}: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def trn(tmp_path: Path) -> Path:
    """60 of the bundled real records as a trn.json file."""
    lines = gzip.decompress(SAMPLE.read_bytes()).decode().split("\n")[:60]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "thesis.tex").write_text("years of work")
    return folder


def prep(trn: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    return cli("prep", trn, "-o", out, "-q", "--val-fraction", "0.2", *more)


# ---------------------------------------------------------------------------------------------------------------------
# Replacing outputs


def test_prep_force_never_deletes_a_folder_tc3_did_not_write(trn, precious):
    one_line_error(prep(trn, precious, "--force"), "tc3-prep", str(precious), "not written by tc3")
    assert (precious / "sub" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in precious.parent.iterdir()) == ["precious", "t.jsonl"]  # no staging left


def test_prep_force_replaces_its_own_output_but_not_one_the_user_added_to(trn, tmp_path):
    out = tmp_path / "out"
    assert prep(trn, out).returncode == 0
    assert json.loads((out / MARKER).read_text())["command"] == "tc3-prep"
    one_line_error(prep(trn, out), "tc3-prep", "--force")
    assert prep(trn, out, "--force").returncode == 0
    (out / "notes.txt").write_text("mine")
    one_line_error(prep(trn, out, "--force"), "tc3-prep", "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    claim_dir(out / "run", "tc3-train")  # a training run kept in the prep dir is not the prep's to delete
    one_line_error(prep(trn, out, "--force"), "tc3-prep", "run")
    assert (out / "run").is_dir()


def test_rejects_inside_the_replaced_output_is_refused_up_front(trn, tmp_path):
    out = tmp_path / "out"
    assert prep(trn, out).returncode == 0
    before = sorted(p.name for p in (out / "data").iterdir())
    one_line_error(prep(trn, out, "--force", "--rejects", out / "rejects.jsonl"), "tc3-prep", "--rejects")
    assert not (out / "rejects.jsonl").exists() and sorted(p.name for p in (out / "data").iterdir()) == before


def test_rejects_never_overwrites_a_users_file(trn, tmp_path):
    mine = tmp_path / "rejects.jsonl"
    mine.write_text("my list\n")
    one_line_error(prep(trn, tmp_path / "out", "--rejects", mine), "tc3-prep", str(mine))
    assert mine.read_text() == "my list\n" and not (tmp_path / "out").exists()
    theirs = tmp_path / "r2.jsonl"
    assert prep(trn, tmp_path / "out", "--rejects", theirs).returncode == 0
    assert prep(trn, tmp_path / "out", "--force", "--rejects", theirs).returncode == 0  # its own, with --force


@pytest.fixture
def prep_out(trn, tmp_path) -> Path:
    out = tmp_path / "prep"
    assert prep(trn, out).returncode == 0
    return out


def test_index_never_touches_the_parquet_data_or_the_prep_dir(prep_out, precious):
    data = {p.name: p.read_bytes() for p in (prep_out / "data").iterdir()}
    one_line_error(cli("index", prep_out, "-o", prep_out / "data", "--force", "-q"), "tc3-index", "data")
    one_line_error(cli("index", prep_out, "-o", prep_out, "--force", "-q"), "tc3-index")
    one_line_error(cli("index", prep_out, "-o", precious, "--force", "-q"), "tc3-index", "not written by tc3")
    assert {p.name: p.read_bytes() for p in (prep_out / "data").iterdir()} == data
    assert (precious / "sub" / "thesis.tex").exists()
    assert cli("index", prep_out, "-q").returncode == 0
    assert cli("index", prep_out, "-q", "--force").returncode == 0  # its own index
    assert json.loads((prep_out / "index" / MARKER).read_text())["command"] == "tc3-index"
    assert prep(prep_out.parent / "t.jsonl", prep_out, "--force").returncode == 0  # the index goes with its data


def test_the_old_output_stays_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out, "tc3-test") as new:
        (new / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_dir(out, "tc3-test") as new:
            (new / "a.txt").write_text("second")
            raise RuntimeError("crash half-way")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with staged_dir(out, "tc3-test") as new:
        (new / "a.txt").write_text("third")
        assert (out / "a.txt").read_text() == "first"
    assert (out / "a.txt").read_text() == "third" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_every_command_refuses_a_users_folder_or_file(precious, tmp_path, tiny_model_dir):
    from tc3.config import TrainConfig
    from tc3.train import check_output_dir

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    one_line_error(cli("export", adapter, precious), "tc3-export", str(precious))
    mine = tmp_path / "answers.jsonl"
    mine.write_text("mine\n")
    (tmp_path / "titles.txt").write_text("A title\n")
    one_line_error(cli("generate", "--model", tiny_model_dir, "--input", tmp_path / "titles.txt", "-o", mine),
                   "tc3-generate", str(mine))
    assert mine.read_text() == "mine\n"
    with pytest.raises(UserError, match="not written by tc3"):
        check_output_dir(TrainConfig(output_dir=str(precious)), False)
    assert (precious / "sub" / "thesis.tex").exists()


# ---------------------------------------------------------------------------------------------------------------------
# One error type, one line


def test_the_cli_wrapper_prints_user_errors_in_one_line_and_keeps_tracebacks_of_bugs(capsys):
    @command("tc3-x")
    def fails(argv):
        raise UserError("first line\nsecond line", status=1)

    assert fails([]) == 1
    assert capsys.readouterr().err == "tc3-x: error: first line second line\n"

    @command("tc3-x")
    def buggy(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        buggy([])


# ---------------------------------------------------------------------------------------------------------------------
# Model references


@pytest.mark.parametrize("ref", ["runs/nope", "./nope", "/no/such/model", "~/no-such-model", "a/b/c"])
def test_a_mistyped_model_path_fails_within_a_second(ref, tmp_path, monkeypatch):
    from tc3.models import check_model_ref

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    with pytest.raises(UserError, match="does not exist"):
        check_model_ref(ref)
    assert time.perf_counter() - started < 1


def test_train_export_generate_with_a_mistyped_model_are_one_line(tmp_path):
    (tmp_path / "runs").mkdir()
    adapter = tmp_path / "runs" / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x/y"}))
    config = tmp_path / "c.yaml"
    config.write_text("backend: hf\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tc3.cli.export", "runs/adapter", "merged", "--base", "runs/nope"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    one_line_error(result, "tc3-export", "runs/nope")
    result = subprocess.run([sys.executable, "-m", "tc3.cli.generate", "--model", "runs/nope", "--title", "X"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    one_line_error(result, "tc3-generate", "runs/nope")
    result = subprocess.run([sys.executable, "-m", "tc3.cli.train", "--config", str(config), "model=runs/nope",
                             "data=runs", f"output_dir={tmp_path / 'out'}"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    one_line_error(result, "tc3-train", "runs/nope")
    assert time.perf_counter() - started < 60  # three interpreters; none waits on the Hub


def test_a_hub_id_that_cannot_be_reached_fails_at_once(monkeypatch, tmp_path):
    from tc3.models import check_model_ref

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        check_model_ref("someone/some-model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as closed:  # a port nothing listens on: the Hub cannot be reached
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    with pytest.raises(UserError, match="cannot be reached"):
        check_model_ref("someone/some-model")
    assert time.perf_counter() - started < 1.5


# ---------------------------------------------------------------------------------------------------------------------
# Bad input, line splitting


def test_only_newline_ends_a_line():
    text = "a\u2028b\nc\x0bd\x0ce\x1cf\x1dg\x1eh\x85i\r\nj"
    assert split_lines(text) == ["a\u2028b", "c\x0bd\x0ce\x1cf\x1dg\x1eh\x85i", "j"]
    assert split_lines("x\n") == ["x"] and split_lines("") == []


def test_titles_with_unicode_line_separators_are_read_whole(tmp_path):
    from tc3.generate import read_titles

    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"title": "Book\u2028Two"}, ensure_ascii=False) + "\n"
                     + json.dumps({"title": "Tab\x0bbed\x85"}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    # one title a line, then cleaned as tc3-prep cleans titles (its white space rule: separators become spaces)
    assert [r["title"] for r in read_titles(jsonl)] == ["Book Two", "Tab bed"]
    text = tmp_path / "t.txt"
    text.write_text("One\x0cTitle\nTwo\x1eTitle\n", encoding="utf-8")
    assert [r["title"] for r in read_titles(text)] == ["One Title", "Two Title"]


def test_empty_titles_are_skipped_and_counted_and_an_input_without_titles_is_an_error(tmp_path):
    from tc3.generate import read_titles

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"title": "A"}\n{"title": ""}\n{"title": "  "}\n{"title": "B"}\n')
    titles = read_titles(rows)
    assert titles == [{"title": "A"}, {"title": "B"}] and titles.skipped == [2, 3]
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="holds no title"):
        read_titles(tmp_path / "empty.txt")
    (tmp_path / "blank.jsonl").write_text('{"title": ""}\n')
    with pytest.raises(UserError, match="every row's title is empty"):
        read_titles(tmp_path / "blank.jsonl")


def test_generate_refuses_bad_input_before_loading_the_model(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    out = tmp_path / "out.jsonl"
    missing_model = tmp_path / "no-model"  # never reached: the input is checked first
    one_line_error(cli("generate", "--model", missing_model, "--input", tmp_path / "empty.txt", "-o", out),
                   "tc3-generate", "holds no title")
    assert not out.exists()
    one_line_error(cli("generate", "--model", missing_model, "--title", "X", "-o", out), "tc3-generate", "--output")
    one_line_error(cli("generate", "--model", missing_model, "--title", ""), "tc3-generate", "--title is empty")
    one_line_error(cli("generate", "--model", missing_model, "--title", "   "), "tc3-generate", "--title is empty")


# ---------------------------------------------------------------------------------------------------------------------
# Checks before long work


def test_eval_checks_the_extra_models_and_out_dir_before_generating(prep_out, tiny_model_dir, tmp_path, precious,
                                                                     monkeypatch):
    import importlib.util

    import tc3.evaluate
    import tc3.generate

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the checks")

    monkeypatch.setattr(tc3.generate, "load_model", no_loading)
    with pytest.raises(UserError, match="does not exist"):
        tc3.evaluate.run_eval(str(tmp_path / "runs" / "typo"), str(prep_out), tmp_path / "report",
                              baseline=str(tiny_model_dir), n=2)
    with pytest.raises(UserError, match="not written by tc3"):
        tc3.evaluate.run_eval(str(tiny_model_dir), str(prep_out), precious, n=2)
    assert sorted(p.name for p in precious.iterdir()) == ["sub"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rouge_score" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'tc3\[eval\]'"):
        tc3.evaluate.run_eval(str(tiny_model_dir), str(prep_out), tmp_path / "report", n=2)
    assert not (tmp_path / "report").exists()


def test_demo_checks_the_port_before_loading_a_model(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("demo", "--model", tmp_path / "no-model", "--port", port)
    one_line_error(result, "tc3-demo", f"port {port}")


def test_an_interrupted_eval_goes_on_from_its_kept_answers(tiny, tmp_path, monkeypatch):
    import tc3.evaluate
    import tc3.generate
    from tc3.generate import GenerationSettings

    asks = tc3.evaluate.asks_for([{"title": t} for t in ["Red shoes", "Blue hat", "A book", "Tea pot", "Lamp"]],
                                 "fixed", 1)
    settings = GenerationSettings(max_new_tokens=4)
    whole = tc3.evaluate.generate_kept(tiny, asks, settings, batch_size=2)
    real, calls, crash = tc3.generate.generate_batch, [], [True]

    def crash_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if crash[0] and len(calls) == 2:
            raise RuntimeError("crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(tc3.generate, "generate_batch", crash_on_the_second_batch)
    keep = tmp_path / "kept.jsonl"
    with pytest.raises(RuntimeError):
        tc3.evaluate.generate_kept(tiny, asks, settings, batch_size=2, keep=keep)
    assert len(keep.read_text().splitlines()) == 2
    calls.clear()
    crash[0] = False
    again = tc3.evaluate.generate_kept(tiny, asks, settings, batch_size=2, keep=keep)
    assert len(calls) == 2  # the two batches not done before
    assert [(g.title, g.description, g.tokens, g.stopped) for g in again] == \
        [(g.title, g.description, g.tokens, g.stopped) for g in whole]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tc3.generate import load_model

    return load_model(str(tiny_model_dir), device="cpu")


def test_generate_writes_into_a_new_folder_and_reports_skipped_rows(tiny_model_dir, tmp_path, capsys):
    from tc3.cli.generate import main

    titles = tmp_path / "titles.jsonl"
    titles.write_text('{"title": "Red shoes\u2028size 9"}\n{"title": ""}\n{"title": "Blue hat"}\n', encoding="utf-8")
    out = tmp_path / "new" / "folder" / "out.jsonl"
    assert main(["--model", str(tiny_model_dir), "--input", str(titles), "-o", str(out), "--max-new-tokens", "3"]) == 0
    assert [json.loads(line)["title"] for line in split_lines(out.read_text(encoding="utf-8"))] == \
        ["Red shoes size 9", "Blue hat"]  # the title as asked: cleaned as tc3-prep cleans titles
    assert "skipped 1 rows with an empty title (lines 2)" in capsys.readouterr().err


def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch, capsys):
    import importlib.util

    from tc3.cli import generate, index

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("peft", "tantivy") else real(name, *a))
    assert generate.main(["--model", "m", "--title", "t"]) == 2
    assert capsys.readouterr().err == ("tc3-generate: error: peft is not installed (the 'train' extra); "
                                       "run: pip install 'tc3[train]'\n")
    assert index.main(["prep"]) == 2
    assert "pip install 'tc3[index]'" in capsys.readouterr().err


def test_engine_errors_keep_their_exit_status_and_one_line(trn, tmp_path):
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(gzip.compress(trn.read_bytes())[:200])
    result = prep(truncated, tmp_path / "out")
    assert result.returncode == 1 and result.stderr.startswith("tc3-prep: error: ") and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.json.gz", "t.jsonl"]  # no staging left behind
    one_line_error(prep(trn, tmp_path / "out", "--dedup", "near", "--threads", "0"), "tc3-prep", "--threads")
