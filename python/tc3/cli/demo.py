"""tc3-demo: a local Gradio page: a title in, a streamed description out (optionally beside the base model)."""

from __future__ import annotations

import argparse
import os
import sys

from tc3.cli.args import add_generation_args, add_model_args, make_parser, set_threads, settings_from
from tc3.cli.generate import add_grounding_args, open_index
from tc3.demo import HOST
from tc3.errors import INTERRUPTED, MODEL_MODULES, command, need


def parser() -> argparse.ArgumentParser:
    p = make_parser(
        prog="tc3-demo",
        description="Serve a small Gradio app on --host (no share link, analytics off). --grounded --index DIR "
        "answers from the product's record in a tc3-index, shown beside the answer.",
    )
    add_model_args(p)
    p.add_argument("--baseline", help="also show this model's answer (e.g. the untouched base) side by side")
    p.add_argument("--host", default=HOST,
                   help="address to serve on; 0.0.0.0 makes the page reachable from other machines (no login)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--literal", action="store_true", help="use the text as the title even if it is a question")
    add_grounding_args(p)
    add_generation_args(p)
    return p


@command("tc3-demo")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    need("train", *MODEL_MODULES)
    settings = settings_from(args)
    from tc3.demo import build_app, check_can_serve, launch
    from tc3.generate import load_model, quiet_libraries
    from tc3.model_ref import resolve_model

    check_can_serve(args.port, args.host)
    model = resolve_model(args.model, base=args.base)
    reference = resolve_model(args.baseline, known=(model.run, model.weights)) if args.baseline else None
    quiet_libraries()
    set_threads(args)
    index = open_index(args)
    loaded = load_model(model, device=args.device, dtype=args.dtype)
    baseline = load_model(reference, device=args.device, dtype=args.dtype) if reference else None
    app = build_app(loaded, baseline, settings, literal=args.literal, index=index)
    try:
        launch(app, port=args.port, host=args.host)
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: status 130, as every tc3 command's Ctrl-C
        # The server is closed; leave now rather than wait on threads that libraries started and never stop (seen:
        # the process lingering after Ctrl-C on a machine without network).
        print("tc3-demo: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
