"""Every file and folder a tc3 command writes: staged beside its place, marked as tc3's, and put in place only when
complete; an existing path is replaced only when tc3 wrote it.

The marker: an output folder holds `.tc3-output.json` (`{"command": "tc3-prep", "files": [...]}`: the command
that wrote it and, for folders written in one go, every file it wrote); an output file has
`.NAME.tc3-output.json` beside it. `check_dest` decides, before any work, whether a command may write a path:

* absent, or an empty folder: yes;
* written by the same command (its marker) and, for a folder with a file list, holding nothing else but files of
  that list and outputs rebuilt from it (DERIVED: a tc3-index in a prep dir): yes, with `--force` where the
  command has one;
* anything else (a user's folder or file, another command's output, a tc3 folder into which files were added):
  no, a `UserError` naming the path.

`staged_dir` builds a folder under a temporary name beside its place; when the block ends without an error the
marker is written, the old output (if any) is renamed aside, the new one renamed in, and only then the old one
removed. `resumable_jsonl` writes one output file row by row, keeping the rows of an interrupted run; `claim_dir`
marks a folder that grows in place (a training run, an eval report); `staged_open` writes a file inside a folder
tc3 already owns.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tc3.errors import UserError

MARKER = ".tc3-output.json"


def marker_path(path: str | os.PathLike[str], folder: bool | None = None) -> Path:
    """Where the marker of `path` is: inside a folder, beside a file (`folder` says which when `path` is absent)."""
    path = Path(path)
    folder = path.is_dir() if folder is None else folder
    return path / MARKER if folder else path.with_name(f".{path.name}{MARKER}")


def read_marker(path: str | os.PathLike[str]) -> dict | None:
    """The marker of an existing `path` (None when there is none, or it is unreadable: not tc3's)."""
    try:
        marker = json.loads(marker_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def write_marker(path: str | os.PathLike[str], command: str, folder: bool, files: list[str] | None = None) -> None:
    """Marks `path` as written by `command` (a folder's marker may list its files, relative, in POSIX form)."""
    from tc3 import __version__

    marker = {"command": command, "tc3": __version__}
    if files is not None:
        marker["files"] = sorted(files)
    write_staged(marker_path(path, folder), json.dumps(marker, indent=1) + "\n")


def is_within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether `path` is `folder` or lies inside it (both resolved, so `a/../b` and symlinks count)."""
    path, folder = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return path == folder or folder in path.parents


def check_dest(path: str | os.PathLike[str], command: str, *, folder: bool = True, force: bool | None = None) -> None:
    """Raise a UserError unless `command` may write `path` (rules in the module docstring). `force`: None for a
    command that replaces its own output without asking, else whether --force was given. An output that cannot be
    written there (check_writable) is a UserError too, found before any work rather than at the final rename."""
    path = Path(path)
    check_writable(path)
    if not path.exists() and not path.is_symlink():
        return
    if folder and not path.is_dir():
        raise UserError(f"output {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise UserError(f"output {path} is a folder, not a file")
    if folder and not any(path.iterdir()):
        return
    marker = read_marker(path)
    if marker is None:
        raise UserError(f"{path} exists and was not written by tc3 (it has no {marker_path(path).name}); "
                        "refusing to replace it: remove it yourself or choose another path")
    if marker["command"] != command:
        raise UserError(f"{path} is a {marker['command']} output; {command} replaces only its own outputs")
    if force is False:
        raise UserError(f"{path} exists; replace it with --force")
    if folder and "files" in marker:
        stranger = _foreign_file(path, set(marker["files"]), DERIVED.get(command, frozenset()))
        if stranger is not None:
            raise UserError(f"{path} holds {stranger}, which {command} did not write; refusing to replace it")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise a UserError unless this process can create or replace `path`: the nearest folder above it that exists
    must be a folder it may write into (a file there, or a read-only folder, is named), and so must `path` itself
    when it is an existing folder (outputs that grow in place write into it)."""
    shown, path = path, Path(path).expanduser().absolute()
    above = path.parent
    while not above.exists() and above != above.parent:  # a file among the parents ends the walk too: not exists
        above = above.parent
    if not above.is_dir():
        raise UserError(f"cannot write {shown}: {above} is a file, not a folder")
    for folder in (above, path) if path.is_dir() else (above,):
        # A file made and removed, not os.access: root passes access checks that /sys, /proc or a read-only
        # mount still refuse.
        try:
            handle, probe = tempfile.mkstemp(dir=folder, prefix=".tc3-write-check-")
        except OSError as err:
            raise UserError(f"cannot write {shown}: {folder} is not writable ({err.strerror})") from None
        os.close(handle)
        os.unlink(probe)


# Outputs that live inside another command's output and are rebuilt from it: replaced along with it. Any other
# output inside (a training run in a prep dir, say) keeps the outer one from being replaced.
DERIVED = {"tc3-prep": frozenset({"tc3-index"})}


def _foreign_file(folder: Path, listed: set[str], derived: frozenset[str]) -> Path | None:
    """The first path under `folder` that is neither its marker, a listed file, nor a `derived` output folder."""
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for name in sorted(files):
            relative = (base / name).relative_to(folder).as_posix()
            if relative != MARKER and relative not in listed:
                return base / name
        kept = []
        for name in sorted(dirs):
            sub = base / name
            if sub.is_symlink():
                return sub
            inner = read_marker(sub)
            if inner is None:
                kept.append(name)
            elif inner["command"] not in derived:
                return sub
        dirs[:] = kept
    return None


@contextmanager
def staged_dir(dest: str | os.PathLike[str], command: str, *, force: bool | None = None) -> Iterator[Path]:
    """A new empty folder beside `dest` to write the output into; when the block ends without an error it is
    marked (listing its files) and replaces `dest`; when it raises, it is removed and `dest` is left as it was.
    `dest` is checked (check_dest) before the block runs and again just before the swap."""
    dest = Path(dest)
    check_dest(dest, command, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes it private; an output should read like any other folder
    try:
        yield tmp
        usual_modes(tmp)
        files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() or p.is_symlink()]
        write_marker(tmp, command, folder=True, files=files)
        check_dest(dest, command, force=force)  # what changed while the work ran
        _swap(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_modes(folder: str | os.PathLike[str]) -> None:
    """Files under `folder` that a library wrote private (mode 0600: safetensors 0.8 writes through a temporary
    file, safetensors#782) get the mode of every other output, 0666 less the umask (0644 under umask 022)."""
    mode = 0o666 & ~umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600:
            path.chmod(mode)


def _swap(new: Path, dest: Path) -> None:
    """Renames `new` to `dest`; an existing `dest` is renamed aside first and removed only once `new` is in."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        if old is not None:
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


@contextmanager
def staged_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A name to write `path` under, in a folder tc3 owns or a file it claimed: `.NAME.PID.partial` beside it,
    renamed to `path` when the block ends without an error (if it was written) and removed when it raises."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        if partial.exists():
            os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextmanager
def staged_open(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO]:
    """A file to write `path` through, inside a folder tc3 owns (`staged_path`): renamed to `path` when the block
    ends without an error and removed when it raises."""
    with staged_path(path) as partial:
        with open(partial, "wb") if binary else open(partial, "w", encoding="utf-8") as f:
            yield f


def write_staged(path: str | os.PathLike[str], text: str) -> None:
    """`text` written to `path` (inside a folder tc3 owns) whole or not at all."""
    with staged_open(path) as f:
        f.write(text)


def claim_file(path: str | os.PathLike[str], command: str, force: bool | None = None) -> None:
    """Checks that `command` may write the file `path` and marks it as `command`'s before it is written (a marker
    beside a file that never came is harmless: it claims nothing that exists)."""
    check_dest(path, command, folder=False, force=force)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_marker(path, command, folder=False)


def claim_dir(path: str | os.PathLike[str], command: str) -> Path:
    """Checks that `command` may write into the folder `path` (absent, empty or its own) and marks it; for outputs
    that grow in place (a training run, an eval report and its cache) rather than being replaced whole."""
    path = Path(path)
    check_dest(path, command)
    path.mkdir(parents=True, exist_ok=True)
    if read_marker(path) is None:
        write_marker(path, command, folder=True)
    return path


def split_lines(text: str) -> list[str]:
    """The lines of `text` as every line-based input of tc3 reads them: only `\\n` (with an optional `\\r` before
    it) ends a line; U+2028, `\\x0b`, `\\x0c`, `\\x1c`-`\\x1e` and `\\x85` are text (str.splitlines would split)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def fingerprint(*parts: object) -> str:
    """A short digest of `parts` (JSON-able values; a Path stands for its files: contents for a file, names,
    sizes and times for a folder's files), to key work that may be resumed."""
    import hashlib

    def stamp(value: object) -> object:
        if isinstance(value, Path):
            if value.is_file():
                return hashlib.sha1(value.read_bytes()).hexdigest()
            if value.is_dir():
                return sorted((p.relative_to(value).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                              for p in value.rglob("*") if p.is_file())
            return str(value)
        return value

    blob = json.dumps([stamp(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@contextmanager
def resumable_jsonl(path: str | os.PathLike[str], command: str, key: str) -> Iterator[tuple[list[dict], IO]]:
    """A JSONL output of `command` written row by row so that interrupted work is kept: rows go to
    `.NAME.KEY.partial` beside `path` (`key`: a fingerprint of everything the rows depend on), which becomes
    `path` when the block ends without an error and is kept when it raises. Yields (the rows a run with the same
    key already finished, the file to append new rows to, one JSON object a line)."""
    path = Path(path)
    claim_file(path, command)
    partial = path.with_name(f".{path.name}.{key}.partial")
    with append_rows(partial) as (done, f):
        yield done, f
    os.replace(partial, path)


@contextmanager
def append_rows(path: Path) -> Iterator[tuple[list[dict], IO]]:
    """(the JSON rows `path` holds, the file opened to append more): the kept part of interrupted work. A row cut
    short by the interruption is dropped from the file."""
    done: list[dict] = []
    if path.is_file():
        data = path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        done = [json.loads(line) for line in split_lines(whole.decode("utf-8"))]
        with open(path, "r+b") as f:
            f.truncate(len(whole))
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        yield done, f
