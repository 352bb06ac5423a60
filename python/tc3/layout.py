"""Where things are in tc3's two folders: a prep dir (`tc3-prep`'s output) and a run dir (`tc3-train`'s output, and the
merged model `tc3-export` makes of it). Every file name is spelled here once, and every reader of these folders is
here; a reader parses its file once per object (a command makes one object a folder).

Prep dir (written by the Rust engine, `rust_clean`):

    README.md                      dataset card (Hugging Face `datasets` finds the Parquet files through it)
    stats.json                     the prep report
    data/train-*.parquet           rows: uid, title, description, kind
    data/validation-*.parquet

Run dir (written by tc3.train; a merged model dir holds the config, plan and metrics too):

    tc3_config.yaml                the config, resolved (max_length derived, optimizer as run)
    tc3_plan.json                  the training plan (tc3.train.plan.TrainPlan): device, precision, ...
    train_log.jsonl                one JSON object a log event
    metrics.json                   the final metrics
    README.md                      the model card
    adapter_config.json, adapter_model.safetensors, tokenizer files
    checkpoint-N/                  with `tc3_checkpoint_complete` once saved whole
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from tc3.errors import UserError


class PrepDir:
    """A tc3-prep output dir. `check` is the one validity test; `split_files` and `read_split` read its rows."""

    CARD = "README.md"
    STATS = "stats.json"
    DATA = "data"
    SPLITS = ("train", "validation")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def split_files(self, split: str) -> list[Path]:
        """The Parquet files of one split, sorted (none when absent)."""
        return sorted((self.path / self.DATA).glob(f"{split}-*.parquet"))

    def parquet_files(self) -> list[Path]:
        """Every Parquet file of every split, sorted."""
        return sorted((self.path / self.DATA).glob("*.parquet"))

    def check(self) -> PrepDir:
        """Itself, when it is a prep dir: a dataset card and Parquet files of at least one split under data/. A
        UserError (a ConfigError) naming what is missing otherwise."""
        if not (self.path / self.CARD).is_file() or not (self.path / self.DATA).is_dir():
            raise UserError(f"{self.path} is not a tc3-prep output dir (expected {self.CARD} and {self.DATA}/)")
        if not any(self.split_files(split) for split in self.SPLITS):
            raise UserError(f"{self.path} is not a tc3-prep output dir (no {self.DATA}/train-*.parquet)")
        return self

    @cached_property
    def stats(self) -> dict | None:
        """The prep report (stats.json), None when it is not there."""
        path = self.path / self.STATS
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def read_split(self, split: str) -> list[dict]:
        """Rows (``uid``, ``title``, ``description``, ...) of one split. UserError for a missing split, an unreadable
        file or one without a title column."""
        import pyarrow.parquet as pq

        files = self.split_files(split)
        if not files:
            raise UserError(f"'{self.path}' has no {split} split (expected {self.DATA}/{split}-*.parquet from tc3-prep)")
        rows: list[dict] = []
        for file in files:
            try:
                table = pq.read_table(file)
            except Exception as err:
                raise UserError(f"cannot read {file}: {err}") from None
            if "title" not in table.column_names:
                raise UserError(f"{file} has no 'title' column")
            rows.extend(table.to_pylist())
        return rows


class RunDir:
    """A tc3-train output dir (or a merged model dir made from one): its file names and readers. A reader returns
    None (or an empty dict) for a file the folder lacks: a model tc3 did not train, or a run saved before the file
    was written (runs before the training plan have no PLAN)."""

    CONFIG = "tc3_config.yaml"
    PLAN = "tc3_plan.json"
    LOG = "train_log.jsonl"
    METRICS = "metrics.json"
    CARD = "README.md"
    ADAPTER_CONFIG = "adapter_config.json"
    ADAPTER_WEIGHTS = "adapter_model.safetensors"
    MODEL_CONFIG = "config.json"
    TOKENIZER_CONFIG = "tokenizer_config.json"
    STAGING = ".final.partial"  # the final files, written whole before they are moved in
    COMPLETE_MARKER = "tc3_checkpoint_complete"  # in a checkpoint, once the Trainer has saved every file of it
    TRAINING_ARGS = "training_args.bin"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @cached_property
    def config(self):
        """The saved TrainConfig (tc3.config), or None."""
        from tc3.config import load_config

        path = self.file(self.CONFIG)
        return load_config(path) if path.is_file() else None

    @cached_property
    def plan(self):
        """The saved training plan (tc3.train.plan.TrainPlan), or None for a run saved before plans were."""
        from tc3.train.plan import TrainPlan

        path = self.file(self.PLAN)
        return TrainPlan.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None

    @cached_property
    def metrics(self) -> dict:
        path = self.file(self.METRICS)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @cached_property
    def adapter_config(self) -> dict | None:
        """adapter_config.json, or None when this is no adapter. UserError when it cannot be read."""
        path = self.file(self.ADAPTER_CONFIG)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserError(f"adapter config {path} is unreadable: {err}") from None

    @cached_property
    def model_config(self) -> dict | None:
        """config.json (a model's, not an adapter's), or None."""
        path = self.file(self.MODEL_CONFIG)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def has_tokenizer(self) -> bool:
        return self.file(self.TOKENIZER_CONFIG).is_file()

    def checkpoints(self) -> list[Path]:
        """Checkpoint dirs whose saving finished, oldest first (a run killed while saving leaves one without marker)."""
        found = [p for p in self.path.glob("checkpoint-*") if (p / self.COMPLETE_MARKER).is_file()]
        return sorted(found, key=checkpoint_step)

    def log_records(self) -> list[dict]:
        """The records of the log (none when absent); a line cut short by a killed run is left out."""
        path = self.file(self.LOG)
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a `checkpoint-N` dir."""
    return int(checkpoint.name.rsplit("-", 1)[1])
