"""tc3-eval: the fine-tuned model scored against a baseline (--modes: seen, unseen, grounded)

On held-out titles, or with --modes on trained products, held-out titles and grounded answers; writes report.json,
report.md and its plots."""

from __future__ import annotations

import argparse
import sys

from tc3.cli.args import add_device_args, add_generation_args, make_parser, positive_int, set_threads, settings_from
from tc3.errors import MODEL_MODULES, UserError, command, need
from tc3.progress import Ticker


def parser() -> argparse.ArgumentParser:
    p = make_parser(
        prog="tc3-eval",
        description="Generate for n held-out titles with the model (and a baseline, under the same settings) and "
        "score against the real descriptions: ROUGE-1/2/L, BLEU, chrF, loss/perplexity on the references, length, "
        "distinct-2, loops, stop share; 10 side-by-side examples and a plot.",
    )
    p.add_argument("--model", required=True, help="fine-tuned model: merged dir, adapter dir or Hub id")
    p.add_argument("--base", help="base of an adapter --model (default: from its adapter_config.json)")
    p.add_argument("--baseline", help="model to compare with (usually the untouched base), same settings")
    p.add_argument("--data", required=True, help="a tc3-prep output dir")
    p.add_argument("--split", help="split of --data the titles come from (default: validation); not with --modes")
    p.add_argument("--modes", help="score the mission's ways instead, each against --baseline, in one report: "
                   "seen (products the model trained on, closed book), unseen (held-out titles), grounded (the "
                   "record in the prompt, beside the copy baseline); comma-separated, e.g. seen,unseen,grounded")
    p.add_argument("--n", type=positive_int, default=500, help="titles to evaluate (seeded sample)")
    p.add_argument("--seed", type=int, default=3407, help="seed of the title sample (and of --sample)")
    p.add_argument("--out", default="eval-report",
                   help="directory for report.json, report.md, report.png and the cache of answers (tc3-eval's own: "
                   "an existing folder that tc3-eval did not make is refused)")
    p.add_argument("--questions", choices=["fixed", "seen", "unseen"], default="fixed",
                   help="how titles are asked: fixed = one instruction (default; see --instruction); seen = a "
                   "training question template per title; unseen = seen, plus a second pass with phrasings held "
                   "out of training, ROUGE-L of both side by side")
    p.add_argument("--batch-size", type=positive_int, default=8, help="titles generated together")
    add_device_args(p)
    p.add_argument("--baseline-instruction", default="en",
                   help="how the baseline is asked: 'en' (default: the references' language), 'pt' or a literal "
                   "instruction; when the model is asked otherwise, the baseline is also asked the model's way and "
                   "both are reported side by side")
    add_generation_args(p, max_new_tokens=256, seed=False, instruction=None)
    return p


@command("tc3-eval", interrupted="interrupted; the finished answers are kept: run the same command to go on")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    need("train", *MODEL_MODULES)
    settings = settings_from(args)
    if args.modes is not None:
        return main_modes(args, settings)
    from tc3.eval.run import run_eval
    from tc3.generate import quiet_libraries

    quiet_libraries()
    set_threads(args)
    with Ticker("tc3-eval", "titles") as ticker:
        report = run_eval(args.model, args.data, args.out, baseline=args.baseline, base=args.base,
                          split=args.split or "validation",
                          n=args.n, seed=args.seed, settings=settings, batch_size=args.batch_size,
                          device=args.device, questions=args.questions, model_instruction=args.instruction,
                          baseline_instruction=args.baseline_instruction,
                          log=lambda msg: print(f"tc3-eval: {msg}", file=sys.stderr),
                          progress=lambda label, done, total: ticker.update(done, total, label))
    for label, model in report["models"].items():
        m = model["metrics"]
        print(f"{label:17s} ROUGE-L {m['rougeL']:.4f}  BLEU {m['bleu']:.2f}  chrF {m['chrf']:.2f}  "
              f"loss {m['eval_loss']:.3f}  loops {100 * m['loop_share']:.1f}%  stopped {100 * m['stopped_share']:.1f}%")
    for label, row in report.get("phrasings", {}).items():
        print(f"{label:17s} ROUGE-L seen phrasings {row['rougeL_seen']:.4f}, unseen {row['rougeL_unseen']:.4f} "
              f"(unseen/seen {row['unseen_over_seen']:.3f})")
    print(f"tc3-eval: wrote {args.out}/report.json, report.md, report.png")
    return 0


def main_modes(args, settings) -> int:
    """tc3-eval --modes: tc3.eval.modes.run_modes, then a line per mode and model."""
    from tc3.eval.modes import parse_modes

    modes = parse_modes(args.modes)
    if args.split is not None or args.questions != "fixed":
        raise UserError("--modes chooses the split and the questions of each mode: leave out --split and --questions")
    from tc3.eval.modes import run_modes
    from tc3.generate import quiet_libraries

    quiet_libraries()
    set_threads(args)
    with Ticker("tc3-eval", "titles") as ticker:
        report = run_modes(args.model, args.data, args.out, modes, baseline=args.baseline, base=args.base, n=args.n,
                           seed=args.seed, settings=settings, batch_size=args.batch_size, device=args.device,
                           model_instruction=args.instruction, baseline_instruction=args.baseline_instruction,
                           log=lambda msg: print(f"tc3-eval: {msg}", file=sys.stderr),
                           progress=lambda label, done, total: ticker.update(done, total, label))
    for mode, entry in report["modes"].items():
        for label, m in entry["metrics"].items():
            line = f"{mode:8s} {label:8s} ROUGE-L {m['rougeL']:.4f}  chrF {m['chrf']:.2f}"
            if m.get("perplexity") is not None:
                line += f"  perplexity {m['perplexity']:.2f}  stopped {100 * m['stopped_share']:.1f}%"
            hallucination = m["hallucination_share"]
            print(line + f"  invented attributions {100 * m['invented_attribution_share']:.1f}%  hallucination "
                  + ("-" if hallucination is None else f"{100 * hallucination:.1f}%"))
    plots = ", ".join(f"report-{mode}.png" for mode in report["modes"])
    print(f"tc3-eval: wrote {args.out}/report.json, report.md, {plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
