"""Where a model comes from (local dir, cached or remote hub id) and loading what training produced."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from tc3.errors import UserError

# Set before transformers / datasets / unsloth are imported: they read these at import time.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def is_local(model: str) -> bool:
    return Path(model).expanduser().is_dir()


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "true", "yes", "on"}


def check_model_ref(model: str, what: str = "model") -> None:
    """Checked by every command before anything loads, answered within a second: raises UserError unless `model`
    is a local folder, or a hub id (`name` or `owner/name`) that is in the Hub cache or can be fetched.

    A path-like ref (starting with `.`, `/` or `~`, with more than one `/`, not shaped like a hub id, or whose
    first part is a local folder, as in `runs/typo`) that does not exist is a mistyped path, never looked up on
    the Hub; a hub id that is not cached fails at once when HF_HUB_OFFLINE is set or the Hub cannot be reached,
    instead of retrying for a minute."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{what} '{model}' is a file, not a model folder")
        return
    if (model.startswith((".", "/", "~")) or model.count("/") > 1 or not _HUB_ID.match(model)
            or ("/" in model and Path(model.split("/", 1)[0]).expanduser().is_dir())):
        raise UserError(f"{what} '{model}' does not exist")
    if (hub_cache_dir() / f"models--{model.replace('/', '--')}" / "snapshots").is_dir():
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        raise UserError(f"{what} '{model}' is not a local folder nor in the Hub cache (HF_HUB_OFFLINE is set)")
    if not hub_reachable():
        raise UserError(f"{what} '{model}' is not a local folder nor in the Hub cache, and the Hub cannot be reached")


def hub_reachable(timeout: float = 1.0) -> bool:
    """Whether a TCP connection to the Hub (HF_ENDPOINT) opens within `timeout` seconds, name lookup included (in a
    thread, since a lookup cannot be given a timeout); assumed when a proxy is set, the proxy being the way out."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(opened)


def hub_cache_dir() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return Path(hf_home) / "hub"


def cached_snapshot(model: str) -> Path | None:
    """The cached snapshot dir of a hub id, if it was downloaded before (looked up without importing the hub client,
    whose offline switch is frozen at import)."""
    snapshots = hub_cache_dir() / f"models--{model.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    return found[-1].parent if found else None


def go_offline_if_possible(model: str) -> bool:
    """Switch the HF libraries offline unless `model` is a hub id that still has to be downloaded."""
    offline = is_local(model) or cached_snapshot(model) is not None
    if offline:
        os.environ.update(OFFLINE_ENV)
    return offline


def model_dir(model: str) -> Path | None:
    """The local files of a model: its dir, or its cached snapshot."""
    return Path(model).expanduser().resolve() if is_local(model) else cached_snapshot(model)


def load_source(model: str) -> str:
    """What to hand from_pretrained: a local dir as an absolute path (a relative a/b looks like a hub id, to unsloth
    above all), a hub id as itself (offline, it resolves from the cache), so the adapter records the id."""
    return str(Path(model).expanduser().resolve()) if is_local(model) else model


def hub_id(model: str) -> str | None:
    """The hub id a model comes from: itself, the id of a hub-cache snapshot dir, or None for other local dirs."""
    if not is_local(model):
        return model
    for part in Path(model).expanduser().resolve().parts:
        if part.startswith("models--"):
            return part[len("models--") :].replace("--", "/", 1)
    return None


def fit_embeddings(model, tokenizer) -> None:
    """Grow the embeddings when the tokenizer gained tokens (the chat template's markers); new rows start at the
    mean embedding. PEFT then saves the resized embeddings with the adapter."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def load_trained(path: str | Path, device: str = "cpu", dtype=None):
    """(model, tokenizer) from a tc3 output: an adapter dir (base model + LoRA) or a merged model dir."""
    import torch
    from transformers import AutoModelForCausalLM

    from tc3.prompts import load_tokenizer

    path = Path(path)
    tokenizer = load_tokenizer(str(path))
    dtype = dtype or (torch.bfloat16 if device != "cpu" else torch.float32)
    adapter_config = path / "adapter_config.json"
    if not adapter_config.is_file():
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device), tokenizer
    from peft import PeftModel

    base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device_map=device)
    fit_embeddings(model, tokenizer)
    return PeftModel.from_pretrained(model, path), tokenizer
