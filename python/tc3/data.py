"""A `tc3-prep` output dir as Hugging Face datasets, sampled and shaped as conversational prompt/completion pairs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tc3.cache_keys import code_digest, prompt_values
from tc3.config import ConfigError
from tc3.layout import PrepDir
from tc3.prompts import choose_question, completion_messages, encode_example, prompt_messages, seeded_unit

COLUMNS = ("uid", "title", "description")

RENDERING_MODULES = ("tc3.prompts", "tc3.data")  # the code that turns rows into examples


def cache_dir_for(prep_dir: Path) -> str:
    """A datasets cache dir for exactly these Parquet files. datasets keys the cache of a local dir by the dir's
    name alone, so a second `prep` dir, or one made again, would silently load the Arrow cache of the first."""
    from datasets import config

    files = PrepDir(prep_dir).parquet_files()
    identity = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(repr(identity).encode()).hexdigest()[:16]
    return str(Path(config.HF_DATASETS_CACHE) / "tc3-prep" / key)


def rendering_fingerprint(dataset, step: str, **inputs) -> str:
    """The datasets cache key of one rendering `step` of `dataset`'s rows: their fingerprint, tc3's version and
    rendering source, the prompt values of `tc3.prompts` (`tc3.cache_keys`) and `inputs` (config values, the
    tokenizer). datasets' own key hashes imported functions by name alone (datasets#3297): an edited template, or an
    upgrade of tc3, would load the examples of the old prompts from the cache. 16 hex digits, as datasets' own."""
    from datasets.fingerprint import Hasher

    key = [dataset._fingerprint, step, code_digest(*RENDERING_MODULES), prompt_values(), sorted(inputs.items())]
    return Hasher.hash(key)


def load_splits(prep_dir: str | Path):
    """The train and validation splits of a `tc3-prep` output dir (its dataset card names the Parquet files)."""
    from datasets import load_dataset

    prep_dir = PrepDir(prep_dir).check().path
    check_rows(prep_dir)
    splits = load_dataset(str(prep_dir), cache_dir=cache_dir_for(prep_dir))
    for split in ("train", "validation"):
        if split not in splits:
            raise ConfigError(f"{prep_dir} has no {split} split")
        missing = set(COLUMNS) - set(splits[split].column_names)
        if missing:
            raise ConfigError(f"{prep_dir} {split} split lacks column(s) {', '.join(sorted(missing))}")
    return splits


def check_rows(prep_dir: Path) -> None:
    """A ConfigError naming the split of `prep_dir` that has no row (its Parquet footers are read, not its rows):
    training needs both, and datasets would fail later with a traceback."""
    import pyarrow.parquet as pq

    for split, hint in (("train", "tc3-prep kept no record for it"),
                        ("validation", "its --val-fraction drew no record: too small a share, or too few "
                                       "records; run tc3-prep with a larger --val-fraction")):
        files = PrepDir(prep_dir).split_files(split)
        if files and sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 0:
            raise ConfigError(f"the {split} split of {prep_dir} is empty ({hint})")


def sample(dataset, n: int | None, seed: int):
    """A seeded random sample of n rows (all rows, shuffled, when n is None or larger than the split)."""
    shuffled = dataset.shuffle(seed=seed)
    return shuffled if n is None or n >= len(shuffled) else shuffled.select(range(n))


def to_prompt_completion(dataset, config, num_proc: int | None = None):
    """Rows {prompt, completion} in TRL's conversational format, rendered later by the tokenizer's template.

    The user turn is a question template drawn per example (or the fixed instruction), and a seeded share of
    examples, and every row of `grounded_kinds`, carries the product's own record as context (`is_grounded`):
    keyed by uid and seed, so any process, order or num_proc gives the same examples.
    """
    questions, instruction, seed = config.questions, config.instruction, config.seed
    context_fraction, grounded_kinds = config.context_fraction, config.grounded_kinds

    def convert(row):
        question = choose_question(row["uid"], seed) if questions == "varied" else instruction
        grounded = is_grounded(row, seed, context_fraction, grounded_kinds)
        return {
            "prompt": prompt_messages(row["title"], question, row if grounded else None),
            "completion": completion_messages(row["description"]),
        }

    fingerprint = rendering_fingerprint(dataset, "prompt_completion", questions=questions, instruction=instruction,
                                        seed=seed, context_fraction=context_fraction, grounded_kinds=grounded_kinds)
    return dataset.map(convert, remove_columns=dataset.column_names, num_proc=num_proc, new_fingerprint=fingerprint)


def is_grounded(row: dict, seed: int, context_fraction: float, grounded_kinds: list[str] | None) -> bool:
    """Whether a training example of `row` carries the row's own record as context: always for a row of
    `grounded_kinds`, else for a seeded `context_fraction` share keyed by uid."""
    if grounded_kinds and row["kind"] in grounded_kinds:
        return True
    return seeded_unit(seed, "context", row["uid"]) < context_fraction


def sampled_train_rows(config):
    """(splits, train sample): the prep output's splits with the rows of the config's kinds (`kinds` and
    `grounded_kinds`), and the seeded `train_samples` draw of its train split, as tc3-train trains on it."""
    splits = load_splits(config.data)
    if config.kinds is not None:  # set whenever grounded_kinds is (tc3.config checks)
        splits = keep_kinds(splits, config.kinds + (config.grounded_kinds or []), config.data)
    return splits, sample(splits["train"], config.train_samples, config.seed)


def training_splits(config):
    """(train, eval) prompt/completion datasets as the config asks: seeded samples of the prep output."""
    splits, train = sampled_train_rows(config)
    evaluation = sample(splits["validation"], config.eval_samples, config.seed)
    return (
        to_prompt_completion(train, config, config.dataset_num_proc),
        to_prompt_completion(evaluation, config, config.dataset_num_proc),
    )


def keep_kinds(splits, kinds: list[str], prep_dir):
    """Both splits with only the rows whose `kind` (tc3-prep's content kind) is one of `kinds`."""
    if "kind" not in splits["train"].column_names:
        raise ConfigError(f"kinds is set but {prep_dir} has no kind column: run tc3-prep again to add it")
    wanted = set(kinds)
    kept = {name: split.filter(lambda kind: kind in wanted, input_columns="kind") for name, split in splits.items()}
    for name, split in kept.items():
        if len(split) == 0:
            raise ConfigError(f"the {name} split of {prep_dir} has no row of kinds {', '.join(kinds)}")
    return kept


def content_digest(dataset) -> str:
    """A digest of a dataset's rows, in order: processes that must hold the same sample compare it."""
    rows = dataset.to_dict()
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def token_lengths(tokenizer, examples) -> list[int]:
    """Token count of each full training sequence (prompt and completion as `encode_example` tokenizes them)."""
    lengths = []
    for row in examples:
        prompt, completion, _ = encode_example(tokenizer, row["prompt"], row["completion"][0]["content"])
        lengths.append(len(prompt) + len(completion))
    return lengths


def tokenize_examples(dataset, tokenizer, max_length: int, overlong: str, num_proc: int | None = None):
    """(rows {input_ids, completion_mask}, fit counts) of prompt/completion rows, every sequence ending with its
    end token: what SFTTrainer trains on (it tokenizes nothing itself). Overlong examples are trimmed or dropped as
    `encode_example` says; counts: {"whole", "trimmed", "dropped"}."""

    def encode(row):
        prompt, completion, fit = encode_example(
            tokenizer, row["prompt"], row["completion"][0]["content"], max_length, overlong
        )
        return {"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion),
                "fit": fit}

    fingerprint = rendering_fingerprint(dataset, "tokenize", tokenizer=tokenizer, max_length=max_length,
                                        overlong=overlong)
    encoded = dataset.map(encode, remove_columns=dataset.column_names, num_proc=num_proc, new_fingerprint=fingerprint)
    fits = encoded["fit"]
    counts = {fit: fits.count(fit) for fit in ("whole", "trimmed", "dropped")}
    kept = encoded.filter(lambda fit: fit != "dropped", input_columns="fit", num_proc=num_proc)
    return kept.remove_columns("fit"), counts


def _percentile(ordered: list[int], p: float) -> int:
    """Nearest-rank percentile of a sorted list."""
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def length_stats(lengths: list[int]) -> dict:
    """Summary of a length distribution: count, mean, percentiles, max."""
    ordered = sorted(lengths)
    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 1),
        **{f"p{p}": _percentile(ordered, p) for p in (50, 90, 95, 99)},
        "max": ordered[-1],
    }


def derive_max_length(lengths: list[int], percentile: float, cap: int) -> int:
    """The length that holds `percentile`% of the examples whole, capped (longer ones are truncated)."""
    return min(_percentile(sorted(lengths), percentile), cap)
