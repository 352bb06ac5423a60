"""The one error type for a user's mistake, and the wrapper that turns it into one line on stderr.

A `UserError` is something the user can fix (a bad option, a missing file, an output in the way, a model that
cannot be found); its message is printed as one line, `tc3-x: error: <message>`, and the command exits with its
`status`: 2 for a usage mistake (bad option, path or model; the default), 1 for an input that cannot be read.
Any other exception is a bug in tc3 and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

USAGE = 2  # a bad option, path or model: the command as typed cannot run
INPUT = 1  # an input that cannot be read (missing, truncated, corrupt)
INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix; `status` is the exit status of the command (USAGE or INPUT)."""

    def __init__(self, message: str, status: int = USAGE):
        super().__init__(message)
        self.status = status


def one_line(message: object) -> str:
    """`message` on one line: line breaks (from a library's message or a path) become spaces."""
    return " ".join(str(message).split()) or type(message).__name__


def command(prog: str, interrupted: str = "interrupted") -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorates a CLI `main(argv) -> int`: a UserError is printed as `PROG: error: MESSAGE` and exits with its
    status; Ctrl-C prints `PROG: <interrupted>` and exits 130."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except UserError as err:
                print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
                return err.status
            except KeyboardInterrupt:
                print(f"{prog}: {interrupted}", file=sys.stderr)
                return INTERRUPTED

        return run

    return wrap


MODEL_MODULES = ("torch", "transformers", "peft")  # what loading or training a model takes (the train extra)


def need(extra: str, *modules: str) -> None:
    """Raise a UserError naming the pip command when a `module` of tc3's optional `extra` is missing: checked
    before long work, not when its result is due."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{module} is not installed (the '{extra}' extra); run: pip install 'tc3[{extra}]'")
