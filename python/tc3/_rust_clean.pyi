"""Type stubs of the compiled engine (rust_clean/src/python.rs)."""

from collections.abc import Callable

import pyarrow as pa

__version__: str
CLEANING_RULES: list[str]  # the names of stats.json `cleaned`, in the order the rules run
HTML_TAG_NAMES: list[str]  # the element names whose tags rule html_tags removes
HTML_TAG_PATTERN: str  # that rule's regex, script/style elements with their content (Python `re` reads it the same)
CONTENT_KINDS: list[str]  # the values of the `kind` column, in the order of stats.json `kinds`

class EngineError(Exception):
    """args: (message, exit status): 2 for a bad option or output path, 1 for an unreadable input or I/O failure."""

def run(
    inputs: list[str],
    out_dir: str,
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
    drop_patterns: list[str] = ...,
    drop_kinds: list[str] = ...,
    strip_attributed_quotes: bool = False,
    rejects: str | None = None,
    max_errors: int | None = None,
    threads: int | None = None,
    card_notes: str = "",
    progress: Callable[[int, int | None, int, int], object] | None = None,
) -> str: ...
def clean_batch(
    batch: pa.RecordBatch,
    *,
    min_title_chars: int = 3,
    max_title_chars: int = 400,
    min_desc_chars: int = 40,
    max_desc_chars: int = 5000,
    drop_patterns: list[str] = ...,
    drop_kinds: list[str] = ...,
    strip_attributed_quotes: bool = False,
) -> tuple[pa.RecordBatch, str]: ...
def dedup_keys(batch: pa.RecordBatch, *, near: bool = False, seed: int = 3407) -> pa.RecordBatch: ...
def unescape_html(s: str) -> str: ...  # one pass of rule 1 (docs/cleaning.md)
def clean_title(title: str) -> str: ...  # a title as tc3-prep cleans it (rules 1-4 of docs/cleaning.md)
def classify_kind(description: str) -> str: ...  # the content kind of a cleaned description (docs/cleaning.md)
def attribution_sources(text: str) -> list[str]: ...  # source names credited after quotes in a text
