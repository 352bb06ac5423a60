"""tc3-push: upload an adapter or merged model dir, with its model card, to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys

from tc3.cli.args import make_parser
from tc3.errors import command, need


def parser() -> argparse.ArgumentParser:
    p = make_parser(
        prog="tc3-push",
        description=__doc__.split(": ", 1)[1],
        epilog="The token comes from HF_TOKEN or `hf auth login`; it is never printed or saved.",
    )
    p.add_argument("path", help="a tc3-train output dir (adapter) or a tc3-export output dir (merged model)")
    p.add_argument("repo_id", help="owner/name of the model repo on the Hub")
    p.add_argument("--public", action="store_true",
                   help="create the repo public, or upload into an existing public one (default: a new repo is "
                   "private, an existing public one is refused)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be uploaded and make every check the upload needs; upload nothing")
    return p


@command("tc3-push")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    need("train", "huggingface_hub")
    from tc3.hub import push

    push(args.path, args.repo_id, private=not args.public, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
