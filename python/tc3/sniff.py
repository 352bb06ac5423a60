"""What an input file looks like, from its first bytes: told before any long work when it is not the text a
command reads (a CSV, a Parquet file, a JSON array, an empty or binary file given to `tc3-prep` or `tc3-generate`).

`looks_like(path)` reads at most `HEAD` bytes (gzip is looked through, by content); standard input and pipes are
not read here (what they hold is judged by the counts of the run itself).
"""

from __future__ import annotations

import codecs
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

HEAD = 1 << 16  # bytes looked at

# Magic numbers of formats that are never line-based text.
_MAGIC = (
    (b"PAR1", "a Parquet file"),
    (b"PK\x03\x04", "a ZIP archive (or an .xlsx/.docx file)"),
    (b"BZh", "bzip2-compressed (decompress it first: plain text and gzip are read)"),
    (b"\xfd7zXZ\x00", "xz-compressed (decompress it first: plain text and gzip are read)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed (decompress it first: plain text and gzip are read)"),
    (b"ARROW1", "an Arrow file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"%PDF", "a PDF file"),
)


@dataclass(frozen=True)
class Head:
    """The start of a file as text: `kind` is "empty", "binary" (with `what`: the format when known), or "text";
    `first_line` is its first non-blank line (BOM and line ending left out), `lines` the non-blank lines seen."""

    kind: str
    what: str = ""
    first_line: str = ""
    lines: tuple[str, ...] = ()


def read_head(path: str | os.PathLike[str]) -> Head | None:
    """The start of the regular file `path`, or None for standard input ("-"), a pipe or a missing file."""
    path = Path(path)
    if os.fspath(path) == "-" or not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(HEAD)
            whole = not f.read(1)
    except OSError:
        return None  # the command's own reading reports it
    if raw[:2] == b"\x1f\x8b":
        try:
            unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = unzip.decompress(raw, HEAD)
            whole = whole and unzip.eof and not unzip.unconsumed_tail
        except zlib.error:
            return Head("binary", "a damaged gzip file")
    else:
        data = raw
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return Head("binary", what)
    # A stray bad byte is one malformed line for the engine, not a binary file: only NUL bytes or mostly
    # undecodable bytes say binary.
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=whole)
    if "\0" in text or text.count("\ufffd") > len(text) // 10:
        return Head("binary")
    lines = tuple(line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n") if line.strip())
    if not whole:
        lines = lines[:-1] or lines  # the last line may be cut off
    if not lines:
        return Head("empty") if whole else Head("text")
    return Head("text", first_line=lines[0].strip(), lines=lines)


def describe(head: Head) -> str:
    """What the file looks like, as words to follow "it is" / "looks like": "empty", "a Parquet file", "CSV
    (first line: 'a,b')", "a JSON array", "binary (not text)", or "text (first line: '...')"."""
    if head.kind == "empty":
        return "empty"
    if head.kind == "binary":
        return head.what or "a binary file (not UTF-8 text)"
    first = head.first_line
    shown = repr(first if len(first) <= 60 else first[:57] + "...")
    if first.startswith("["):
        return "a JSON array"
    if first == "{":
        return "pretty-printed JSON (one object over several lines)"
    for sep, name in (("\t", "TSV"), (",", "CSV"), (";", "CSV")):
        count = first.count(sep)
        if count and not first.startswith("{") and all(line.count(sep) >= count for line in head.lines[1:4]):
            return f"{name} (first line: {shown})"
    return f"text (first line: {shown})"


def looks_like_json_lines(head: Head) -> bool:
    """Whether the file starts as JSON lines do: more than half of its first non-blank lines open a one-line JSON
    object (a stray bad line is the engine's to count as malformed, not a reason to refuse the file)."""
    objects = sum(line.lstrip().startswith("{") and line.strip() != "{" for line in head.lines)
    return head.kind == "text" and 2 * objects > len(head.lines)
