"""The SmolLM2 proof's record (issue 25): summary.json from the `tc3-eval --modes` reports of the two goals.

    python benches/smollm2_eval.py --recall EVAL_RECALL --describe EVAL_DESCRIBE [--unfiltered EVAL_ALL_KINDS]
        [--out benches/results/smollm2-eval] [--content-kinds benches/results/content-kinds.json]

EVAL_RECALL: the report dir of `tc3-eval --modes seen` on the recall config's run; EVAL_DESCRIBE: of `--modes
unseen,grounded` on the describe config's run; EVAL_ALL_KINDS (optional): of `--modes unseen` on the describe
config trained with `kinds=null` (review_quotes included). Writes OUT/summary.json: for `seen` (recall), `unseen` and
`grounded` (describe) a `model` and a `baseline` object (`grounded` also `copy`) with SUMMARY_KEYS, `settings`
(config, epochs, n, max_new_tokens, commit, device, date) and `targets` (the issue's, each with its value and whether it
is met); copies each report (json, md, png) to OUT/<recall|describe|describe-all-kinds>/. With --unfiltered, fills
`invented_attribution_share` (`unfiltered`, `filtered`) of --content-kinds, leaving its other keys as they are.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_KEYS = ("rougeL", "rougeL_ci", "chrf", "chrf_ci", "perplexity", "stopped_share", "loop_share",
                "invented_attribution_share", "hallucination_share")
# mode -> (which report holds it, the config that trained its model)
SOURCES = {"seen": "recall", "unseen": "describe", "grounded": "describe"}


def read_report(folder: Path, modes: tuple[str, ...]) -> dict:
    """A `tc3-eval --modes` report.json that holds `modes` with a model and a baseline; SystemExit otherwise."""
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise SystemExit(f"smollm2_eval: {path} does not exist (run tc3-eval --modes first)")
    report = json.loads(path.read_text(encoding="utf-8"))
    for mode in modes:
        if "baseline" not in report.get("modes", {}).get(mode, {}).get("metrics", {}):
            raise SystemExit(f"smollm2_eval: {path} has no {mode} mode scored against a --baseline")
    return report


def pick(metrics: dict) -> dict:
    return {key: metrics.get(key) for key in SUMMARY_KEYS}


def targets(summary: dict) -> dict:
    """The issue's targets against the base, each {value, target, met}."""
    seen, unseen, grounded = (summary[m]["model"] for m in ("seen", "unseen", "grounded"))
    base = summary["unseen"]["baseline"]

    def check(value, target: str, met: bool) -> dict:
        return {"value": value, "target": target, "met": bool(met)}

    def floor(key: str) -> float:  # the base's interval's low end (its value when there is none)
        return (base.get(f"{key}_ci") or [base[key]])[0]

    return {
        "seen_rougeL": check(seen["rougeL"], ">= 0.7", seen["rougeL"] >= 0.7),
        "seen_stopped_share": check(seen["stopped_share"], ">= 0.95", seen["stopped_share"] >= 0.95),
        "unseen_perplexity_ratio": check(unseen["perplexity"] / base["perplexity"], "<= 0.6",
                                         unseen["perplexity"] <= 0.6 * base["perplexity"]),
        "unseen_stopped_share": check(unseen["stopped_share"], ">= 0.95", unseen["stopped_share"] >= 0.95),
        "unseen_loop_share": check(unseen["loop_share"], "< 0.02", unseen["loop_share"] < 0.02),
        "unseen_invented_attribution_share": check(
            unseen["invented_attribution_share"], f"<= base + 0.02 ({base['invented_attribution_share'] + 0.02:.4f})",
            unseen["invented_attribution_share"] <= base["invented_attribution_share"] + 0.02),
        "unseen_rougeL": check(unseen["rougeL"], f">= base interval's low end ({floor('rougeL'):.4f})",
                               unseen["rougeL"] >= floor("rougeL")),
        "unseen_chrf": check(unseen["chrf"], f">= base interval's low end ({floor('chrf'):.2f})",
                             unseen["chrf"] >= floor("chrf")),
        "grounded_hallucination_share": check(grounded["hallucination_share"], "< 0.05",
                                              grounded["hallucination_share"] is not None
                                              and grounded["hallucination_share"] < 0.05),
    }


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def summarize(recall: dict, describe: dict, configs: dict[str, str], commit: str | None) -> dict:
    """summary.json's content from the two reports (see the module docstring)."""
    reports = {"recall": recall, "describe": describe}
    summary = {}
    for mode, goal in SOURCES.items():
        metrics = reports[goal]["modes"][mode]["metrics"]
        summary[mode] = {label: pick(metrics[label]) for label in ("model", "baseline", "copy") if label in metrics}
        summary[mode]["n_scored"] = reports[goal]["modes"][mode]["n_scored"]
    settings = {goal: report["settings"] for goal, report in reports.items()}
    summary["settings"] = {
        "config": {mode: configs[goal] for mode, goal in SOURCES.items()},
        "epochs": {mode: (reports[goal]["models"]["model"].get("training") or {}).get("epochs")
                   for mode, goal in SOURCES.items()},
        "n": {goal: s["n"] for goal, s in settings.items()},
        "max_new_tokens": {goal: s["max_new_tokens"] for goal, s in settings.items()},
        "commit": commit,
        "device": {goal: s["device"] for goal, s in settings.items()},
        "baseline_instruction": reports["describe"]["models"]["baseline"]["instruction"],
        "date": datetime.date.today().isoformat(),
    }
    summary["targets"] = targets(summary)
    return summary


def attribution_shares(unfiltered: dict, filtered: dict) -> dict:
    """content-kinds.json's `invented_attribution_share`: the describe config's unseen answers trained with every
    kind (`unfiltered`) and without review_quotes (`filtered`), the base's beside them."""
    def share(report: dict, label: str) -> float:
        return report["modes"]["unseen"]["metrics"][label]["invented_attribution_share"]

    return {"unfiltered": share(unfiltered, "model"), "filtered": share(filtered, "model"),
            "baseline": share(filtered, "baseline"), "measured": True,
            "n": filtered["modes"]["unseen"]["n_scored"], "device": filtered["settings"]["device"],
            "how": "SmolLM2-135M-Instruct, smollm2-describe with kinds=null (unfiltered) and as shipped (filtered), "
                   "tc3-eval --modes unseen; benches/smollm2_eval.py"}


def copy_report(folder: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in Path(folder).iterdir():
        if item.is_file() and item.name.startswith("report"):
            shutil.copy(item, dest / item.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--recall", type=Path, required=True, help="tc3-eval --modes seen report dir")
    parser.add_argument("--describe", type=Path, required=True, help="tc3-eval --modes unseen,grounded report dir")
    parser.add_argument("--unfiltered", type=Path, help="tc3-eval --modes unseen of describe with kinds=null")
    parser.add_argument("--recall-config", default="smollm2-recall")
    parser.add_argument("--describe-config", default="smollm2-describe")
    parser.add_argument("--commit", help="the commit the runs used (default: this checkout's HEAD)")
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "results" / "smollm2-eval")
    parser.add_argument("--content-kinds", type=Path, default=ROOT / "benches" / "results" / "content-kinds.json")
    args = parser.parse_args(argv)
    recall, describe = read_report(args.recall, ("seen",)), read_report(args.describe, ("unseen", "grounded"))
    unfiltered = read_report(args.unfiltered, ("unseen",)) if args.unfiltered else None
    summary = summarize(recall, describe, {"recall": args.recall_config, "describe": args.describe_config},
                        args.commit or git_commit())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    copy_report(args.recall, args.out / "recall")
    copy_report(args.describe, args.out / "describe")
    if unfiltered is not None:
        copy_report(args.unfiltered, args.out / "describe-all-kinds")
        kinds = json.loads(args.content_kinds.read_text()) if args.content_kinds.is_file() else {}
        kinds["invented_attribution_share"] = attribution_shares(unfiltered, describe)
        args.content_kinds.write_text(json.dumps(kinds, indent=2) + "\n")
    for name, target in summary["targets"].items():
        print(f"{name:36s} {target['value']!s:24.24s} {target['target']:40s} {'met' if target['met'] else 'MISSED'}")
    print(f"smollm2_eval: wrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
