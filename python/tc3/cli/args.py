"""The argument parser every tc3 command is built with: help that shows defaults, no abbreviated flags."""

from __future__ import annotations

import argparse
import textwrap
from typing import NoReturn


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the default is nothing (None, False, an empty list) or the
    help already says it; a description or epilog keeps its line breaks, and lines indented by two spaces (tables,
    examples) are kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)".lstrip()

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if line.startswith("  ") or not line.strip():
                lines.append(indent + line if line.strip() else "")
            else:
                lines.append(textwrap.fill(" ".join(line.split()), width, initial_indent=indent,
                                           subsequent_indent=indent))
        return "\n".join(lines)


def positive_int(text: str) -> int:
    """The type of an option that counts something (--threads, --batch-size, --n ...): a whole number of at least 1;
    anything else is an argument error (`argument --threads: must be at least 1, not 0`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def precision_arg(text: str) -> str:
    """The type of a --dtype option: a precision in tc3's vocabulary (fp32, bf16, fp16), torch's names (float32 ...)
    read as the same (tc3.runtime.precision_of)."""
    from tc3.errors import UserError
    from tc3.runtime import precision_of

    try:
        return precision_of(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as every other mistake of tc3 is (tc3.errors): `PROG: error:
    MESSAGE (PROG --help lists the options)`, exit status 2, without argparse's usage block before it."""

    def error(self, message: str) -> NoReturn:
        from tc3.errors import USAGE, one_line

        self.exit(USAGE, f"{self.prog}: error: {one_line(message)} ({self.prog} --help lists the options)\n")


def make_parser(prog: str, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser for command `prog` (a `tc3-*` name): defaults shown by `HelpFormatter`, one-line errors
    (`Parser`); an abbreviated flag (`--titl` for `--title`) is an error like any unknown one, so a flag added later
    never changes what an old command line means. `--version` prints tc3's version."""
    from tc3 import __version__

    parser = Parser(prog=prog, allow_abbrev=False, formatter_class=HelpFormatter, **kwargs)
    parser.add_argument("--version", action="version", version=f"tc3 {__version__}", help="print tc3's version and exit")
    return parser
