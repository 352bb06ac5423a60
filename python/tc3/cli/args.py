"""The argument parser every tc3 command is built with: help that shows defaults, no abbreviated flags."""

from __future__ import annotations

import argparse
import textwrap


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


def make_parser(prog: str, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser for command `prog` (a `tc3-*` name): defaults shown by `HelpFormatter`; an abbreviated
    flag (`--titl` for `--title`) is an error like any unknown one, so a flag added later never changes what an
    old command line means."""
    return argparse.ArgumentParser(prog=prog, allow_abbrev=False, formatter_class=HelpFormatter, **kwargs)
