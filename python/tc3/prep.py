"""The Python face of the Rust cleaning engine: `run` (what `tc3-prep` calls) and `clean_batch`.

Rules and outputs are described in docs/cleaning.md. The heavy work runs in Rust with the GIL released.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from tc3 import _rust_clean
from tc3._rust_clean import PrepOptions
from tc3.errors import UserError
from tc3.outputs import check_dest, claim_file, is_within, staged_dir, staged_path
from tc3.sniff import describe, looks_like_json_lines, read_head
from tc3.prompts import questions_card_section

if TYPE_CHECKING:  # pyarrow (and numpy with it) loads only when a batch is cleaned, not for tc3-prep
    import pyarrow as pa

__all__ = ["PrepOptions", "options", "run", "clean_batch", "classify_kind", "dedup_keys", "DROP_REASONS", "CLEANING_RULES", "CONTENT_KINDS"]

CLEANING_RULES = tuple(_rust_clean.CLEANING_RULES)  # stats.json `cleaned`, in the order the rules run
CONTENT_KINDS = tuple(_rust_clean.CONTENT_KINDS)  # the `kind` column's values, as in stats.json `kinds`
DEDUP_MODES = tuple(_rust_clean.DEDUP_MODES)  # `dedup` values
DROP_REASONS = (
    "malformed", "empty_title", "empty_description", "same_as_title",
    "too_short", "too_long", "duplicate", "near_duplicate", *(f"kind_{k}" for k in CONTENT_KINDS),
)
classify_kind = _rust_clean.classify_kind  # one cleaned description -> its kind (docs/cleaning.md)

ProgressCallback = Callable[[int, "int | None", int, int], None]


# The dataset card says how `tc3-train` turns a row into a chat example by default (`questions: varied`).
DATASET_CARD_PROMPTS = (
    "## Training prompts\n\n`tc3-train` makes a chat example of each row: the user turn asks about the title, the "
    "assistant answers with the description.\n" + questions_card_section("varied", "pt")
)


def options(**given: Any) -> PrepOptions:
    """The engine's options: `given` (PrepOptions keywords; `drop_kinds` may also be "a,b" as on the command line)
    over the engine's defaults, which `PrepOptions()` holds. A mistake raises UserError (status 2)."""
    if isinstance(given.get("drop_kinds"), str):
        given["drop_kinds"] = given["drop_kinds"].split(",")
    with engine_errors():
        return PrepOptions(**{k: list(v) if k in _LISTS else v for k, v in given.items()})


_LISTS = ("drop_patterns", "drop_kinds")  # any iterable of names or patterns is taken


def run(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    **given: Any,
) -> dict[str, Any]:
    """Cleans `inputs` (trn.json lines, plain or gzip, "-" for stdin) into `out_dir`; returns stats.json's dict.

    `given` are the engine's options (`PrepOptions` keywords: val_fraction, seed, limit, sample, min/max
    title/desc chars, dedup, drop_patterns, drop_kinds, strip_attributed_quotes, rejects, max_errors, threads,
    rule_times), checked before anything is touched. `out_dir` is built beside itself under a temporary name and
    renamed into place at the end (tc3.outputs): an existing `out_dir` is replaced only with `force` and only when
    tc3-prep wrote it, and so is the `rejects` file; `rejects` may not lie inside `out_dir`.
    `progress(bytes_read, bytes_total, records, kept)` is called a few times a second. `drop_kinds` (names from
    `CONTENT_KINDS`) drops kept records of those kinds, counted as `kind_<name>`; `strip_attributed_quotes` removes
    quoted praise with its source before the length filters. Mistakes and unreadable inputs raise UserError
    (status 2 and 1). A run that ends early (`limit`, an error, Ctrl-C) while a pipe or stdin gives nothing returns
    within about a second; its reading thread then waits in the background until the pipe gives data or ends, and
    may take that data.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    resolved = options(**given, card_notes=DATASET_CARD_PROMPTS)
    rejects = resolved.rejects
    check_dest(out_dir, "tc3-prep", force=force)
    if rejects is not None:
        if is_within(rejects, out_dir):
            raise UserError(f"--rejects {os.fspath(rejects)} is inside the output dir {os.fspath(out_dir)}, which "
                            "tc3-prep replaces whole; write it elsewhere")
        claim_file(rejects, "tc3-prep", force=force)
    check_inputs(inputs)
    # The rejects file, like out_dir, replaces an earlier one only once the run is known to be usable.
    with (staged_dir(out_dir, "tc3-prep", force=force) as staged,
          staged_path(rejects) if rejects is not None else nullcontext() as staged_rejects, engine_errors()):
        stats = _rust_clean.run([os.fspath(i) for i in inputs], os.fspath(staged),
                                resolved.replace(rejects=staged_rejects), progress=progress)
        check_usable(stats, resolved.max_errors)
    return stats


JSON_LINES = "tc3-prep reads trn.json: one JSON object a line, with title and content"


def check_inputs(inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Before any work: a UserError naming what an input file looks like when it is not JSON lines (CSV, Parquet,
    a JSON array, binary ...), or when every input is empty. Standard input and pipes are judged afterwards, by
    `check_usable`."""
    heads = [(os.fspath(i), read_head(i)) for i in inputs]
    for name, head in heads:
        if head is not None and head.kind != "empty" and not looks_like_json_lines(head):
            raise UserError(f"input {name} looks like {describe(head)}, not JSON lines; {JSON_LINES}")
    if heads and all(head is not None and head.kind == "empty" for _, head in heads):
        names = ", ".join(name for name, _ in heads)
        raise UserError(f"input {names} {'is' if len(heads) == 1 else 'are'} empty: there is nothing to clean")


MAX_MALFORMED_SHARE = 0.5  # without --max-errors: more malformed lines than this share of the records is refused


def check_usable(stats: dict[str, Any], max_errors: int | None) -> None:
    """After the run, before its output replaces anything: a UserError when more than half of the records were
    malformed lines (the input is not trn.json; accepted with `max_errors` when some were kept), or when it kept no
    record."""
    records, malformed, kept = stats["records"], stats["dropped"]["malformed"], stats["kept"]["total"]
    if records == 0:
        raise UserError("the input holds no record (it is empty or blank lines only): there is nothing to clean")
    if malformed > MAX_MALFORMED_SHARE * records and (kept == 0 or max_errors is None):
        raise UserError(
            f"{malformed:,} of {records:,} lines are malformed (the first: {stats['first_malformed']}): "
            f"{JSON_LINES}" + (" (--max-errors N accepts up to N such lines)" if kept else ""))
    if kept == 0:
        reasons = sorted(((n, reason) for reason, n in stats["dropped"].items() if n), reverse=True)
        hint = (" (no record has both a title and a content field)"
                if reasons[0][1] in ("empty_title", "empty_description") else "; see the filter options")
        raise UserError(f"no record kept: all {records:,} were dropped ("
                        + ", ".join(f"{reason} {n:,}" for n, reason in reasons) + ")" + hint)


def clean_batch(
    table: pa.Table | pa.RecordBatch, **filters: Any,
) -> tuple[pa.Table | pa.RecordBatch, dict[str, Any]]:
    """Cleans and filters rows with `title` and `content` (and optional `uid`) columns, as `run` does,
    without the global steps (dedup, split). `filters` are `run`'s filter options (min/max title/desc chars,
    drop_patterns, drop_kinds, strip_attributed_quotes). Returns kept rows as `uid`, `title`, `description`, `kind`
    (same type as given: Table or RecordBatch) and counts: rows, kept, dropped per reason, cleaned per
    rule, kept rows per kind, kept rows holding a chat-template marker (``template_markers``).

    Made for distributed engines: Ray Data `map_batches`, Spark `mapInArrow`, Dask `map_partitions`.
    """
    import pyarrow as pa

    resolved = options(**filters)
    if isinstance(table, pa.RecordBatch):
        with engine_errors():
            return _rust_clean.clean_batch(table, resolved)
    if not isinstance(table, pa.Table):
        raise TypeError(f"clean_batch takes a pyarrow Table or RecordBatch, not {type(table).__name__}")
    batches, totals = [], None
    for piece in table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]:
        with engine_errors():
            batch, counts = _rust_clean.clean_batch(piece, resolved)
        batches.append(batch)
        totals = _add_counts(totals, counts)
    return pa.Table.from_batches(batches), totals


def dedup_keys(
    table: pa.Table | pa.RecordBatch, *, near: bool = False, seed: int | None = None,
) -> pa.Table | pa.RecordBatch:
    """The keys `run` dedups by, one row per row of `table`'s `description` column (as `clean_batch`
    returns it), so that a distributed engine can dedup across shards as `run` does within one process.

    Columns (same type as given: Table or RecordBatch): `key`, fixed_size_binary(16), the exact-dedup
    hash (equal keys: the same letters and numbers, ignoring case, spaces and punctuation); with `near`,
    also `bands`, 16 uint64 LSH band keys (rows that share a value at one position are near-duplicate
    candidates) and `signature`, 64 uint32 MinHash values (a candidate is a near duplicate when at least
    80% of them agree). `seed` is `run`'s seed (the MinHash permutations depend on it; None: run's default). A null
    description gives null keys. Keep the first row of each `key` group by input position to get what
    `run` keeps with `dedup="exact"`. Raises UserError when there is no string `description` column.
    """
    import pyarrow as pa

    if isinstance(table, pa.RecordBatch):
        with engine_errors():
            return _rust_clean.dedup_keys(table, near=near, seed=seed)
    if not isinstance(table, pa.Table):
        raise TypeError(f"dedup_keys takes a pyarrow Table or RecordBatch, not {type(table).__name__}")
    batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]  # empty: still the columns
    with engine_errors():
        return pa.Table.from_batches([_rust_clean.dedup_keys(b, near=near, seed=seed) for b in batches])


@contextmanager
def engine_errors() -> Iterator[None]:
    """The engine's errors as UserError, in this one place: a bad option or output path exits 2, an input that
    cannot be read (or an I/O failure) exits 1."""
    try:
        yield
    except _rust_clean.EngineError as e:
        message, status = e.args
        raise UserError(message, status=status) from None
    except OverflowError as e:  # a number past 2**64 cannot reach the engine
        raise UserError(f"a number is out of range: {e}") from None


def _add_counts(total: dict | None, counts: dict) -> dict:
    if total is None:
        return counts
    return {
        key: {k: total[key][k] + v for k, v in value.items()} if isinstance(value, dict) else total[key] + value
        for key, value in counts.items()
    }
