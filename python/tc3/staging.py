"""Output files written under a temporary name beside their place and renamed into it once complete, so a crash
or Ctrl-C never leaves a half-written file that looks whole (as the Rust engine's StagedFile does)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def staged_open(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO]:
    """A file to write `path` through: `.NAME.PID.partial` beside it, renamed to `path` when the block ends
    without an error and removed when it raises."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") if binary else open(partial, "w", encoding="utf-8") as f:
            yield f
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_staged(path: str | os.PathLike[str], text: str) -> None:
    with staged_open(path) as f:
        f.write(text)
