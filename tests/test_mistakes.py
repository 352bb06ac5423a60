"""A newcomer's ordinary mistakes, across every command: an output that cannot be written, a device that is not
there, a folder that is not a model. Each is one line `tc3-x: error: ...`, exit 2, found before any model loads or
long work starts, and leaves no output behind."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest


def run(verb: str, argv: list[str], capsys) -> tuple[int, str]:
    status = importlib.import_module(f"tc3.cli.{verb}").main(argv)
    return status, capsys.readouterr().err


def assert_one_line(status: int, err: str, *fragments: str) -> None:
    assert status == 2 and err.count("\n") == 1 and err.startswith("tc3-"), err
    assert "Traceback" not in err and all(f in err for f in fragments), err


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    from conftest import build_random_adapter

    return build_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), ["q_proj", "v_proj"], seed=1)


def commands(out: Path, prep_dir: Path, model: Path, adapter: Path, titles: Path) -> list[tuple[str, list[str]]]:
    """Every command that writes, each told to write `out`."""
    return [
        ("prep", ["--example", "-o", str(out)]),
        ("prep", ["--example", "-o", str(out.parent / "fine"), "--rejects", str(out)]),
        ("index", [str(prep_dir), "-o", str(out)]),
        ("generate", ["--model", str(model), "--input", str(titles), "-o", str(out)]),
        ("eval", ["--model", str(model), "--data", str(prep_dir), "--out", str(out), "--n", "2"]),
        ("export", [str(adapter), str(out)]),
        ("train", ["--config", "tiny-cpu", f"model={model}", f"data={prep_dir}", f"output_dir={out}"]),
    ]


def test_an_output_that_cannot_be_written_is_one_line_before_any_work(
        tmp_path, capsys, prep_dir, tiny_model_dir, adapter) -> None:
    titles = tmp_path / "titles.txt"
    titles.write_text("Girls Ballet Tutu Neon Pink\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    for verb, argv in commands(a_file / "sub" / "out", prep_dir, tiny_model_dir, adapter, titles):
        assert_one_line(*run(verb, argv, capsys), "cannot write", f"{a_file} is a file, not a folder")
    assert a_file.read_text() == "mine\n"
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        for verb, argv in commands(locked / "out", prep_dir, tiny_model_dir, adapter, titles):
            assert_one_line(*run(verb, argv, capsys), f"{locked} is not writable")
        assert not any(locked.iterdir())
