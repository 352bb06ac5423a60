"""Type stubs of the compiled engine (rust_clean/src/python.rs)."""

import os
import pathlib
from collections.abc import Callable
from typing import Any

import pyarrow as pa

__version__: str
CLEANING_RULES: list[str]  # the names of stats.json `cleaned`, in the order the rules run
HTML_TAG_NAMES: list[str]  # the element names whose tags rule html_tags removes
HTML_TAG_PATTERN: str  # that rule's regex, script/style elements with their content (Python `re` reads it the same)
CONTENT_KINDS: list[str]  # the values of the `kind` column, in the order of stats.json `kinds`
DEDUP_MODES: list[str]  # the values of PrepOptions.dedup

class EngineError(Exception):
    """args: (message, exit status): 2 for a bad option or output path, 1 for an unreadable input or I/O failure."""

class PrepOptions:
    """The options of a run, over the engine's defaults (`PrepOptions()` holds them: they are written in Rust's
    `Options::default()` only, hence `...` here). Mistakes raise EngineError; an unknown keyword, TypeError."""

    def __init__(
        self,
        *,
        val_fraction: float = ...,
        seed: int = ...,
        limit: int | None = ...,
        sample: int | None = ...,
        min_title_chars: int = ...,
        max_title_chars: int = ...,
        min_desc_chars: int = ...,
        max_desc_chars: int = ...,
        dedup: str = ...,  # one of DEDUP_MODES
        drop_patterns: list[str] = ...,  # Rust regex syntax
        drop_kinds: list[str] = ...,  # names from CONTENT_KINDS
        strip_attributed_quotes: bool = ...,
        rejects: str | os.PathLike[str] | None = ...,
        max_errors: int | None = ...,
        threads: int | None = ...,  # None: one a core
        card_notes: str = ...,  # markdown appended to the dataset card
        rule_times: bool = ...,  # add rule_seconds to stats.json
    ) -> None: ...
    def replace(self, **changes: Any) -> PrepOptions: ...  # a copy with `changes`, checked again
    @property
    def val_fraction(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def limit(self) -> int | None: ...
    @property
    def sample(self) -> int | None: ...
    @property
    def min_title_chars(self) -> int: ...
    @property
    def max_title_chars(self) -> int: ...
    @property
    def min_desc_chars(self) -> int: ...
    @property
    def max_desc_chars(self) -> int: ...
    @property
    def dedup(self) -> str: ...
    @property
    def drop_patterns(self) -> list[str]: ...
    @property
    def drop_kinds(self) -> list[str]: ...
    @property
    def strip_attributed_quotes(self) -> bool: ...
    @property
    def rejects(self) -> pathlib.Path | None: ...
    @property
    def max_errors(self) -> int | None: ...
    @property
    def threads(self) -> int: ...
    @property
    def card_notes(self) -> str: ...
    @property
    def rule_times(self) -> bool: ...

def run(
    inputs: list[str],
    out_dir: str,
    options: PrepOptions,
    *,
    progress: Callable[[int, int | None, int, int], object] | None = None,
) -> dict[str, Any]: ...  # stats.json
def clean_batch(batch: pa.RecordBatch, options: PrepOptions) -> tuple[pa.RecordBatch, dict[str, Any]]: ...
def dedup_keys(batch: pa.RecordBatch, *, near: bool = False, seed: int | None = None) -> pa.RecordBatch: ...
def unescape_html(s: str) -> str: ...  # one pass of rule 1 (docs/cleaning.md)
def clean_title(title: str) -> str: ...  # a title as tc3-prep cleans it (rules 1-4 of docs/cleaning.md)
def classify_kind(description: str) -> str: ...  # the content kind of a cleaned description (docs/cleaning.md)
def attribution_sources(text: str) -> list[str]: ...  # source names credited after quotes in a text
