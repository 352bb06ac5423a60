"""A model reference resolved once per command: `resolve_model` turns what the user named (a merged model dir, an
adapter dir, a Hub id; an adapter's --base) into a `ResolvedModel` before anything loads, and every later step
(loading, the eval cache key, the trained instruction, the precision it was trained in) reads that value instead of
finding the files again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tc3.errors import UserError
from tc3.layout import RunDir
from tc3.models import cached_snapshot, hub_id, is_quantized, resolve


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are, found without loading it.

    `run` is the model's own folder with its tc3 files (config, training plan, metrics: each parsed once, when first
    read); `weights` the folder its weights load from (an adapter's base, else the model's own)."""

    name: str  # as given
    run: RunDir  # the model's (or adapter's) own folder
    base: str | None  # an adapter's base as named (adapter_config.json or --base); None for a whole model
    weights: RunDir  # where the weights load from: the base's folder for an adapter
    hub_id: str | None  # the Hub id the model comes from (None: a plain local folder)
    quantized: bool  # the weights are stored quantized (bitsandbytes 4/8-bit ...)
    fingerprint: dict = field(compare=False)  # what identifies the weights (tc3-eval's cache key)

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def is_adapter(self) -> bool:
        return self.base is not None

    @property
    def tokenizer_path(self) -> Path:
        """The adapter's own tokenizer when the trainer saved one (template and added tokens included), else the
        base's."""
        return self.run.path if self.run.has_tokenizer() or not self.is_adapter else self.weights.path

    @property
    def plan(self):
        """The training plan saved with the model (tc3.train.plan.TrainPlan), None for a model tc3 did not train
        or one trained before plans were saved."""
        return self.run.plan

    @property
    def config(self):
        """The tc3 config saved with the model, or None."""
        return self.run.config

    def over(self, base: str) -> ResolvedModel:
        """The same adapter over another base (tc3-export merges into the 16-bit original of a 4-bit base)."""
        return self if base == self.base else resolve_model(self.name, base, self.run, known=(self.weights,))


def stamp(ref: str) -> dict:
    """What identifies one model's files: a local dir by its files (name, size, mtime), a Hub id by its cached
    snapshot (the commit)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
        return {"path": str(path.resolve()), "files": files}
    snapshot = cached_snapshot(ref)
    return {"hub_id": ref, "revision": snapshot.name if snapshot else None}


def adapter_base(run: RunDir, base: str | None = None) -> str | None:
    """The base model an adapter dir names (``base`` overrides it), or None when ``run`` is not an adapter."""
    config = run.adapter_config
    if config is None:
        return None
    found = base or config.get("base_model_name_or_path")
    if not found:
        raise UserError(f"adapter '{run.path}' does not name its base model; pass --base DIR_OR_HUB_ID")
    return found


def resolve_model(name: str, base: str | None = None, run: RunDir | None = None, known=()) -> ResolvedModel:
    """Find a model's files (a command calls it once, before any long work): a local path first, then the Hub,
    cache first (tc3.models.resolve). `base` overrides an adapter's own; `run` is its folder when the caller has
    it already; `known`: folders the command has read already (an eval's baseline is usually the model's base),
    reused rather than read again. UserError when anything is missing: the model, an adapter's base, or a --base
    for a whole model."""
    run = run or _folder(resolve(name, "model"), known)
    base_name = adapter_base(run, base)
    if base_name is None:
        if base:
            raise UserError(f"--base was given but '{name}' is not an adapter (no adapter_config.json)")
        weights = run
    else:
        weights = _folder(_resolve_base(base_name, given=base is not None), known)
    fingerprint = stamp(name) | ({"base": stamp(base_name)} if base_name else {})
    return ResolvedModel(name=name, run=run, base=base_name, weights=weights, hub_id=hub_id(name),
                         quantized=is_quantized(weights.model_config or {}), fingerprint=fingerprint)


def _folder(path: Path, known) -> RunDir:
    """The RunDir of `path`: one of `known` when it is that folder, else a new one."""
    return next((folder for folder in known if folder.path.resolve() == path.resolve()), None) or RunDir(path)


def _resolve_base(base_name: str, given: bool) -> Path:
    try:
        base_path = resolve(base_name, "adapter base model")
    except UserError as err:
        hint = "" if given else " (read from adapter_config.json; pass --base DIR_OR_HUB_ID to override)"
        raise UserError(f"{err}{hint}") from None
    if (base_path / RunDir.ADAPTER_CONFIG).is_file() and not (base_path / RunDir.MODEL_CONFIG).is_file():
        raise UserError(f"adapter base model '{base_name}' is itself an adapter")
    return base_path
