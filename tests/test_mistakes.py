"""A newcomer's ordinary mistakes, across every command: an output that cannot be written, a device that is not
there, a folder that is not a model. Each is one line `tc3-x: error: ...`, exit 2, found before any model loads or
long work starts, and leaves no output behind."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    # A folder that refuses even root (a kernel file system): a traceback from the staging folder before
    for refusing in (Path("/sys"), Path("/proc")):
        if refusing.is_dir():
            for verb, argv in commands(refusing / "tc3-out", prep_dir, tiny_model_dir, adapter, titles):
                assert_one_line(*run(verb, argv, capsys), f"{refusing} is not writable")


@pytest.mark.parametrize("device", ["gpu", "cuda:99", "cuda:x", "cpu:0"])
def test_a_device_that_is_not_there_is_one_line_before_the_model_loads(
        device, tmp_path, capsys, prep_dir, tiny_model_dir, adapter) -> None:
    out = tmp_path / "eval"
    cases = [
        ("generate", ["--model", str(tiny_model_dir), "--title", "Girls Ballet Tutu", "--device", device]),
        ("eval", ["--model", str(tiny_model_dir), "--data", str(prep_dir), "--out", str(out), "--n", "2",
                  "--device", device]),
        ("export", [str(adapter), str(tmp_path / "merged"), "--device", device]),
    ]
    for verb, argv in cases:
        assert_one_line(*run(verb, argv, capsys), f"--device {device}")
    assert not out.exists() and not (tmp_path / "merged").exists()


def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys, tiny_model_dir) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: cuda:99 above covers a device it lacks")
    status, err = run("generate", ["--model", str(tiny_model_dir), "--title", "Tutu", "--device", "cuda"], capsys)
    assert_one_line(status, err, "--device cuda: ", "use --device cpu")


def test_a_folder_that_is_not_a_model_is_one_line_for_every_command(
        tmp_path, capsys, prep_dir, tiny_model_dir, adapter) -> None:
    import shutil

    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(tiny_model_dir / "config.json", no_tokenizer)
    for folder, says in [(prep_dir, "is not a model folder (it has neither config.json nor adapter_config.json)"),
                         (no_tokenizer, "has no tokenizer")]:
        cases = [
            ("train", ["--config", "tiny-cpu", f"model={folder}", f"data={prep_dir}", f"output_dir={tmp_path / 'r'}"]),
            ("train", ["--config", "tiny-cpu", f"model={folder}", f"data={prep_dir}", "--dry-run"]),
            ("generate", ["--model", str(folder), "--title", "Tutu"]),
            ("eval", ["--model", str(tiny_model_dir), "--baseline", str(folder), "--data", str(prep_dir),
                      "--out", str(tmp_path / "e"), "--n", "2"]),
            ("export", [str(adapter), str(tmp_path / "m"), "--base", str(folder)]),
        ]
        for verb, argv in cases:
            assert_one_line(*run(verb, argv, capsys), f"'{folder}' {says}")
    assert_one_line(*run("export", [str(prep_dir), str(tmp_path / "m")], capsys),
                    f"adapter '{prep_dir}' is not an adapter folder (it has no adapter_config.json)")
    assert not any((tmp_path / name).exists() for name in ("r", "e", "m"))


@pytest.mark.parametrize("verb, option", [
    ("generate", "--threads"), ("generate", "--batch-size"), ("generate", "--max-new-tokens"), ("eval", "--threads"),
    ("eval", "--n"), ("eval", "--batch-size"), ("demo", "--threads"), ("prep", "--threads"), ("index", "--threads"),
])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_count_below_one_is_refused(verb, option, value, tmp_path, capsys, prep_dir, tiny_model_dir) -> None:
    argv = {"generate": ["--model", str(tiny_model_dir), "--title", "Tutu"],
            "eval": ["--model", str(tiny_model_dir), "--data", str(prep_dir), "--out", str(tmp_path / "e")],
            "demo": ["--model", str(tiny_model_dir), "--port", str(free_port())],
            "prep": ["--example", "-o", str(tmp_path / "p")],
            "index": [str(prep_dir), "-o", str(tmp_path / "i")]}[verb]
    try:
        status, err = run(verb, [*argv, option, value], capsys)
    except SystemExit as done:  # argparse's own exit
        status, err = done.code, capsys.readouterr().err
    assert_one_line(status, err, option, "must be at least 1", value)
    assert not any(tmp_path.iterdir())


def test_a_missing_model_reads_the_same_in_every_command(tmp_path, capsys, prep_dir, adapter) -> None:
    gone = tmp_path / "runs" / "gone"
    cases = [
        ("train", ["--config", "tiny-cpu", f"model={gone}", f"data={prep_dir}", "--dry-run"]),
        ("generate", ["--model", str(gone), "--title", "Tutu"]),
        ("eval", ["--model", str(gone), "--data", str(prep_dir), "--out", str(tmp_path / "e"), "--n", "2"]),
        ("demo", ["--model", str(gone), "--port", str(free_port())]),
        ("push", [str(gone), "me/x", "--dry-run"]),
    ]
    for verb, argv in cases:
        status, err = run(verb, argv, capsys)
        assert_one_line(status, err)
        assert err == f"tc3-{verb}: error: model '{gone}' does not exist\n", err
    status, err = run("export", [str(gone), str(tmp_path / "m")], capsys)
    assert err == f"tc3-export: error: adapter '{gone}' does not exist\n"
    status, err = run("export", [str(adapter), str(tmp_path / "m"), "--base", str(gone)], capsys)
    assert err == f"tc3-export: error: base '{gone}' does not exist\n"


@pytest.mark.parametrize("option, value", [("--top-k", "-5"), ("--top-p", "-1"), ("--top-p", "2"), ("--top-p", "0")])
@pytest.mark.parametrize("verb", ["generate", "eval", "demo"])
def test_a_sampling_value_out_of_range_is_one_line_before_the_model_loads(verb, option, value, tmp_path, capsys,
                                                                         prep_dir, tiny_model_dir) -> None:
    argv = {"generate": ["--model", str(tiny_model_dir), "--title", "Mug"],
            "eval": ["--model", str(tiny_model_dir), "--data", str(prep_dir), "--out", str(tmp_path / "ev")],
            "demo": ["--model", str(tiny_model_dir)]}[verb]
    assert_one_line(*run(verb, [*argv, "--sample", option, value], capsys), option)
    assert not (tmp_path / "ev").exists()


def test_a_config_file_that_is_not_text_is_one_line(tmp_path, capsys, prep_dir) -> None:
    config = tmp_path / "weights.yaml"
    config.write_bytes(b"\x00\xff\xfe PAR1")
    argv = ["--config", str(config), f"data={prep_dir}", f"output_dir={tmp_path / 'out'}"]
    assert_one_line(*run("train", argv, capsys), "not UTF-8 text")


def test_a_max_length_no_example_fits_is_one_line_in_the_dry_run_and_the_run(tmp_path, capsys, prep_dir,
                                                                          tiny_model_dir) -> None:
    argv = ["--config", "tiny-cpu", f"model={tiny_model_dir}", f"data={prep_dir}", f"output_dir={tmp_path / 'out'}",
            "max_length=5", "max_steps=1"]
    for extra in (["--dry-run"], []):
        status, err = run("train", [*argv, *extra], capsys)
        assert status == 2 and "no train example fits max_length 5" in err.splitlines()[-1], err
    assert not (tmp_path / "out").exists()


def test_resume_into_a_folder_that_does_not_exist_says_so(tmp_path, capsys, prep_dir, tiny_model_dir) -> None:
    argv = ["--config", "tiny-cpu", f"model={tiny_model_dir}", f"data={prep_dir}",
            f"output_dir={tmp_path / 'never-ran'}", "--resume"]
    assert_one_line(*run("train", argv, capsys), "does not exist (no run to resume)")
    assert not (tmp_path / "never-ran").exists()
