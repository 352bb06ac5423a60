"""benches/run_prep_bench.py as CI runs it: it fails (exit 1) when a run crashes or tc3-prep's output differs from
the Python reference's, and passes when they agree."""

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"
sys.path.insert(0, str(BENCHES))
import gen_trn  # noqa: E402
import reference_python as ref  # noqa: E402
import run_prep_bench as bench  # noqa: E402


@pytest.fixture(scope="module")
def trn(tmp_path_factory) -> Path:
    """3,000 generated records with malformed lines and other quirks: every split and drop reason has rows."""
    path = tmp_path_factory.mktemp("bench") / "trn.json"
    gen_trn.generate(path, 3000, seed=7, quirks=0.02)
    return path


@pytest.fixture
def outputs(trn, tmp_path) -> tuple[Path, Path]:
    """(tc3-prep output, reference output) of `trn`, as the benchmark compares them."""
    from tc3 import prep

    prep.run([str(trn)], tmp_path / "tc3-prep", val_fraction=0.1)
    ref.main([str(trn), "-o", str(tmp_path / "reference"), "--val-fraction", "0.1"])
    return tmp_path / "tc3-prep", tmp_path / "reference"


def rewrite(parquet: Path, change) -> None:
    """Replaces the rows of a Parquet file by change(rows)."""
    table = pq.read_table(parquet)
    pq.write_table(pa.Table.from_pylist(change(table.to_pylist()), schema=table.schema), parquet)


def test_agreeing_outputs_have_no_difference(outputs):
    tc3, reference = outputs
    assert bench.output_diff(tc3, reference) == []


def test_a_changed_row_a_missing_row_and_a_changed_count_are_differences(outputs):
    tc3, reference = outputs
    rewrite(reference / "train.parquet", lambda rows: [*rows[:5], {**rows[5], "description": "changed"}, *rows[6:]])
    diff = bench.output_diff(tc3, reference)
    assert len(diff) == 1 and diff[0].startswith("train row 5: ") and "changed" in diff[0]

    rewrite(reference / "validation.parquet", lambda rows: rows[:-1])
    validation = pq.ParquetFile(reference / "validation.parquet").metadata.num_rows
    diff = bench.output_diff(tc3, reference)
    assert f"validation rows: {validation + 1} != {validation}" in diff
    assert f"validation row {validation}: " in " ".join(diff)

    stats = json.loads((reference / "stats.json").read_text())
    stats["dropped"]["malformed"] += 1
    (reference / "stats.json").write_text(json.dumps(stats))
    assert any(line.startswith("dropped.malformed: ") for line in bench.output_diff(tc3, reference))


def fake_tc3_prep(bin_dir: Path, body: str) -> None:
    """A `tc3-prep` on PATH that runs `body` (sh), so the benchmark meets a crash or a wrong output."""
    bin_dir.mkdir()
    script = bin_dir / "tc3-prep"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


@pytest.mark.parametrize(
    "body, status, failed",
    [
        (f'exec "{sys.executable}" -m tc3.cli.prep "$@"', 0, None),
        ('echo "tc3-prep: crashed" >&2; exit 3', 1, "tc3-prep"),
        # a stricter length filter: fewer rows, and counts unlike the reference's
        (f'exec "{sys.executable}" -m tc3.cli.prep "$@" --min-desc-chars 60', 1, "tc3-prep vs reference"),
    ],
    ids=["agrees", "crashes", "differs"],
)
def test_the_benchmark_exits_non_zero_when_a_run_fails_or_differs(
    trn, tmp_path, monkeypatch, capsys, body, status, failed
):
    fake_tc3_prep(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(bench, "DATA", tmp_path / "data")
    argv = [str(trn), "--skip-polars", "--skip-duckdb", "--skip-gzip", "--out", str(tmp_path / "result.json")]
    assert bench.main(argv) == status
    report = json.loads((tmp_path / "result.json").read_text())
    err = capsys.readouterr().err
    if failed:
        assert f"benchmark FAILED: {failed}" in err
    else:
        assert report["parity"] == {"tc3-prep vs reference": []} and "FAILED" not in err
    # a committed result names no absolute local path: the input and outputs here all lie outside the repository
    assert str(tmp_path) not in json.dumps(report) and sys.executable not in json.dumps(report)
    assert report["input"]["path"] == "trn.json" and report["runs"]["reference"]["cmd"][1] == "benches/reference_python.py"


def test_other_thread_counts_must_write_the_same_bytes(trn, tmp_path, monkeypatch, capsys):
    # A tc3-prep whose runs with --threads re-encode their Parquet files: the same rows in other bytes.
    bin_dir = tmp_path / "bin"
    fake_tc3_prep(bin_dir, f'exec "{sys.executable}" "{bin_dir / "prep.py"}" "$@"')
    (bin_dir / "prep.py").write_text(
        "import sys\nfrom pathlib import Path\nimport pyarrow.parquet as pq\nfrom tc3.cli import prep\n"
        "try:\n    prep.main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code\n"
        "if '--threads' in sys.argv:\n"
        "    for f in (Path(sys.argv[sys.argv.index('-o') + 1]) / 'data').glob('*.parquet'):\n"
        "        pq.write_table(pq.read_table(f), f, compression='gzip')\n"
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(bench, "DATA", tmp_path / "data")
    argv = [str(trn), "--skip-reference", "--skip-polars", "--skip-duckdb", "--skip-gzip", "--threads", "1,2",
            "--out", str(tmp_path / "result.json")]
    assert bench.main(argv) == 1
    parity = json.loads((tmp_path / "result.json").read_text())["parity"]
    assert set(parity) == {"tc3-prep-t1 vs tc3-prep", "tc3-prep-t2 vs tc3-prep"}
    assert all(diff and all(d.endswith(": not byte-identical") for d in diff) for diff in parity.values())
    assert "benchmark FAILED: tc3-prep-t1 vs tc3-prep, tc3-prep-t2 vs tc3-prep" in capsys.readouterr().err

    # The real tc3-prep writes the same files at every thread count.
    fake_tc3_prep(tmp_path / "real", f'exec "{sys.executable}" -m tc3.cli.prep "$@"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'real'}{os.pathsep}{os.environ['PATH']}")
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["parity"] == {"tc3-prep-t1 vs tc3-prep": [], "tc3-prep-t2 vs tc3-prep": []}
    assert report["runs"]["tc3-prep-t1"]["cmd"][-2:] == ["--threads", "1"]


def test_without_the_command_the_module_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    args = bench.argparse.Namespace(skip_tc3=False, skip_reference=True, skip_polars=True, skip_duckdb=True,
                                    skip_gzip=True, tc3_arg=[], threads=[])
    (name, cmd), = bench.planned_runs(args, tmp_path / "trn.json", None, tmp_path)
    assert name == "tc3-prep" and cmd[:3] == [sys.executable, "-m", "tc3.cli.prep"]
