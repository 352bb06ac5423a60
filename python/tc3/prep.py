"""The Python face of the Rust cleaning engine: `run` (what `tc3-prep` calls) and `clean_batch`.

Rules and outputs are described in docs/cleaning.md. The heavy work runs in Rust with the GIL released.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tc3 import _rust_clean
from tc3._rust_clean import InputError, PrepError, UsageError
from tc3.prompts import questions_card_section

if TYPE_CHECKING:  # pyarrow (and numpy with it) loads only when a batch is cleaned, not for tc3-prep
    import pyarrow as pa

__all__ = ["run", "clean_batch", "dedup_keys", "PrepError", "UsageError", "InputError", "DROP_REASONS", "CLEANING_RULES"]

DROP_REASONS = (
    "malformed", "empty_title", "empty_description", "same_as_title",
    "too_short", "too_long", "duplicate", "near_duplicate",
)
CLEANING_RULES = tuple(_rust_clean.CLEANING_RULES)  # stats.json `cleaned`, in the order the rules run

ProgressCallback = Callable[[int, "int | None", int, int], None]


# The dataset card says how `tc3-train` turns a row into a chat example by default (`questions: varied`).
DATASET_CARD_PROMPTS = (
    "## Training prompts\n\n`tc3-train` makes a chat example of each row: the user turn asks about the title, the "
    "assistant answers with the description.\n" + questions_card_section("varied", "pt")
)


def run(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    val_fraction: float = 0.01,
    seed: int = 3407,
    limit: int | None = None,
    sample: int | None = None,
    min_title_chars: int = 3,
    max_title_chars: int = 400,
    min_desc_chars: int = 40,
    max_desc_chars: int = 5000,
    dedup: str = "exact",
    drop_patterns: Iterable[str] = (),
    rejects: str | os.PathLike[str] | None = None,
    max_errors: int | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Cleans `inputs` (trn.json lines, plain or gzip, "-" for stdin) into `out_dir`; returns stats.json's dict.

    `out_dir` is built beside itself under a temporary name and renamed into place at the end.
    `progress(bytes_read, bytes_total, records, kept)` is called a few times a second.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    counts = {
        "seed": seed, "limit": limit, "sample": sample, "max_errors": max_errors, "threads": threads,
        "min_title_chars": min_title_chars, "max_title_chars": max_title_chars,
        "min_desc_chars": min_desc_chars, "max_desc_chars": max_desc_chars,
    }
    for name, value in counts.items():
        least = 1 if name == "threads" else 0
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be {'at least 1' if least else 'zero or more'}, not {value}")
    try:
        stats = _rust_clean.run(
            [os.fspath(i) for i in inputs],
            os.fspath(out_dir),
            val_fraction=val_fraction,
            seed=seed,
            limit=limit,
            sample=sample,
            min_title_chars=min_title_chars,
            max_title_chars=max_title_chars,
            min_desc_chars=min_desc_chars,
            max_desc_chars=max_desc_chars,
            dedup=dedup,
            drop_patterns=list(drop_patterns),
            rejects=None if rejects is None else os.fspath(rejects),
            max_errors=max_errors,
            threads=threads,
            force=force,
            card_notes=DATASET_CARD_PROMPTS,
            progress=progress,
        )
    except OverflowError as e:  # a number past 2**64 cannot reach the engine
        raise UsageError(f"a number is out of range: {e}") from None
    return json.loads(stats)


def clean_batch(
    table: pa.Table | pa.RecordBatch,
    *,
    min_title_chars: int = 3,
    max_title_chars: int = 400,
    min_desc_chars: int = 40,
    max_desc_chars: int = 5000,
    drop_patterns: Iterable[str] = (),
) -> tuple[pa.Table | pa.RecordBatch, dict[str, Any]]:
    """Cleans and filters rows with `title` and `content` (and optional `uid`) columns, as `run` does,
    without the global steps (dedup, split). Returns kept rows as `uid`, `title`, `description` (same
    type as given: Table or RecordBatch) and counts: rows, kept, dropped per reason, cleaned per rule.

    Made for distributed engines: Ray Data `map_batches`, Spark `mapInArrow`, Dask `map_partitions`.
    """
    import pyarrow as pa

    options = dict(
        min_title_chars=min_title_chars, max_title_chars=max_title_chars,
        min_desc_chars=min_desc_chars, max_desc_chars=max_desc_chars, drop_patterns=list(drop_patterns),
    )
    if isinstance(table, pa.RecordBatch):
        batch, counts = _rust_clean.clean_batch(table, **options)
        return batch, json.loads(counts)
    if not isinstance(table, pa.Table):
        raise TypeError(f"clean_batch takes a pyarrow Table or RecordBatch, not {type(table).__name__}")
    batches, totals = [], None
    for piece in table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]:
        batch, counts = _rust_clean.clean_batch(piece, **options)
        batches.append(batch)
        totals = _add_counts(totals, json.loads(counts))
    return pa.Table.from_batches(batches), totals


def dedup_keys(table: pa.Table | pa.RecordBatch, *, near: bool = False, seed: int = 3407) -> pa.Table | pa.RecordBatch:
    """The keys `run` dedups by, one row per row of `table`'s `description` column (as `clean_batch`
    returns it), so that a distributed engine can dedup across shards as `run` does within one process.

    Columns (same type as given: Table or RecordBatch): `key`, fixed_size_binary(16), the exact-dedup
    hash (equal keys: the same letters and numbers, ignoring case, spaces and punctuation); with `near`,
    also `bands`, 16 uint64 LSH band keys (rows that share a value at one position are near-duplicate
    candidates) and `signature`, 64 uint32 MinHash values (a candidate is a near duplicate when at least
    80% of them agree). `seed` is `run`'s seed (the MinHash permutations depend on it). A null
    description gives null keys. Keep the first row of each `key` group by input position to get what
    `run` keeps with `dedup="exact"`. Raises UsageError when there is no string `description` column.
    """
    import pyarrow as pa

    if isinstance(table, pa.RecordBatch):
        return _rust_clean.dedup_keys(table, near=near, seed=seed)
    if not isinstance(table, pa.Table):
        raise TypeError(f"dedup_keys takes a pyarrow Table or RecordBatch, not {type(table).__name__}")
    batches = [_rust_clean.dedup_keys(b, near=near, seed=seed) for b in table.to_batches()]
    if not batches:  # an empty table still gets its key columns
        batches = [_rust_clean.dedup_keys(pa.RecordBatch.from_pylist([], schema=table.schema), near=near, seed=seed)]
    return pa.Table.from_batches(batches)


def _add_counts(total: dict | None, counts: dict) -> dict:
    if total is None:
        return counts
    return {
        key: {k: total[key][k] + v for k, v in value.items()} if isinstance(value, dict) else total[key] + value
        for key, value in counts.items()
    }
