"""`tc3 <verb>`: the one entry point over the tc3-* commands (`tc3 prep ...` is `tc3-prep ...`, same options, same
help), and `tc3 completion bash|zsh`, the shell completion script built from the commands' own parsers."""

from __future__ import annotations

import difflib
import importlib
import sys

from tc3.cli.args import make_parser
from tc3.errors import UserError, command

# verb -> its module in tc3.cli (with `parser()` and `main(argv)`); the tc3-VERB commands are the same functions
VERBS = ("prep", "train", "generate", "eval", "demo", "export", "push", "index")
SHELLS = ("bash", "zsh")


def _module(verb: str):
    return importlib.import_module(f"tc3.cli.{verb}")


def parser():
    p = make_parser(
        prog="tc3",
        description=" ".join(__doc__.split(": ", 1)[1].split()),
        epilog="verbs:\n" + "\n".join(f"  {verb:12s}{_module(verb).__doc__.split(': ', 1)[1].splitlines()[0]}"
                                      for verb in VERBS)
        + "\n  completion    print the completion script of a shell: eval \"$(tc3 completion bash)\"\n"
        "`tc3 VERB --help` shows a verb's options.",
    )
    p.add_argument("verb", metavar="VERB", help="one of: " + ", ".join((*VERBS, "completion")))
    p.add_argument("args", nargs="*", default=[], metavar="ARG", help="the verb's arguments")
    return p


@command("tc3")
def _own(argv: list[str]) -> int:
    """`tc3 --help`, `tc3 completion SHELL`, and the error for a verb that is not one."""
    args = parser().parse_args(argv)
    if args.verb == "completion":
        if len(args.args) != 1 or args.args[0] not in SHELLS:
            raise UserError(f"give a shell: tc3 completion {'|'.join(SHELLS)}")
        print(completion_script(args.args[0]), end="")
        return 0
    close = difflib.get_close_matches(args.verb, (*VERBS, "completion"), n=1)
    raise UserError(f"unknown verb {args.verb!r}" + (f" (did you mean {close[0]}?)" if close else "")
                    + f"; one of: {', '.join(VERBS)}, completion")


def main(argv: list[str] | None = None) -> int:
    """`tc3 VERB ARGS...` runs tc3-VERB's main with ARGS (its errors and help are its own); anything else is tc3's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in VERBS:
        return _module(argv[0]).main(argv[1:])
    return _own(argv)


def _words(verb: str) -> list[str]:
    """What completes after `tc3 VERB` (and `tc3-VERB`): its option strings; for train, also its config keys as
    `key=` and the shipped config names."""
    p = _module(verb).parser()
    words = [s for action in p._actions for s in action.option_strings]  # argparse keeps no public list of them
    if verb == "train":
        from tc3.config import FIELDS, shipped_configs

        words += [f"{key}=" for key in FIELDS] + list(shipped_configs())
    return words


def completion_script(shell: str) -> str:
    """A bash completion function for `tc3` and the `tc3-*` aliases (zsh runs it through bashcompinit): the verb,
    then the verb's options; a file name where no option matches."""
    cases = "".join(f"    {verb}) words=\"{' '.join(_words(verb))}\" ;;\n" for verb in VERBS)
    script = (
        "# tc3 completion: eval \"$(tc3 completion " + shell + ")\" (e.g. in ~/." + shell + "rc)\n"
        + ("autoload -U +X bashcompinit && bashcompinit\n" if shell == "zsh" else "")
        + "_tc3() {\n"
        "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" cmd=\"${COMP_WORDS[0]##*/}\" verb words\n"
        "  if [[ $cmd == tc3 ]]; then\n"
        "    if [[ $COMP_CWORD -eq 1 ]]; then\n"
        f"      COMPREPLY=($(compgen -W \"{' '.join(VERBS)} completion\" -- \"$cur\")); return\n"
        "    fi\n"
        "    verb=\"${COMP_WORDS[1]}\"\n"
        "  else\n"
        "    verb=\"${cmd#tc3-}\"\n"
        "  fi\n"
        "  case $verb in\n"
        + cases
        + f"    completion) words=\"{' '.join(SHELLS)}\" ;;\n"
        "  esac\n"
        "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
        "  # a config key (`max_steps=`) is completed without the space after it: its value follows\n"
        "  [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]] && compopt -o nospace 2>/dev/null\n"
        "  return 0\n"
        "}\n"
        "complete -o default -F _tc3 tc3 " + " ".join(f"tc3-{verb}" for verb in VERBS) + "\n"
    )
    return script


if __name__ == "__main__":
    sys.exit(main())
