"""tc3-train: fine-tune a causal LM on a tc3-prep output, from one YAML config."""

from __future__ import annotations

import argparse
import sys

from tc3.cli.args import make_parser
from tc3.config import keys_help, load_config, shipped_configs
from tc3.errors import MODEL_MODULES, UserError, command, need


def parser() -> argparse.ArgumentParser:
    p = make_parser(
        prog="tc3-train",
        description="QLoRA/LoRA fine-tuning: product title -> description. Flags key=value override the config file.",
        epilog=f"config keys (key=value on the command line, key: value in the file):\n{keys_help()}",
    )
    p.add_argument("--config", metavar="FILE_OR_NAME",
                   help="a YAML config file, or the name of a shipped one (--list-configs)")
    p.add_argument("--list-configs", action="store_true", help="list the shipped configs and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override a config key (read by its type; text as typed)")
    p.add_argument("--dry-run", action="store_true", help="print config, data sizes, lengths, 3 examples; exit")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint of output_dir")
    return p


@command("tc3-train", interrupted="interrupted; complete checkpoints are kept: continue with --resume")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list_configs:
        for name, about in shipped_configs().items():
            print(f"{name:22s} {about}")
        return 0
    if args.config is None:
        raise UserError("give --config FILE_OR_NAME (tc3-train --list-configs lists the shipped ones)")
    config = load_config(args.config, args.overrides)
    need("train", *MODEL_MODULES, "trl", "datasets")
    if args.dry_run:
        from tc3.train import dry_run

        dry_run(config)
        return 0
    from tc3.train import train

    metrics = train(config, resume=args.resume)
    from tc3.train import say

    say(  # once, from the main process, when launched as several
        f"tc3-train: done: train loss {metrics['train_loss']}, eval loss {metrics['eval_loss']}, "
        f"{metrics['global_step']} steps; adapter in {config.output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
