"""tc3-eval's held-out report: report.json (settings, each model's metrics, the model-minus-baseline deltas with
paired bootstrap intervals, every generation), report.md (a table, the plot, side-by-side examples) and report.png
(a panel a metric)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from tc3.eval.metrics import bootstrap_ci
from tc3.outputs import staged_open, write_staged

METRIC_LABELS = [
    ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("chrf", "chrF"),
    ("eval_loss", "Eval loss (references)"), ("perplexity", "Perplexity (references)"),
    ("mean_words", "Mean length (words)"), ("mean_tokens", "Mean length (new tokens)"), ("distinct2", "Distinct-2"),
    ("loop_share", "Outputs that loop"), ("stopped_share", "Outputs that stopped by themselves"),
    ("reference_over_limit_share", "References longer than the token limit"),
    ("stopped_share_short_refs", "Stopped, among titles whose reference fits the limit"),
    ("seconds_per_title", "Seconds a title (batched)"),
]
CI_KEYS = ("rougeL", "stopped_share")  # metrics reported with a bootstrap interval (metrics[key + "_ci"])
SMALL_SAMPLE = 100  # fewer titles than this: the report warns that small differences are noise
# Labels of the report's columns, in order. The base is asked in the references' language ("baseline", the fair
# comparison every change is measured against) and, when the model is asked otherwise, once more the model's way.
LABELS = ("baseline", "baseline_as_model", "model")


@dataclass
class EvalRun:
    model: str
    baseline: str | None
    data: str
    split: str
    n: int
    seed: int
    batch_size: int
    base: str | None = None
    questions: str = "fixed"
    n_usable: int | None = None  # records of the split with a title and a description
    askings: dict | None = None  # label -> the instruction it was asked with


def _relative(tuned: dict, base: dict) -> dict:
    return {key: (tuned[key] - base[key]) / base[key] for key in tuned
            if isinstance(tuned[key], (int, float)) and isinstance(base.get(key), (int, float)) and base[key] != 0
            and math.isfinite(base[key]) and math.isfinite(tuned[key])}


def write_report(out_dir: Path, run: EvalRun, settings, records: list[dict], results: dict[str, dict],
                 examples: int = 10) -> dict:
    """report.json, report.md and report.png from the results of each label (see LABELS).

    ``delta``/``relative`` and ``delta_ci`` (a paired bootstrap interval of the per-title difference) compare the
    model with ``baseline``, the base asked in the references' language; ``relative_vs_baseline_as_model`` with
    the base asked the model's way, when it was.
    """
    from tc3.generate import settings_used

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [label for label in LABELS if label in results]
    report = {
        # the instruction of each run is in askings: settings.instruction is none of theirs
        "settings": {**run.__dict__, "n_scored": len(records),
                     **{k: v for k, v in settings.as_dict().items() if k != "instruction"},
                     "used": settings_used(settings)},
        "models": {label: {"name": results[label]["name"], "metrics": results[label]["metrics"],
                           **({"instruction": run.askings[label]} if run.askings else {})} for label in labels},
    }
    if "baseline" in results and "model" in results:
        base, tuned = results["baseline"]["metrics"], results["model"]["metrics"]
        report["delta"] = {key: tuned[key] - base[key] for key in tuned
                           if isinstance(tuned[key], (int, float)) and isinstance(base.get(key), (int, float))}
        report["relative"] = _relative(tuned, base)
        pairs = list(zip(results["model"]["generations"], results["baseline"]["generations"]))
        report["delta_ci"] = {
            "rougeL": bootstrap_ci([m["rougeL"] - b["rougeL"] for m, b in pairs], run.seed),
            "stopped_share": bootstrap_ci([float(m["stopped"]) - float(b["stopped"]) for m, b in pairs], run.seed),
        }
        if "baseline_as_model" in results:
            report["relative_vs_baseline_as_model"] = _relative(tuned, results["baseline_as_model"]["metrics"])
    phrasings = {label: _phrasing_table(results[label]) for label in labels if "unseen" in results[label]}
    if phrasings:
        report["phrasings"] = phrasings
    picked = records[:examples]
    report["examples"] = [
        {"uid": r.get("uid"), "title": r["title"], "reference": r["description"],
         **{label: results[label]["generations"][i]["description"] for label in labels}}
        for i, r in enumerate(picked)
    ]
    report["generations"] = {label: results[label]["generations"] for label in labels}
    if phrasings:
        report["generations_unseen"] = {label: results[label]["unseen"]["generations"] for label in phrasings}
    write_staged(out_dir / "report.json", json.dumps(_finite(report), ensure_ascii=False, indent=2) + "\n")
    plot_metrics(out_dir / "report.png", {label: results[label]["metrics"] for label in labels},
                 {label: results[label]["name"] for label in labels})
    write_staged(out_dir / "report.md", render_markdown(report, labels))
    return report


def _finite(value):
    """The report with NaN/inf as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _known(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def shown_metrics(metrics: dict[str, dict]) -> list[tuple[str, str]]:
    """(key, title) of the METRIC_LABELS with a finite value for every model: the rows of report.md's table and
    the panels of report.png, the same list."""
    return [(key, title) for key, title in METRIC_LABELS if all(_known(m.get(key)) for m in metrics.values())]


def _fmt(key: str, value) -> str:
    if key.endswith(("_share", "_share_short_refs")):
        return f"{100 * value:.1f}%"
    if key in ("bleu", "chrf", "mean_words", "mean_tokens", "perplexity"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def _fmt_ci(key: str, interval) -> str:
    return "" if not interval else f" [{_fmt(key, interval[0])}, {_fmt(key, interval[1])}]"


def _cell(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


UNSEEN_TARGET = 0.9  # the target: ROUGE-L on unseen phrasings within 10% of the seen ones


def _phrasing_table(result: dict) -> dict:
    seen, unseen = result["metrics"]["rougeL"], result["unseen"]["metrics"]["rougeL"]
    ratio = unseen / seen if seen else float("nan")
    return {"rougeL_seen": seen, "rougeL_unseen": unseen, "unseen_over_seen": ratio,
            "rouge1_seen": result["metrics"]["rouge1"], "rouge1_unseen": result["unseen"]["metrics"]["rouge1"],
            "within_target": bool(ratio >= UNSEEN_TARGET)}


def _phrasing_markdown(report: dict, names: dict) -> list[str]:
    from tc3.prompts import QUESTION_TEMPLATES, UNSEEN_QUESTION_TEMPLATES

    lines = ["## Seen and unseen question phrasings", "",
             f"Each title asked once with a training phrasing ({len(QUESTION_TEMPLATES)} templates) and once with a "
             f"held-out one ({len(UNSEEN_QUESTION_TEMPLATES)} templates never used in training), each drawn per "
             f"title by uid and seed. Target: unseen ROUGE-L at least {UNSEEN_TARGET:.0%} of seen.", "",
             "| model | ROUGE-L seen | ROUGE-L unseen | unseen / seen | ROUGE-1 seen | ROUGE-1 unseen |",
             "|---|---|---|---|---|---|"]
    for label, row in report["phrasings"].items():
        lines.append(f"| {label} (`{Path(names[label]).name or names[label]}`) | {row['rougeL_seen']:.4f} | "
                     f"{row['rougeL_unseen']:.4f} | {row['unseen_over_seen']:.3f} "
                     f"({'within' if row['within_target'] else 'misses'} target) | {row['rouge1_seen']:.4f} | "
                     f"{row['rouge1_unseen']:.4f} |")
    return lines + [""]


def _asking(instruction: str) -> str:
    from tc3.prompts import INSTRUCTIONS

    return f"`{instruction}` (\"{INSTRUCTIONS[instruction]}\")" if instruction in INSTRUCTIONS else f'"{instruction}"'


def markdown_head(report: dict, labels: list[str], names: dict) -> list[str]:
    """The lines above the table: what was asked of which titles, warnings on the sample, the models."""
    s = report["settings"]
    fixed = s.get("questions", "fixed") == "fixed"
    lines = ["# tc3-eval report", ""]
    lines.append(f"{s['n_scored']} titles of the `{s['split']}` split of `{s['data']}` (seed {s['seed']}); "
                 + ("" if fixed else f"questions `{s['questions']}` (per-title question templates); ")
                 + f"{'sampling' if s['do_sample'] else 'greedy'}, "
                 f"repetition penalty {s['repetition_penalty']} "
                 f"({'prompt and answer' if s.get('penalize_prompt') else 'generated tokens only'}), "
                 f"at most {s['max_new_tokens']} new tokens, batch {s['batch_size']}.")
    lines.append("")
    if s.get("n_usable") is not None and s["n"] > s["n_scored"]:
        lines += [f"**{s['n']} titles were asked for; the split has only {s['n_usable']} with a title and a "
                  f"description, so {s['n_scored']} are scored.**", ""]
    if s["n_scored"] < SMALL_SAMPLE:
        lines += [f"**Small sample ({s['n_scored']} titles):** differences of a few points are within noise; read "
                  "the 95% bootstrap intervals in brackets.", ""]
    for label in labels:
        instruction = report["models"][label].get("instruction")
        asked = f", asked with {_asking(instruction)}" if instruction and fixed else ""
        lines.append(f"- {label}: `{names[label]}`{asked}")
    if "baseline" in labels and "model" in labels:
        lines.append("- The change column compares the model with `baseline`, the base model asked in the "
                     "references' language: the fair comparison. "
                     + ("`baseline_as_model` is the same base asked the model's way, for reference." if
                        "baseline_as_model" in labels else ""))
    lines.append("")
    return lines


def markdown_table(report: dict, labels: list[str]) -> list[str]:
    """The metric table (a column a model, the change against the baseline) and the metrics' notes."""
    lines = []
    pair = "baseline" in labels and "model" in labels
    header = "| metric | " + " | ".join(labels) + (" | change |" if pair else " |")
    lines += [header, "|" + "---|" * (len(labels) + 1 + pair)]
    metrics = [report["models"][label]["metrics"] for label in labels]
    shown = shown_metrics({label: report["models"][label]["metrics"] for label in labels})
    # no nan rows: a metric without a value for every model is named below the table instead
    missing = [title for key, title in METRIC_LABELS if (key, title) not in shown]
    for key, title in shown:
        row = f"| {title} | " + " | ".join(_fmt(key, m[key]) + _fmt_ci(key, m.get(f"{key}_ci")) for m in metrics)
        if pair:
            rel = report.get("relative", {}).get(key)
            delta = report["delta"].get(key)
            change = "" if delta is None else (f"{delta:+.4g}" + (f" ({100 * rel:+.0f}%)" if rel is not None else ""))
            change += _fmt_ci(key, report.get("delta_ci", {}).get(key)) if key in CI_KEYS else ""
            row += f" | {change}"
        lines.append(row + " |")
    if missing:
        lines += ["", "Not shown, no value for every model: " + "; ".join(missing) + " (e.g. no reference fits the "
                  "token limit)."]
    lines += ["", "ROUGE: rouge-score F-measure with stemming, Unicode words, mean over titles (0..1). BLEU, chrF: "
              "sacrebleu corpus scores (0..100). Loss/perplexity: mean token NLL of the reference descriptions given "
              "the prompt. Loops: some word 4-gram occurs 3+ times. Stopped: ended with an end token before the "
              "limit. References longer than the limit (in the model's tokens) bound the stop share of a model that "
              "writes as long as they do. Brackets: 95% bootstrap intervals (1,000 resamples of the titles; for the "
              "change, of the per-title differences).",
              ""]
    return lines


def render_markdown(report: dict, labels: list[str]) -> str:
    """report.md: the settings, the models and how each was asked, the metric table, the phrasings, examples."""
    names = {label: report["models"][label]["name"] for label in labels}
    lines = markdown_head(report, labels, names) + markdown_table(report, labels)
    if "phrasings" in report:
        lines += _phrasing_markdown(report, names)
    lines += ["![metrics](report.png)", "", f"## {len(report['examples'])} examples", ""]
    for i, example in enumerate(report["examples"], 1):
        lines.append(f"### {i}. {_cell(example['title'], 200)}")
        lines.append("")
        lines.append(f"- **reference**: {_cell(example['reference'])}")
        for label in labels:
            lines.append(f"- **{label}**: {_cell(example[label])}")
        lines.append("")
    return "\n".join(lines)


def plot_metrics(path: Path, metrics: dict[str, dict], names: dict[str, str]) -> None:
    """One panel per metric of the report's table (each on its own scale), a bar per model, with the bootstrap
    interval where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(metrics)
    shown = shown_metrics(metrics)
    columns = 5
    rows = max(1, math.ceil(len(shown) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.6 * rows), dpi=100, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes.flat, shown):
        values = [metrics[label][key] for label in labels]
        errors = None
        intervals = [metrics[label].get(f"{key}_ci") for label in labels]
        if all(intervals):
            errors = [[v - lo for v, (lo, _) in zip(values, intervals)],
                      [hi - v for v, (_, hi) in zip(values, intervals)]]
        bars = ax.bar(range(len(labels)), values, color=colors[: len(labels)], yerr=errors, capsize=3)
        for bar, value in zip(bars, values):
            ax.annotate(_fmt(key, value), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[j]) for j in range(len(labels))]
    fig.legend(handles, [f"{label}: {Path(names[label]).name or names[label]}" for label in labels],
               loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle("tc3-eval" + (": baseline vs fine-tuned" if len(labels) > 1 else ""))
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    with staged_open(path, binary=True) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
