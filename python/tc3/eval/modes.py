"""tc3-eval --modes: the three ways the mission asks, each against the base, in one report.

* ``seen``: products the model was trained on (the train rows its tc3 config sampled: same `kinds`, `train_samples`
  and seed), closed book, the model asked with the question it was trained with for that product.
* ``unseen``: held-out titles (the validation split), the model asked as trained (`trained_instruction`).
* ``grounded``: held-out titles with their own record in the prompt (`tc3.prompts.render_context`), beside the copy
  baseline: the record's description as the prompt shows it, given as the answer.

The base (``baseline``) is asked in the references' language (``baseline_instruction``, default "en") on the same
records. Each answer set gets ROUGE-L and chrF with 95% bootstrap intervals, perplexity on the references, stop and
loop shares, the invented-attribution share and the hallucination proxy (`tc3.eval.faithfulness`), over all records
and by content kind (tc3-prep's ``kind``). Writes ``report.json``, ``report.md`` and ``report-<mode>.png``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from pathlib import Path

from tc3.errors import UserError
from tc3.layout import PrepDir, RunDir
from tc3.eval.faithfulness import invented_attributions, unsupported_facts

MODES = ("seen", "unseen", "grounded")
SPLITS = {"seen": "train", "unseen": "validation", "grounded": "validation"}
ABOUT = {
    "seen": "products the model was trained on (its train sample), closed book, asked as in training",
    "unseen": "held-out titles (validation split), asked as trained, no record in the prompt",
    "grounded": "held-out titles with their own record in the prompt; `copy` answers with the record's description "
                "as the prompt shows it",
}
# The summary's metrics (issue 25), in the order of report.md's tables.
HEADLINE = ("rougeL", "chrf", "perplexity", "stopped_share", "loop_share", "invented_attribution_share",
            "hallucination_share")
KIND_METRICS = ("n", "rougeL", "chrf", "stopped_share", "loop_share", "invented_attribution_share",
                "hallucination_share")


def parse_modes(text: str) -> list[str]:
    """``seen,unseen,grounded`` (any of them, in any order) as a list in MODES order; UserError otherwise."""
    asked = [word.strip() for word in text.split(",") if word.strip()]
    unknown = [word for word in asked if word not in MODES]
    if unknown or not asked:
        raise UserError(f"--modes takes {', '.join(MODES)} (comma-separated), not {text!r}")
    return [mode for mode in MODES if mode in asked]


def trained_rows(data: str, config) -> list[dict]:
    """The train rows of `data` a run with `config` trained on closed book: its seeded `train_samples` draw of its
    kinds (`tc3.data.sampled_train_rows`) less the rows of its `grounded_kinds` (those saw their record each time).
    Every train row when `config` is None."""

    if config is None:
        return PrepDir(data).read_split("train")
    from tc3.data import sampled_train_rows

    _, train = sampled_train_rows(dataclasses.replace(config, data=data))
    grounded = config.grounded_kinds or ()
    return [row for row in train.to_list() if not grounded or row["kind"] not in grounded]


def seen_coverage(run: RunDir) -> float | None:
    """The largest share of its training examples a tc3 run can have trained on: examples fed (optimizer steps x
    global batch) over the examples it had (overlong ones dropped), from its metrics.json, at most 1. None when the
    run has no metrics."""
    facts = run.metrics
    fed, rows = facts.get("global_step", 0) * facts.get("global_batch_size", 0), facts.get("train_examples", 0)
    return min(1.0, fed / rows) if fed and rows else None


def asks_of(mode: str, records: list[dict], config=None) -> list:
    """The prompts of `records` in `mode`. `config`: the asked model's training config, for ``seen``: each product
    asked with its training question (a drawn template under ``questions: varied``); None: the instruction."""
    from tc3.generate import Ask
    from tc3.prompts import choose_question

    if mode == "grounded":
        return [Ask(r["title"], context=r) for r in records]
    if mode == "seen" and config is not None and config.questions == "varied":
        return [Ask(r["title"], question=choose_question(r["uid"], config.seed)) for r in records]
    return [Ask(r["title"]) for r in records]


def copy_answers(records: list[dict]) -> list[str]:
    """The copy baseline of grounded mode: each record's description as its grounded prompt shows it."""
    from tc3.prompts import context_description

    return [context_description(r["description"]) for r in records]


# --------------------------------------------------------------------------------------------------------------------
# Scores of one answer set


def chrf_ci(predictions: Sequence[str], references: Sequence[str], seed: int = 0, resamples: int = 1000,
            level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of corpus chrF (0..100): titles drawn with replacement (seeded, as
    `tc3.eval.metrics.bootstrap_ci`), the corpus score of each draw from its sentences' statistics (sacrebleu's own
    paired-bootstrap method). None for fewer than 2 titles."""
    import numpy as np
    from sacrebleu.metrics import CHRF

    if len(predictions) < 2:
        return None
    metric = CHRF()
    stats = np.array(metric._extract_corpus_statistics(list(predictions), [list(references)]))
    rng = random.Random(seed)
    n = len(stats)
    scores = sorted(metric._compute_score_from_stats(stats[[rng.randrange(n) for _ in range(n)]].sum(0)).score
                    for _ in range(resamples))
    tail = (1 - level) / 2
    return scores[int(tail * resamples)], scores[min(resamples - 1, int((1 - tail) * resamples))]


def answer_rows(answers: Sequence[str], asks: list, records: list[dict], instruction: str) -> list[dict]:
    """Per answer: its content kind, ROUGE-L, the attributions it invents and its facts found nowhere (sources: the
    question as asked, record included, the title and the reference)."""
    from tc3.eval.metrics import has_loop, rouge_scores
    from tc3.prompts import user_turn

    references = [r["description"] for r in records]
    rouge_l = rouge_scores(list(answers), references)["rougeL"]
    rows = []
    for answer, ask, record, score in zip(answers, asks, records, rouge_l):
        question = user_turn(ask.title, ask.question or instruction, ask.context)
        facts, unsupported = unsupported_facts(answer, [question, record["title"], record["description"]])
        rows.append({"kind": record.get("kind") or "unknown", "rougeL": round(score, 6), "loop": has_loop(answer),
                     "invented_attributions": invented_attributions(answer, f"{record['title']} "
                                                                            f"{record['description']}"),
                     "facts": len(facts), "unsupported_facts": unsupported})
    return rows


def faithfulness_metrics(rows: list[dict]) -> dict:
    """invented_attribution_share (answers with at least one) and hallucination_share (unsupported facts over all
    facts, pooled; None when no answer states one) of `answer_rows`."""
    from tc3.eval.metrics import share

    facts = sum(row["facts"] for row in rows)
    return {"invented_attribution_share": share([bool(row["invented_attributions"]) for row in rows]),
            "hallucination_share": sum(len(row["unsupported_facts"]) for row in rows) / facts if facts else None,
            "facts": facts}


def by_kind(rows: list[dict], answers: Sequence[str], references: Sequence[str],
            stopped: Sequence[bool] | None) -> dict[str, dict]:
    """KIND_METRICS for each content kind among the records (stopped_share None for the copy baseline)."""
    from tc3.eval.metrics import chrf, mean, share

    out = {}
    for kind in sorted({row["kind"] for row in rows}):
        picked = [i for i, row in enumerate(rows) if row["kind"] == kind]
        some = [rows[i] for i in picked]
        out[kind] = {"n": len(picked), "rougeL": mean([row["rougeL"] for row in some]),
                     "chrf": chrf([answers[i] for i in picked], [references[i] for i in picked]),
                     "stopped_share": None if stopped is None else share([stopped[i] for i in picked]),
                     "loop_share": share([row["loop"] for row in some]), **faithfulness_metrics(some)}
    return out


def answer_set_metrics(answers: Sequence[str], asks: list, records: list[dict], instruction: str, seed: int,
                       stopped: Sequence[bool] | None = None) -> tuple[dict, list[dict]]:
    """(metrics, per-answer rows) every answer set of a mode gets, the copy baseline's included: chrF's interval,
    faithfulness, the breakdown by kind (the model's own metrics come from `tc3.eval.run.evaluate_model`)."""
    references = [r["description"] for r in records]
    rows = answer_rows(answers, asks, records, instruction)
    metrics = {"chrf_ci": chrf_ci(answers, references, seed), **faithfulness_metrics(rows),
               "by_kind": by_kind(rows, answers, references, stopped)}
    return metrics, rows


def copy_result(records: list[dict], seed: int) -> dict:
    """The copy baseline scored as a model is (no perplexity, no stop: nothing was generated)."""
    from tc3.eval.metrics import bootstrap_ci, rouge_scores, text_metrics

    answers = copy_answers(records)
    references = [r["description"] for r in records]
    metrics = text_metrics(answers, references)
    metrics["rougeL_ci"] = bootstrap_ci(rouge_scores(answers, references)["rougeL"], seed)
    extra, rows = answer_set_metrics(answers, asks_of("grounded", records), records, "en", seed)
    return {"metrics": metrics | extra | {"perplexity": None, "stopped_share": None},
            "generations": [{"title": r["title"], "description": a} | row
                            for r, a, row in zip(records, answers, rows)]}


# --------------------------------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass
class Asked:
    """One model of the report: its label, the model resolved (tc3.model_ref.ResolvedModel), how it is asked, its
    training config (None: the baseline, asked as any model)."""

    label: str
    model: object
    instruction: str
    config: object | None = None

    @property
    def name(self) -> str:
        return self.model.name


def mode_records(modes: list[str], data: str, config, n: int, seed: int) -> dict[str, list[dict]]:
    """The n records (seeded draw, `tc3.eval.run.sample_records`) of each mode: seen from the rows the model trained
    on, unseen and grounded from the validation split (the same titles for both)."""
    from tc3.eval.run import sample_records

    pools = {}
    for mode in modes:
        if mode == "seen":
            pools[mode] = trained_rows(data, config)
        elif "validation" not in pools:
            pools["validation"] = PrepDir(data).read_split("validation")
    out = {mode: sample_records(pools[mode if mode == "seen" else "validation"], n, seed) for mode in modes}
    for mode, records in out.items():
        if not records:
            raise UserError(f"the {SPLITS[mode]} split of '{data}' has no record with a title and a description "
                            f"for --modes {mode}")
    return out


def run_modes(model: str, data: str, out_dir, modes: list[str], baseline: str | None = None, base: str | None = None,
              n: int = 50, seed: int = 3407, settings=None, batch_size: int = 8, device: str | None = None,
              model_instruction: str | None = None, baseline_instruction: str = "en", log=print,
              progress=None) -> dict:
    """Score `model` (and `baseline`, usually its untouched base) in each of `modes`; write the report.

    Every check that can fail is made before a model loads (UserError). Each model is loaded once and answers every
    mode; its answers are cached in OUT/cache like `tc3.eval.run.run_eval`'s, so a rerun with the same arguments
    reuses them. `progress(label, done, total)` follows generation.
    """
    from tc3.errors import need
    from tc3.eval.run import trained_instruction
    from tc3.generate import GenerationSettings
    from tc3.model_ref import resolve_model
    from tc3.outputs import claim_dir
    from tc3.runtime import default_device

    settings = settings or GenerationSettings()
    need("eval", "rouge_score", "sacrebleu", "matplotlib")
    tuned = resolve_model(model, base)
    other = resolve_model(baseline, known=(tuned.run, tuned.weights)) if baseline is not None else None
    config = tuned.config
    if "seen" in modes:
        need("train", "datasets")  # the trained rows are drawn as tc3-train drew them
        if config is not None and Path(config.data).resolve() != Path(data).resolve():
            log(f"seen: {model} was trained on {config.data}; its train rows are drawn from --data {data}")
    records = mode_records(modes, data, config, n, seed)
    coverage = seen_coverage(tuned.run) if "seen" in modes else None
    if coverage is not None and coverage < 1:
        log(f"seen: {model} trained on at most {coverage:.0%} of its train rows (fewer steps than one epoch): "
            "part of the 'seen' products were never trained on")
    out_dir = claim_dir(out_dir, "tc3-eval")
    asked = [Asked("model", tuned, model_instruction or trained_instruction(tuned), config)]
    if other is not None:
        asked.append(Asked("baseline", other, baseline_instruction))
    device = default_device(device)
    results = {}
    for who in asked:
        results[who.label] = answer_modes(who, modes, records, settings, batch_size, device, seed, out_dir / "cache",
                                          log, progress)
    if "grounded" in modes:
        results["copy"] = {"grounded": copy_result(records["grounded"], seed)}
    report = modes_report(asked, modes, records, results, settings, data=str(data), n=n, seed=seed,
                          batch_size=batch_size, device=device_name(device), seen_coverage=coverage)
    from tc3.eval.modes_report import write_modes_report

    write_modes_report(Path(out_dir), report)
    return report


def answer_modes(who: Asked, modes: list[str], records: dict, settings, batch_size: int, device: str, seed: int,
                 cache_dir: Path, log, progress) -> dict[str, dict]:
    """{mode: result} of one model: `tc3.eval.run.evaluate_model`'s generations and metrics (cached), with the
    faithfulness metrics and per-answer rows of `answer_set_metrics` added."""
    from tc3.eval.report import _finite
    from tc3.eval.run import _cache_key, evaluate_model
    from tc3.models import load_model
    from tc3.outputs import write_staged

    cache_dir.mkdir(parents=True, exist_ok=True)
    asked = dataclasses.replace(settings, instruction=who.instruction)
    loaded, out = None, {}
    for mode in modes:
        asks = asks_of(mode, records[mode], who.config if who.label == "model" else None)
        key = _cache_key(who.model, records[mode], asked, batch_size,
                         ["mode", mode, [(a.question, a.context is not None) for a in asks]], device)
        cached = cache_dir / f"{key}.json"
        if cached.is_file():
            log(f"[{who.label}] {mode}: reusing {cached} (same model, records and settings)")
            result = json.loads(cached.read_text(encoding="utf-8"))
        else:
            if loaded is None:
                log(f"[{who.label}] loading {who.name}")
                loaded = load_model(who.model, device=device)
            log(f"[{who.label}] {mode}: generating for {len(asks)} titles, asked with {who.instruction!r}")
            keep = cache_dir / f"{key}.partial.jsonl"
            result = evaluate_model(loaded, records[mode], asked, batch_size=batch_size, seed=seed, keep=keep,
                                    asks=asks, progress=None if progress is None else
                                    (lambda done, total, tag=f"{who.label} {mode}": progress(tag, done, total)))
            write_staged(cached, json.dumps(_finite(result), ensure_ascii=False))
            keep.unlink(missing_ok=True)
        answers = [g["description"] for g in result["generations"]]
        stopped = [g["stopped"] for g in result["generations"]]
        extra, rows = answer_set_metrics(answers, asks, records[mode], who.instruction, seed, stopped)
        result["metrics"].update(extra)
        result["generations"] = [g | row for g, row in zip(result["generations"], rows)]
        out[mode] = result
    if loaded is not None:
        loaded.close()
    return out


def device_name(device: str) -> str:
    """The device as a report names it: ``cuda (NVIDIA H100 80GB HBM3)``, or ``cpu``."""
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def training_summary(config) -> dict | None:
    """The training settings a reader of the report needs beside its figures (None: not a tc3 output)."""
    if config is None:
        return None
    keys = ("epochs", "max_steps", "learning_rate", "lora_r", "lora_alpha", "questions", "instruction",
            "context_fraction", "kinds", "grounded_kinds", "train_samples", "seed")
    return {key: getattr(config, key) for key in keys}


def modes_report(asked: list[Asked], modes: list[str], records: dict, results: dict, settings, **run) -> dict:
    """report.json's content: settings, then for each mode its records' split, every label's metrics and the
    model-minus-baseline deltas (ROUGE-L's with a paired bootstrap interval), and every answer."""
    from tc3.eval.metrics import bootstrap_ci
    from tc3.generate import settings_used

    report = {"settings": {**run, "modes": modes, **{k: v for k, v in settings.as_dict().items()
                                                      if k != "instruction"}, "used": settings_used(settings)},
              "models": {a.label: {"name": a.name, "instruction": a.instruction,
                                   "training": training_summary(a.config)} for a in asked},
              "modes": {}, "generations": {}}
    for mode in modes:
        labels = [label for label in ("model", "baseline", "copy") if mode in results.get(label, {})]
        entry = {"about": ABOUT[mode], "split": SPLITS[mode], "n_scored": len(records[mode]),
                 "metrics": {label: results[label][mode]["metrics"] for label in labels}}
        if "baseline" in labels:
            tuned, fair = entry["metrics"]["model"], entry["metrics"]["baseline"]
            entry["delta"] = {key: tuned[key] - fair[key] for key in HEADLINE
                              if isinstance(tuned.get(key), (int, float)) and isinstance(fair.get(key), (int, float))}
            pairs = zip(results["model"][mode]["generations"], results["baseline"][mode]["generations"])
            entry["delta_ci"] = {"rougeL": bootstrap_ci([m["rougeL"] - b["rougeL"] for m, b in pairs],
                                                        run["seed"])}
        report["modes"][mode] = entry
        report["generations"][mode] = {
            label: [g | {"uid": r.get("uid"), "reference": r["description"]}
                    for g, r in zip(results[label][mode]["generations"], records[mode])]
            for label in labels}
    return report
