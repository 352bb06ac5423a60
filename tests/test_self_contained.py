"""The test suite's own needs: the prep-side tests run where torch is not installed."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PREP_SIDE = ["test_prep.py", "test_reference_parity.py"]


def test_prep_side_tests_run_without_torch(tmp_path):
    """No fixture imports torch for every test: with `import torch` failing, the prep tests still pass."""
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "torch.py").write_text("raise ImportError('torch is not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'run'}",
         *(str(TESTS / name) for name in PREP_SIDE)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
