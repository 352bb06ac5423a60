"""report.json, report.md and report-<mode>.png of `tc3-eval --modes` (`tc3.eval.modes.modes_report`'s content)."""

from __future__ import annotations

import json
from pathlib import Path

from tc3.eval.modes import HEADLINE, KIND_METRICS

TITLES = {"rougeL": "ROUGE-L", "chrf": "chrF", "perplexity": "Perplexity (references)",
          "stopped_share": "Stopped by themselves", "loop_share": "Outputs that loop",
          "invented_attribution_share": "Invented attributions", "hallucination_share": "Hallucination proxy",
          "n": "records"}
EXAMPLES = 3  # side-by-side answers a mode shows in report.md


def write_modes_report(out_dir: Path, report: dict) -> None:
    """The three files, each staged and renamed (tc3.outputs.write_staged)."""
    from tc3.eval.report import _finite, plot_metrics
    from tc3.outputs import write_staged

    write_staged(out_dir / "report.json", json.dumps(_finite(report), ensure_ascii=False, indent=2) + "\n")
    for mode, entry in report["modes"].items():
        generated = {label: m for label, m in entry["metrics"].items() if label != "copy"}
        names = {label: report["models"][label]["name"] for label in generated}
        plot_metrics(out_dir / f"report-{mode}.png", generated, names)
    write_staged(out_dir / "report.md", render_modes_markdown(report))


def cell(key: str, value, interval=None) -> str:
    """A metric as report.md shows it: shares in %, chrF and perplexity with 2 decimals, ROUGE with 4; "-" for
    none (the copy baseline's perplexity)."""
    from tc3.eval.report import _fmt, _fmt_ci, _known

    if not _known(value):
        return "-"
    return (f"{value}" if key == "n" else _fmt(key, value)) + _fmt_ci(key, interval)


def mode_table(entry: dict) -> list[str]:
    """The headline metrics of a mode, a column per label, with the model's change against the base."""
    from tc3.eval.report import _fmt_ci

    labels = list(entry["metrics"])
    pair = "delta" in entry
    lines = ["| metric | " + " | ".join(labels) + " |" + (" model - baseline |" if pair else ""),
             "|---|" + "---|" * (len(labels) + pair)]
    for key in HEADLINE:
        row = f"| {TITLES[key]} | " + " | ".join(cell(key, m.get(key), m.get(f"{key}_ci"))
                                                for m in entry["metrics"].values()) + " |"
        if pair:
            delta = entry["delta"].get(key)
            row += f" {'-' if delta is None else f'{delta:+.4g}'}"
            row += (_fmt_ci(key, entry["delta_ci"]["rougeL"]) if key == "rougeL" else "") + " |"
        lines.append(row)
    return lines


def kind_table(entry: dict) -> list[str]:
    """ROUGE-L, chrF, stops, loops and the two faithfulness shares by content kind, for each label."""
    lines = ["| kind | label | " + " | ".join(TITLES[key] for key in KIND_METRICS) + " |",
             "|---|---|" + "---|" * len(KIND_METRICS)]
    for label, metrics in entry["metrics"].items():
        for kind, row in metrics["by_kind"].items():
            lines.append(f"| {kind} | {label} | " + " | ".join(cell(key, row.get(key)) for key in KIND_METRICS)
                         + " |")
    return lines


def render_modes_markdown(report: dict) -> str:
    from tc3.eval.report import SMALL_SAMPLE, _cell

    s = report["settings"]
    lines = ["# tc3-eval report: seen, unseen, grounded", "",
             f"`{s['data']}`, {s['n']} records a mode asked for (seed {s['seed']}); "
             f"{'sampling' if s['do_sample'] else 'greedy'}, repetition penalty {s['repetition_penalty']}, at most "
             f"{s['max_new_tokens']} new tokens, batch {s['batch_size']}, on {s['device']}.", ""]
    for label, model in report["models"].items():
        lines.append(f"- {label}: `{model['name']}`, asked with `{model['instruction']}`"
                     + (f"; trained with {json.dumps(model['training'])}" if model.get("training") else ""))
    lines += ["", "ROUGE-L: rouge-score F-measure, Unicode words, mean over records (0..1). chrF: sacrebleu corpus "
              "score (0..100). Brackets: 95% bootstrap intervals (1,000 resamples of the records; for the change, "
              "of the per-record differences). Perplexity: of the reference descriptions given the prompt. "
              "Invented attributions: answers crediting a quote to a source the record does not name (the engine's "
              "attribution rule). Hallucination proxy: the answer's numbers and capitalised names found in neither "
              "the question (record included), the title nor the reference, over all of them.", ""]
    for mode, entry in report["modes"].items():
        lines += [f"## {mode}: {entry['about']}", "",
                  f"{entry['n_scored']} records of the `{entry['split']}` split."
                  + (" **Small sample:** read the intervals." if entry["n_scored"] < SMALL_SAMPLE else ""), ""]
        lines += mode_table(entry) + ["", "By content kind:", ""] + kind_table(entry) + [""]
        generations = report["generations"][mode]
        for i, answer in enumerate(next(iter(generations.values()))[:EXAMPLES], 1):
            lines += [f"### {mode} {i}. {_cell(answer['title'], 200)}", "",
                      f"- **reference**: {_cell(answer['reference'])}"]
            lines += [f"- **{label}**: {_cell(answers[i - 1]['description'])}"
                      for label, answers in generations.items()]
            lines.append("")
        lines += [f"![{mode}](report-{mode}.png)", ""]
    return "\n".join(lines)
