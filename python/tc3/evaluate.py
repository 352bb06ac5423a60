"""Honest before/after numbers: generate for held-out titles with a fine-tuned model and a baseline, each asked the
way that suits it (the model as trained, the baseline in the references' language, and beside it the model's way),
under one setting, and score them.

Metrics (all offline):

* ROUGE-1/2/L: ``rouge-score``, F-measure, averaged over examples (0..1), with :class:`RougeTokenizer` (words of
  any script; Porter stemming of ASCII words as rouge-score does), with a bootstrap interval on ROUGE-L.
* BLEU and chrF: ``sacrebleu`` corpus scores with default settings (0..100).
* Evaluation loss / perplexity: mean token negative log-likelihood of the reference answers given the prompt,
  over the completion tokens the trainer trains on (the reference and the chat template's end-of-turn), and its
  exponential.
* Mean length (words and new tokens), distinct-2 (distinct word bigrams / all word bigrams over all outputs).
* Loops: the share of outputs in which some word 4-gram occurs 3 or more times (:func:`has_loop`): a generation
  caught in a cycle repeats every 4-gram of the cycle, plain prose rarely says the same four words three times.
* Stopped: the share of outputs that ended with an end token before the new-token limit; beside it, the share of
  references longer than the limit (a model that writes as long as the references cannot stop on those) and the
  stop share among the titles whose reference fits; with a bootstrap interval.
* Faithfulness of a grounded answer (:func:`unsupported_share`, used by ``benches/grounded_rouge.py``).

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
from .outputs import append_rows, claim_dir, fingerprint, staged_open, write_staged

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, the unit of distinct-n and loop detection."""
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------------------------------------------------
# Pure metric functions


# rouge-score's own tokenizer keeps only [a-z0-9]: "descrição" becomes "descri", "o", and Japanese text nothing at
# all, so identical non-English texts scored 0. Runs of letters and digits of any script, CJK ideographs and kana
# one a token (those scripts put no spaces between words); Porter stemming for ASCII words only, as rouge-score
# stems (words longer than 3 characters), so English scores are unchanged.
_ROUGE_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


class RougeTokenizer:
    """rouge-score's Tokenizer interface, Unicode-aware (see above)."""

    def __init__(self):
        from rouge_score.tokenizers import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t
                for t in _ROUGE_TOKEN.findall(text.lower())]


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """ROUGE-1/2/L F-measures of each pair (rouge-score with :class:`RougeTokenizer`), one list a metric."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=RougeTokenizer())
    per_pair = [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references)]
    return {key: [scores[key].fmeasure for scores in per_pair] for key in ("rouge1", "rouge2", "rougeL")}


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures over the pairs (0..1)."""
    return {key: mean(values) for key, values in rouge_scores(predictions, references).items()}


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


def unsupported_share(answer: str, sources: Sequence[str]) -> float | None:
    """Faithfulness of a grounded answer: the share of its content words and numbers (distinct, lower-cased,
    `tc3.index.words` minus its stopwords) found in none of ``sources`` (the record and the question).
    0 = every word comes from them; None when the answer has no content word."""
    from .index import STOPWORDS, words

    said = [w for w in dict.fromkeys(words(answer)) if w not in STOPWORDS]
    if not said:
        return None
    known = {w for source in sources for w in words(source)}
    return sum(w not in known for w in said) / len(said)


def bootstrap_ci(values: Sequence[float], seed: int = 0, resamples: int = 1000,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (titles drawn with replacement, seeded): how far the
    mean could move with another sample of the same size. None for fewer than 2 values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]


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

    The example is encoded as the trainer encodes it (`tc3.prompts.encode_example`): the loss covers the tokens
    after the prompt (the description and the template's end of turn); a reference longer than `max_length` is
    trimmed at a word boundary with its turn closed, never cut off its end token.
    """
    import torch

    from .generate import as_ask
    from .prompts import encode_example, prompt_messages

    model, tokenizer = loaded.model, loaded.tokenizer
    examples = []
    for item, description in pairs:
        ask = as_ask(item)
        messages = prompt_messages(ask.title, ask.question or instruction, ask.context)
        prompt_ids, completion_ids, _ = encode_example(tokenizer, messages, description, max_length)
        if completion_ids:
            examples.append((prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids))
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


def usable_records(records: list[dict]) -> list[dict]:
    """The records that can be scored: a title and a description."""
    return [r for r in records if (r.get("title") or "").strip() and (r.get("description") or "").strip()]


def sample_records(records: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` records drawn without replacement with ``seed`` (all of them, in a seeded order, when n >= len)."""
    usable = usable_records(records)
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
                   questions: str = "fixed", seed: int = 3407, keep: Path | None = None,
                   asks: list | None = None) -> dict:
    """Generations and metrics of one loaded model on the records (title, description).

    ``asks``: the prompt of each record, when the caller builds them (tc3.eval.modes); default `asks_for`.

    ``questions="unseen"`` scores the seen phrasings in full and adds ROUGE and the other text metrics of a second
    pass with held-out phrasings, under ``"unseen"``. ``keep``: a JSONL file that keeps finished answers of an
    interrupted run (generate_kept; the unseen pass uses ``keep`` with ``.unseen`` before its suffix).
    """
    asks = asks or asks_for(records, "fixed" if questions == "fixed" else "seen", seed)
    references = [r["description"] for r in records]
    generations = generate_kept(loaded, asks, settings, batch_size, progress, keep)
    predictions = [g.description for g in generations]
    metrics = text_metrics(predictions, references)
    metrics["mean_tokens"] = mean([g.tokens for g in generations])
    metrics["stopped_share"] = share([g.stopped for g in generations])
    metrics["seconds_per_title"] = mean([g.seconds for g in generations])
    # How far the token limit itself caps the stop share: references that would not fit in max_new_tokens.
    from .prompts import text_ids

    tokenizer = loaded.tokenizer
    fits = [len(text_ids(tokenizer, r)) < settings.max_new_tokens for r in references]
    metrics["reference_over_limit_share"] = 1 - share(fits)
    fitting = [g.stopped for g, fit in zip(generations, fits) if fit]
    metrics["stopped_share_short_refs"] = share(fitting) if fitting else float("nan")
    metrics.update(reference_loss(loaded, list(zip(asks, references)), settings.instruction, batch_size))
    per_title = rouge_scores(predictions, references)["rougeL"]
    metrics["rougeL_ci"] = bootstrap_ci(per_title, seed)
    metrics["stopped_share_ci"] = bootstrap_ci([float(g.stopped) for g in generations], seed)
    records_out = [record | {"rougeL": round(score, 6)}
                   for record, score in zip(_records(asks, generations), per_title)]
    result = {"metrics": metrics, "generations": records_out}
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
    from .generate import settings_used

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


def _asking(instruction: str) -> str:
    from .prompts import INSTRUCTIONS

    return f"`{instruction}` (\"{INSTRUCTIONS[instruction]}\")" if instruction in INSTRUCTIONS else f'"{instruction}"'


def render_markdown(report: dict, labels: list[str]) -> str:
    s = report["settings"]
    names = {label: report["models"][label]["name"] for label in labels}
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


def trained_instruction(model: str) -> str:
    """How a tc3 output was asked in training: the ``instruction`` of its tc3_config.yaml under ``questions:
    fixed``; "en" (one of the trained templates, in the references' language) under varied questions or when the
    model has no tc3 config (a model tc3 did not train)."""
    from .config import load_config

    saved = Path(model) / "tc3_config.yaml"
    if not saved.is_file():
        return "en"
    config = load_config(saved)
    return config.instruction if config.questions == "fixed" else "en"


def run_eval(model: str, data: str, out_dir: str | Path, baseline: str | None = None, base: str | None = None,
             split: str = "validation", n: int = 500, seed: int = 3407, settings=None, batch_size: int = 8,
             device: str | None = None, questions: str = "fixed", model_instruction: str | None = None,
             baseline_instruction: str = "en", log=print, progress=None) -> dict:
    """Load each model in turn (baselines first), generate for the same n titles, score, write the report.

    Each model is asked the way that suits it: the model with ``model_instruction`` (default: as it was trained,
    :func:`trained_instruction`), the baseline with ``baseline_instruction`` (default "en", the references'
    language) and, when the two differ, once more with the model's instruction (``baseline_as_model``), so both
    askings stand side by side. ``settings.instruction`` is not used: each run sets its own.

    `out_dir` is tc3-eval's own folder (tc3.outputs.claim_dir): its cache/ keeps each model's results, and the
    answers of an interrupted run, for a rerun with the same arguments. UserError for every mistake, found before
    any model loads. `progress(label, done, total)` follows each model's generation, batch by batch (default: a
    `log` line).
    """
    import dataclasses

    from .generate import GenerationSettings, load_model, read_prep_split
    from .models import check_model, default_device

    settings = settings or GenerationSettings()
    if progress is None:
        def progress(label: str, done: int, total: int) -> None:
            log(f"[{label}] {done}/{total}")
    if questions not in QUESTION_MODES:
        raise UserError(f"questions must be one of {', '.join(QUESTION_MODES)}, not {questions!r}")
    # Every check that can fail is made before the first answer is generated.
    need("eval", "rouge_score", "sacrebleu", "matplotlib")
    split_records = read_prep_split(data, split)
    records = sample_records(split_records, n, seed)
    if not records:
        raise UserError(f"the {split} split of '{data}' has no record with both a title and a description")
    if n > len(records):
        log(f"--n {n} is more than the {split} split holds: {len(records)} records with a title and a description "
            f"are scored")
    check_model(model, base=base)
    if baseline is not None:
        check_model(baseline)
    device = default_device(device)
    out_dir = claim_dir(out_dir, "tc3-eval")
    model_instruction = model_instruction or trained_instruction(model)
    askings = {"model": model_instruction}
    if baseline is not None:
        askings["baseline"] = baseline_instruction
        if questions == "fixed" and model_instruction != baseline_instruction:
            askings["baseline_as_model"] = model_instruction
    run = EvalRun(model=model, baseline=baseline, data=str(data), split=split, n=n, seed=seed,
                  batch_size=batch_size, base=base, questions=questions, n_usable=len(usable_records(split_records)),
                  askings=askings)
    results: dict[str, dict] = {}
    cache_dir = out_dir / "cache"
    cache_dir.mkdir(exist_ok=True)
    for label in LABELS:
        if label not in askings:
            continue
        name, its_base = (model, base) if label == "model" else (baseline, None)
        asked = dataclasses.replace(settings, instruction=askings[label])
        key = _cache_key(name, its_base, records, asked, batch_size, questions, device)
        cached = cache_dir / f"{key}.json"
        if cached.is_file():
            log(f"[{label}] {name}: reusing {cached} (same model, references and settings)")
            result = json.loads(cached.read_text(encoding="utf-8"))
        else:
            log(f"[{label}] loading {name}")
            loaded = load_model(name, base=its_base, device=device)
            keep = cache_dir / f"{key}.partial.jsonl"
            if keep.is_file():
                log(f"[{label}] going on from the answers kept in {keep}")
            log(f"[{label}] generating for {len(records)} titles, asked with {askings[label]!r}")
            result = evaluate_model(loaded, records, asked, batch_size=batch_size, questions=questions, seed=seed,
                                    progress=lambda done, total, label=label: progress(label, done, total),
                                    keep=keep)
            loaded.close()
            write_staged(cached, json.dumps(_finite(result), ensure_ascii=False))
            for kept in (keep, keep.with_suffix(".unseen.jsonl")):
                kept.unlink(missing_ok=True)
        result["name"] = name
        results[label] = result
    return write_report(out_dir, run, settings, records, results)


CACHE_VERSION = 3  # bump when generation or scoring changes: 3 = penalty on generated tokens, Unicode ROUGE, CIs


def _cache_key(name: str, base: str | None, records: list[dict], settings, batch_size: int,
               questions: str = "fixed", device: str = "cpu") -> str:
    """Results are reused only for the same weights (the model's files or Hub revision, and an adapter's base's),
    device, titles, references and settings, and the same tc3 code and prompts (`tc3.cache_keys`): a retrained
    model, another base, an edited question template or an upgraded tc3 misses the cache."""
    from .cache_keys import GENERATION_MODULES, code_and_prompts
    from .models import fingerprint as model_fingerprint

    return fingerprint(CACHE_VERSION, *code_and_prompts(*GENERATION_MODULES, "tc3.evaluate"),
                       model_fingerprint(name, base), device, [(r["title"], r["description"]) for r in records],
                       settings.as_dict(), batch_size, questions)
