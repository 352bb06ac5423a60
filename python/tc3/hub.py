"""Upload a trained adapter or merged model dir, with its model card, to the Hugging Face Hub.

The token comes from HF_TOKEN or the Hub login (`hf auth login`) only; it is never printed, logged or written.
"""

from __future__ import annotations

import os
from pathlib import Path

from tc3.config import ConfigError

# What a trained dir holds that is not the model: resumable training state and scratch (name prefixes).
NOT_PUBLISHED = (
    "checkpoint-", ".final.partial", "train_log.jsonl", "training_args.bin", "optimizer.pt", "scheduler.pt",
    "scaler.pt", "rng_state", "trainer_state.json", "tc3_checkpoint_complete",
)  # fmt: skip
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


def files_to_push(path: Path) -> list[Path]:
    """The files of a trained dir that make the published model, relative to `path`."""
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory")
    if not any((path / name).is_file() for name in WEIGHTS):
        raise ConfigError(f"{path} holds no adapter or merged model (no {' / '.join(WEIGHTS[:2])})")
    if not (path / "README.md").is_file():
        raise ConfigError(f"{path} has no model card (README.md); tc3-train and tc3-export write one")
    files = [p.relative_to(path) for p in sorted(path.rglob("*")) if p.is_file()]
    return [f for f in files if not f.parts[0].startswith(NOT_PUBLISHED) and not f.name.startswith(".")]


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def push(path: str | Path, repo_id: str, private: bool = True, dry_run: bool = False) -> list[Path]:
    """Upload the model files of `path` to the model repo `repo_id` (created private unless told otherwise)."""
    path = Path(path)
    files = files_to_push(path)
    if repo_id.count("/") != 1:
        raise ConfigError(f"repo id {repo_id!r} must be owner/name")
    visibility = "private" if private else "public"
    if dry_run:
        total = sum((path / f).stat().st_size for f in files)
        print(f"would upload to {repo_id} ({visibility}), {len(files)} files, {total / 2**20:.1f} MiB:")
        for f in files:
            print(f"  {f}  ({(path / f).stat().st_size:,} bytes)")
        return files

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=hub_token())
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(path),
            repo_id=repo_id,
            repo_type="model",
            allow_patterns=[str(f) for f in files],
            commit_message=f"tc3: upload {path.name}",
        )
    except HfHubHTTPError as e:  # bad token, no write access, ...: the Hub's own words, first line only
        raise ConfigError(f"the Hub refused the upload to {repo_id}: {str(e).splitlines()[0]}") from None
    print(f"uploaded {len(files)} files to https://huggingface.co/{repo_id} ({visibility})")
    return files
