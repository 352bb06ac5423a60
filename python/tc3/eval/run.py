"""A tc3-eval run on held-out titles: the models resolved and checked before any loads, each asked the way that suits
it, its answers generated (kept as they come, so an interrupted run goes on) and scored, results cached by the
model's weights and every setting, then the report (tc3.eval.report)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from tc3.errors import UserError, need
from tc3.eval.metrics import bootstrap_ci, mean, reference_loss, rouge_scores, share, text_metrics
from tc3.eval.report import LABELS, EvalRun, _finite, write_report
from tc3.layout import PrepDir
from tc3.outputs import append_rows, claim_dir, fingerprint, write_staged

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
    from tc3.generate import Ask
    from tc3.prompts import QUESTION_SETS, choose_question

    if phrasing == "fixed":
        return [Ask(r["title"]) for r in records]
    templates = QUESTION_SETS[phrasing]
    return [Ask(r["title"], question=choose_question(r.get("uid") or r["title"], seed, templates)) for r in records]


def generate_kept(loaded, asks: list, settings, batch_size: int = 8, progress=None, keep: Path | None = None) -> list:
    """generate_batch, batch by batch, each finished batch appended to the JSONL file `keep` (when given) and the
    answers already there reused: an interrupted eval goes on where it stopped."""
    from tc3.generate import Generation, generate_batch

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
    from tc3.prompts import text_ids

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


def trained_instruction(model) -> str:
    """How a tc3 output was asked in training (`model`: a tc3.model_ref.ResolvedModel): the ``instruction`` of its
    saved config under ``questions: fixed``; "en" (one of the trained templates, in the references' language) under
    varied questions or when the model has no tc3 config (a model tc3 did not train)."""
    config = model.config
    if config is None:
        return "en"
    return config.instruction if config.questions == "fixed" else "en"


def eval_records(data: str, split: str, n: int, seed: int, log) -> tuple[list[dict], int]:
    """(the n scored records of `split`, how many of the split are usable). UserError when none is."""
    split_records = PrepDir(data).read_split(split)
    records = sample_records(split_records, n, seed)
    if not records:
        raise UserError(f"the {split} split of '{data}' has no record with both a title and a description")
    if n > len(records):
        log(f"--n {n} is more than the {split} split holds: {len(records)} records with a title and a description "
            f"are scored")
    return records, len(usable_records(split_records))


def askings_of(model_instruction: str, baseline, baseline_instruction: str, questions: str) -> dict:
    """label -> the instruction it is asked with (LABELS): the baseline also the model's way, when that differs."""
    askings = {"model": model_instruction}
    if baseline is not None:
        askings["baseline"] = baseline_instruction
        if questions == "fixed" and model_instruction != baseline_instruction:
            askings["baseline_as_model"] = model_instruction
    return askings


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
    from tc3.generate import GenerationSettings
    from tc3.model_ref import resolve_model
    from tc3.runtime import default_device

    settings = settings or GenerationSettings()
    if progress is None:
        def progress(label: str, done: int, total: int) -> None:
            log(f"[{label}] {done}/{total}")
    if questions not in QUESTION_MODES:
        raise UserError(f"questions must be one of {', '.join(QUESTION_MODES)}, not {questions!r}")
    # Every check that can fail is made before the first answer is generated.
    need("eval", "rouge_score", "sacrebleu", "matplotlib")
    records, n_usable = eval_records(data, split, n, seed, log)
    models = {"model": resolve_model(model, base)}
    if baseline is not None:
        tuned = models["model"]
        models["baseline"] = models["baseline_as_model"] = resolve_model(baseline, known=(tuned.run, tuned.weights))
    device = default_device(device)
    out_dir = claim_dir(out_dir, "tc3-eval")
    askings = askings_of(model_instruction or trained_instruction(models["model"]), baseline, baseline_instruction,
                         questions)
    run = EvalRun(model=model, baseline=baseline, data=str(data), split=split, n=n, seed=seed,
                  batch_size=batch_size, base=base, questions=questions, n_usable=n_usable, askings=askings)
    results = {}
    for label in (label for label in LABELS if label in askings):
        asked = dataclasses.replace(settings, instruction=askings[label])
        results[label] = answer_and_score(label, models[label], records, asked, batch_size, questions, seed, device,
                                          out_dir / "cache", log, progress)
    return write_report(out_dir, run, settings, records, results)


def answer_and_score(label: str, model, records: list[dict], settings, batch_size: int, questions: str, seed: int,
                     device: str, cache_dir: Path, log, progress) -> dict:
    """One model's evaluate_model result (`model`: a ResolvedModel), from the cache when the same model, device,
    records and settings were scored before; else generated (kept as it comes) and cached."""
    from tc3.models import load_model

    cache_dir.mkdir(exist_ok=True)
    key = _cache_key(model, records, settings, batch_size, questions, device)
    cached = cache_dir / f"{key}.json"
    if cached.is_file():
        log(f"[{label}] {model.name}: reusing {cached} (same model, references and settings)")
        result = json.loads(cached.read_text(encoding="utf-8"))
    else:
        log(f"[{label}] loading {model.name}")
        loaded = load_model(model, device=device)
        keep = cache_dir / f"{key}.partial.jsonl"
        if keep.is_file():
            log(f"[{label}] going on from the answers kept in {keep}")
        log(f"[{label}] generating for {len(records)} titles, asked with {settings.instruction!r}")
        result = evaluate_model(loaded, records, settings, batch_size=batch_size, questions=questions, seed=seed,
                                progress=lambda done, total: progress(label, done, total), keep=keep)
        loaded.close()
        write_staged(cached, json.dumps(_finite(result), ensure_ascii=False))
        for kept in (keep, keep.with_suffix(".unseen.jsonl")):
            kept.unlink(missing_ok=True)
    result["name"] = model.name
    return result


CACHE_VERSION = 3  # bump when generation or scoring changes: 3 = penalty on generated tokens, Unicode ROUGE, CIs
EVAL_MODULES = ("tc3.eval.metrics", "tc3.eval.run")  # the code whose change makes cached results stale


def _cache_key(model, records: list[dict], settings, batch_size: int, questions="fixed", device: str = "cpu") -> str:
    """Results are reused only for the same weights (`model.fingerprint`: the model's files or Hub revision, and an
    adapter's base's), device, titles, references and settings, and the same tc3 code and prompts
    (`tc3.cache_keys`): a retrained model, another base, an edited question template or an upgraded tc3 misses the
    cache."""
    from tc3.cache_keys import GENERATION_MODULES, code_and_prompts

    return fingerprint(CACHE_VERSION, *code_and_prompts(*GENERATION_MODULES, *EVAL_MODULES),
                       model.fingerprint, device, [(r["title"], r["description"]) for r in records],
                       settings.as_dict(), batch_size, questions)
