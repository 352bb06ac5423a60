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


# Option groups shared by the commands that load a model (generate, demo, eval, export).


def add_device_args(p: argparse.ArgumentParser, threads: bool = True) -> None:
    """--device (tc3.runtime.default_device's policy) and, with `threads`, --threads."""
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    if threads:
        p.add_argument("--threads", type=positive_int,
                       help="CPU threads for torch (default: torch's; 1 is faster on a busy box)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model, --base, --dtype and the device options of a command that generates with one model."""
    p.add_argument("--model", required=True, help="merged model or LoRA adapter: a local dir or a Hub id")
    p.add_argument("--base", help="base model of an adapter (default: base_model_name_or_path of its config)")
    p.add_argument("--dtype", type=precision_arg, metavar="{fp32,bf16,fp16}",
                   help="default: fp32 on CPU; on a GPU the precision the model was trained in (its saved plan), "
                   "else bf16 where the GPU has it (fp16 otherwise); float32, bfloat16, float16 are read too")
    add_device_args(p)


def set_threads(args) -> None:
    """--threads, when given, as torch's thread count."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def add_generation_args(p: argparse.ArgumentParser, max_new_tokens: int = 256, seed: bool = True,
                        instruction: str | None = "en") -> None:
    """The decoding options, one group: instruction, length, repetition penalty, sampling."""
    g = p.add_argument_group("generation")
    g.add_argument("--instruction", default=instruction,
                   help="'en', 'pt' or a literal instruction (default: "
                   + (f"{instruction})" if instruction else "the model is asked as it was trained)"))
    g.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens, help="longest answer, in tokens")
    g.add_argument("--repetition-penalty", type=float, default=1.15,
                   help="over the generated tokens only (default: 1.15; 1 turns it off)")
    g.add_argument("--penalize-prompt", action="store_true",
                   help="the repetition penalty also counts the prompt's tokens (transformers' behaviour): the "
                   "title's and the record's words are then pushed out of the answer")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=0.7, help="with --sample")
    g.add_argument("--top-p", type=float, default=0.9, help="with --sample")
    g.add_argument("--top-k", type=int, default=50, help="with --sample")
    if seed:
        g.add_argument("--seed", type=int, help="with --sample: make it reproducible")


def settings_from(args):
    """The GenerationSettings of the generation options (add_generation_args); UserError for a value out of range."""
    from tc3.errors import UserError
    from tc3.generate import GenerationSettings

    if args.repetition_penalty <= 0:
        raise UserError("--repetition-penalty must be positive")
    if args.sample and args.temperature <= 0:
        raise UserError("--temperature must be positive")
    if args.sample and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be above 0 and at most 1, got {args.top_p}")
    if args.sample and args.top_k < 0:
        raise UserError(f"--top-k must be 0 (no limit) or more, got {args.top_k}")
    return GenerationSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
                              do_sample=args.sample, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, seed=getattr(args, "seed", None),
                              penalize_prompt=args.penalize_prompt,
                              **({"instruction": args.instruction} if args.instruction else {}))
