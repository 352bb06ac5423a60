"""Honest before/after numbers: generate for held-out titles with two models under one setting and score them.

Metrics (all offline):

* ROUGE-1/2/L: ``rouge-score``, F-measure with Porter stemming, averaged over examples (0..1).
* BLEU and chrF: ``sacrebleu`` corpus scores with default settings (0..100).
* Evaluation loss / perplexity: mean token negative log-likelihood of the reference answers given the prompt,
  over the completion tokens the trainer trains on (the reference and the chat template's end-of-turn), and its
  exponential.
* Mean length (words and new tokens), distinct-2 (distinct word bigrams / all word bigrams over all outputs).
* Loops: the share of outputs in which some word 4-gram occurs 3 or more times (:func:`has_loop`): a generation
  caught in a cycle repeats every 4-gram of the cycle, plain prose rarely says the same four words three times.
* Stopped: the share of outputs that ended with an end token before the new-token limit; beside it, the share of
  references longer than the limit (a model that writes as long as the references cannot stop on those) and the
  stop share among the titles whose reference fits.

``run_eval`` writes ``report.json`` (settings, metrics of each model, every generation), ``report.md`` (a table, the
plot, 10 side-by-side examples) and ``report.png`` (the metric pairs).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, need
from .outputs import append_rows, claim_dir, staged_open, write_staged

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, the unit of distinct-n and loop detection."""
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------------------------------------------------
# Pure metric functions


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (rouge-score, Porter stemming)."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)
        for key in totals:
            totals[key] += scores[key].fmeasure
    return {key: value / len(predictions) for key, value in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0..100), one reference a prediction."""
    import sacrebleu

    _check_pairs(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus chrF (0..100)."""
    import sacrebleu

    _check_pairs(predictions, references)
    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams over all n-grams of all texts (Li et al., 2016); 0 when there are none."""
    total, seen = 0, set()
    for text in texts:
        tokens = words(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def has_loop(text: str, n: int = 4, min_repeats: int = 3) -> bool:
    """Whether some word n-gram occurs ``min_repeats`` times or more: the text went round a cycle."""
    tokens = words(text)
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return bool(counts) and max(counts.values()) >= min_repeats


def share(flags: Sequence[bool]) -> float:
    return sum(bool(flag) for flag in flags) / len(flags) if flags else 0.0


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Every metric that needs only the texts."""
    scores = rouge(predictions, references)
    return {
        "rouge1": scores["rouge1"],
        "rouge2": scores["rouge2"],
        "rougeL": scores["rougeL"],
        "bleu": bleu(predictions, references),
        "chrf": chrf(predictions, references),
        "mean_words": mean([len(words(p)) for p in predictions]),
        "distinct2": distinct_n(predictions, 2),
        "loop_share": share([has_loop(p) for p in predictions]),
    }


# --------------------------------------------------------------------------------------------------------------------
# Loss on references


def reference_loss(loaded, pairs: Sequence[tuple], instruction: str, batch_size: int = 8,
                   max_length: int = 1024) -> dict[str, float]:
    """Mean token NLL of each reference description given its prompt (a title, or an Ask), and its perplexity.

    The example is rendered as the trainer renders it: the chat template over the prompt and completion messages;
    the loss covers the tokens after the prompt (the description and the template's end-of-turn).
    """
    import torch

    from .generate import as_ask
    from .prompts import completion_messages, prompt_messages, render_prompt

    model, tokenizer = loaded.model, loaded.tokenizer
    examples = []
    for item, description in pairs:
        ask = as_ask(item)
        messages = prompt_messages(ask.title, ask.question or instruction, ask.context)
        prompt = render_prompt(tokenizer, ask.title, ask.question or instruction, ask.context)
        full = tokenizer.apply_chat_template(messages + completion_messages(description), tokenize=False)
        if not full.startswith(prompt):  # a template that renders the last turn differently: prompt + text + EOS
            full = prompt + description.strip() + (tokenizer.eos_token or "")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        labels = [-100] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids) :]
        if any(label != -100 for label in labels):
            examples.append((full_ids, labels))
    examples.sort(key=lambda example: len(example[0]))  # batches of similar lengths: little padding
    total_nll, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in chunk], device=loaded.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk], device=loaded.device)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk], device=loaded.device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    loss = total_nll / total_tokens if total_tokens else float("nan")
    return {"eval_loss": loss, "perplexity": math.exp(loss) if total_tokens and loss < 700 else float("inf"),
            "reference_tokens": total_tokens}


# --------------------------------------------------------------------------------------------------------------------
# One model, then the report


def sample_records(records: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` records drawn without replacement with ``seed`` (all of them, in a seeded order, when n >= len)."""
    usable = [r for r in records if (r.get("title") or "").strip() and (r.get("description") or "").strip()]
    rng = random.Random(seed)
    picked = rng.sample(range(len(usable)), min(n, len(usable)))
    return [usable[i] for i in picked]


QUESTION_MODES = ("fixed", "seen", "unseen")


def asks_for(records: list[dict], phrasing: str, seed: int) -> list:
    """The prompt of each record: the settings' instruction ("fixed"), or a question template drawn per record by
    uid and seed from the training templates ("seen") or from the held-out ones ("unseen")."""
    from .generate import Ask
    from .prompts import QUESTION_SETS, choose_question

    if phrasing == "fixed":
        return [Ask(r["title"]) for r in records]
    templates = QUESTION_SETS[phrasing]
    return [Ask(r["title"], question=choose_question(r.get("uid") or r["title"], seed, templates)) for r in records]


def generate_kept(loaded, asks: list, settings, batch_size: int = 8, progress=None, keep: Path | None = None) -> list:
    """generate_batch, batch by batch, each finished batch appended to the JSONL file `keep` (when given) and the
    answers already there reused: an interrupted eval goes on where it stopped."""
    from .generate import Generation, generate_batch

    if keep is None:
        return generate_batch(loaded, asks, settings, batch_size=batch_size, progress=progress)
    fields = ("title", "description", "tokens", "seconds", "stopped")
    with append_rows(keep) as (rows, out):
        generations = [Generation(**{k: row[k] for k in fields}) for row in rows]
        for start in range(len(generations), len(asks), batch_size):
            for generation in generate_batch(loaded, asks[start : start + batch_size], settings, batch_size):
                generations.append(generation)
                out.write(json.dumps(generation.as_record(), ensure_ascii=False) + "\n")
            out.flush()
            if progress is not None:
                progress(len(generations), len(asks))
    return generations


def evaluate_model(loaded, records: list[dict], settings, batch_size: int = 8, progress=None,
                   questions: str = "fixed", seed: int = 3407, keep: Path | None = None) -> dict:
    """Generations and metrics of one loaded model on the records (title, description).

    ``questions="unseen"`` scores the seen phrasings in full and adds ROUGE and the other text metrics of a second
    pass with held-out phrasings, under ``"unseen"``. ``keep``: a JSONL file that keeps finished answers of an
    interrupted run (generate_kept; the unseen pass uses ``keep`` with ``.unseen`` before its suffix).
    """
    asks = asks_for(records, "fixed" if questions == "fixed" else "seen", seed)
    references = [r["description"] for r in records]
    generations = generate_kept(loaded, asks, settings, batch_size, progress, keep)
    predictions = [g.description for g in generations]
    metrics = text_metrics(predictions, references)
    metrics["mean_tokens"] = mean([g.tokens for g in generations])
    metrics["stopped_share"] = share([g.stopped for g in generations])
    metrics["seconds_per_title"] = mean([g.seconds for g in generations])
    # How far the token limit itself caps the stop share: references that would not fit in max_new_tokens.
    tokenizer = loaded.tokenizer
    fits = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) < settings.max_new_tokens for r in references]
    metrics["reference_over_limit_share"] = 1 - share(fits)
    fitting = [g.stopped for g, fit in zip(generations, fits) if fit]
    metrics["stopped_share_short_refs"] = share(fitting) if fitting else float("nan")
    metrics.update(reference_loss(loaded, list(zip(asks, references)), settings.instruction, batch_size))
    result = {"metrics": metrics, "generations": _records(asks, generations)}
    if questions == "unseen":
        unseen_asks = asks_for(records, "unseen", seed)
        unseen = generate_kept(loaded, unseen_asks, settings, batch_size, progress,
                               keep and keep.with_suffix(".unseen" + keep.suffix))
        result["unseen"] = {
            "metrics": text_metrics([g.description for g in unseen], references),
            "generations": _records(unseen_asks, unseen),
        }
    return result


def _records(asks: list, generations: list) -> list[dict]:
    """Each generation as JSON, with the question it answered (None: the instruction)."""
    return [g.as_record() | {"question": a.question} for a, g in zip(asks, generations)]


METRIC_LABELS = [
    ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("chrf", "chrF"),
    ("eval_loss", "Eval loss (references)"), ("perplexity", "Perplexity (references)"),
    ("mean_words", "Mean length (words)"), ("mean_tokens", "Mean length (new tokens)"), ("distinct2", "Distinct-2"),
    ("loop_share", "Outputs that loop"), ("stopped_share", "Outputs that stopped by themselves"),
    ("reference_over_limit_share", "References longer than the token limit"),
    ("stopped_share_short_refs", "Stopped, among titles whose reference fits the limit"),
    ("seconds_per_title", "Seconds a title (batched)"),
]
# Plotted on one 0..1 axis: BLEU and chrF divided by 100.
PLOTTED = [("rouge1", "ROUGE-1", 1), ("rouge2", "ROUGE-2", 1), ("rougeL", "ROUGE-L", 1), ("bleu", "BLEU/100", 100),
           ("chrf", "chrF/100", 100), ("distinct2", "distinct-2", 1), ("stopped_share", "stopped", 1),
           ("loop_share", "loops", 1)]


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


def write_report(out_dir: Path, run: EvalRun, settings, records: list[dict], results: dict[str, dict],
                 examples: int = 10) -> dict:
    """report.json, report.md and report.png from the results of each label ("baseline", "model")."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [label for label in ("baseline", "model") if label in results]
    report = {
        "settings": {**run.__dict__, "n_scored": len(records), **settings.as_dict()},
        "models": {label: {"name": results[label]["name"], "metrics": results[label]["metrics"]} for label in labels},
    }
    if len(labels) == 2:
        base, tuned = results["baseline"]["metrics"], results["model"]["metrics"]
        report["delta"] = {key: tuned[key] - base[key] for key in tuned if isinstance(tuned[key], (int, float))}
        report["relative"] = {key: (tuned[key] - base[key]) / base[key] for key in tuned
                              if isinstance(tuned[key], (int, float)) and base[key] not in (0, None)
                              and math.isfinite(base[key]) and math.isfinite(tuned[key])}
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
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return str(value)
    if key.endswith(("_share", "_share_short_refs")):
        return f"{100 * value:.1f}%"
    if key in ("bleu", "chrf", "mean_words", "mean_tokens", "perplexity"):
        return f"{value:.2f}"
    return f"{value:.4f}"


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
    from .prompts import QUESTION_TEMPLATES, UNSEEN_QUESTION_TEMPLATES

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


def render_markdown(report: dict, labels: list[str]) -> str:
    s = report["settings"]
    names = {label: report["models"][label]["name"] for label in labels}
    lines = ["# tc3-eval report", ""]
    lines.append(f"{s['n_scored']} titles of the `{s['split']}` split of `{s['data']}` (seed {s['seed']}); "
                 + (f"instruction `{s['instruction']}`; " if s.get("questions", "fixed") == "fixed" else
                    f"questions `{s['questions']}` (per-title question templates); ")
                 + f"{'sampling' if s['do_sample'] else 'greedy'}, "
                 f"repetition penalty {s['repetition_penalty']}, at most {s['max_new_tokens']} new tokens, "
                 f"batch {s['batch_size']}.")
    lines.append("")
    for label in labels:
        lines.append(f"- {label}: `{names[label]}`")
    lines.append("")
    header = "| metric | " + " | ".join(labels) + (" | change |" if len(labels) == 2 else " |")
    lines += [header, "|" + "---|" * (len(labels) + 1 + (len(labels) == 2))]
    for key, title in METRIC_LABELS:
        values = [report["models"][label]["metrics"].get(key) for label in labels]
        row = f"| {title} | " + " | ".join(_fmt(key, v) for v in values)
        if len(labels) == 2:
            rel = report.get("relative", {}).get(key)
            delta = report["delta"].get(key)
            change = "" if delta is None else (f"{delta:+.4g}" + (f" ({100 * rel:+.0f}%)" if rel is not None else ""))
            row += f" | {change}"
        lines.append(row + " |")
    lines += ["", "ROUGE: rouge-score F-measure with stemming, mean over titles (0..1). BLEU, chrF: sacrebleu corpus "
              "scores (0..100). Loss/perplexity: mean token NLL of the reference descriptions given the prompt. "
              "Loops: some word 4-gram occurs 3+ times. Stopped: ended with an end token before the limit. "
              "References longer than the limit (in the model's tokens) bound the stop share of a model that "
              "writes as long as they do.",
              ""]
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(metrics)
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        values = [metrics[label].get(key, 0.0) / scale for key, _, scale in PLOTTED]
        positions = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(PLOTTED))]
        bars = ax.bar(positions, values, width, label=f"{label}: {Path(names[label]).name or names[label]}")
        for bar, value in zip(bars, values):
            ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
    ax.set_xticks(range(len(PLOTTED)), [title for _, title, _ in PLOTTED])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score (0..1)")
    ax.set_title("tc3-eval: baseline vs fine-tuned" if len(labels) == 2 else "tc3-eval")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with staged_open(path, binary=True) as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def run_eval(model: str, data: str, out_dir: str | Path, baseline: str | None = None, base: str | None = None,
             split: str = "validation", n: int = 500, seed: int = 3407, settings=None, batch_size: int = 8,
             device: str | None = None, questions: str = "fixed", log=print) -> dict:
    """Load each model in turn (baseline first), generate for the same n titles, score, write the report.

    `out_dir` is tc3-eval's own folder (tc3.outputs.claim_dir): its cache/ keeps each model's results, and the
    answers of an interrupted run, for a rerun with the same arguments. UserError for every mistake, found before
    any model loads."""
    from .generate import GenerationSettings, check_model, load_model, read_prep_split

    settings = settings or GenerationSettings()
    if questions not in QUESTION_MODES:
        raise UserError(f"questions must be one of {', '.join(QUESTION_MODES)}, not {questions!r}")
    # Every check that can fail is made before the first answer is generated.
    need("eval", "rouge_score", "sacrebleu", "matplotlib")
    records = sample_records(read_prep_split(data, split), n, seed)
    if not records:
        raise UserError(f"the {split} split of '{data}' has no record with both a title and a description")
    check_model(model, base=base)
    if baseline is not None:
        check_model(baseline)
    out_dir = claim_dir(out_dir, "tc3-eval")
    run = EvalRun(model=model, baseline=baseline, data=str(data), split=split, n=n, seed=seed,
                  batch_size=batch_size, base=base, questions=questions)
    results: dict[str, dict] = {}
    cache_dir = out_dir / "cache"
    cache_dir.mkdir(exist_ok=True)
    for label, name, its_base in (("baseline", baseline, None), ("model", model, base)):
        if name is None:
            continue
        key = _cache_key(name, its_base, records, settings, batch_size, questions)
        cached = cache_dir / f"{key}.json"
        if cached.is_file():
            log(f"[{label}] {name}: reusing {cached} (same model, titles and settings)")
            result = json.loads(cached.read_text(encoding="utf-8"))
        else:
            log(f"[{label}] loading {name}")
            loaded = load_model(name, base=its_base, device=device)
            keep = cache_dir / f"{key}.partial.jsonl"
            if keep.is_file():
                log(f"[{label}] going on from the answers kept in {keep}")
            log(f"[{label}] generating for {len(records)} titles")
            result = evaluate_model(loaded, records, settings, batch_size=batch_size, questions=questions, seed=seed,
                                    progress=lambda done, total, label=label: log(f"[{label}] {done}/{total}"),
                                    keep=keep)
            loaded.close()
            write_staged(cached, json.dumps(result, ensure_ascii=False))
            for kept in (keep, keep.with_suffix(".unseen.jsonl")):
                kept.unlink(missing_ok=True)
        result["name"] = name
        results[label] = result
    return write_report(out_dir, run, settings, records, results)


CACHE_VERSION = 2  # bump when generation or scoring changes: 2 = end tokens exempt from the repetition penalty


def _cache_key(name: str, base: str | None, records: list[dict], settings, batch_size: int,
               questions: str = "fixed") -> str:
    """Results are reused only for the same model files, titles and settings: a retrained model misses the cache."""
    import hashlib

    path = Path(name)
    stamps = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.glob("*")
                    if p.is_file()) if path.is_dir() else []
    blob = json.dumps([CACHE_VERSION, str(path.resolve()) if path.exists() else name, base, stamps,
                       [r["title"] for r in records], settings.as_dict(), batch_size, questions], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
