"""Where a model comes from (local dir, cached or remote hub id) and loading what training produced."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from dataclasses import dataclass
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
        check_model_folder(model, what)
        return
    if (model.startswith((".", "/", "~")) or model.count("/") > 1 or not _HUB_ID.match(model)
            or ("/" in model and Path(model.split("/", 1)[0]).expanduser().is_dir())):
        raise UserError(f"{what} '{model}' does not exist")
    if _snapshots(model).is_dir():
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        raise not_found(what, model, "HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise not_found(what, model, "the Hub cannot be reached")


def not_found(what: str, ref: str, why: str) -> UserError:
    """The one wording of a model that is neither a local folder nor a hub id tc3 can get, `why` saying why not."""
    return UserError(f"{what} '{ref}' is not a local folder nor in the Hub cache ({why})")


# Files of which a model folder with config.json has at least one: what its tokenizer loads from.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "tokenizer.tiktoken")


def check_model_folder(ref: str, what: str = "model", adapter: bool = False, files: bool = True) -> Path:
    """The one check, and wording, of a local model folder for every command: `ref` must be a folder with
    config.json (a model, with its tokenizer) or adapter_config.json (an adapter; with `adapter`, only that);
    `files=False` checks only that it is a folder (a caller that looks for files of its own). Returns it as a Path;
    a UserError naming what is missing otherwise, before anything loads."""
    path = Path(ref).expanduser()
    if not path.exists():
        raise UserError(f"{what} '{ref}' does not exist")
    if not path.is_dir():
        raise UserError(f"{what} '{ref}' is a file, not a model folder")
    if not files:
        return path
    is_adapter, is_model = (path / "adapter_config.json").is_file(), (path / "config.json").is_file()
    if adapter and not is_adapter:
        raise UserError(f"{what} '{ref}' is not an adapter folder (it has no adapter_config.json)")
    if not (is_adapter or is_model):
        raise UserError(f"{what} '{ref}' is not a model folder (it has neither config.json nor adapter_config.json)")
    if not is_adapter and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{what} '{ref}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    return path


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


def _snapshots(model: str) -> Path:
    """Where the Hub cache keeps the snapshots of a hub id."""
    return hub_cache_dir() / f"models--{model.replace('/', '--')}" / "snapshots"


def cached_snapshot(model: str) -> Path | None:
    """The cached snapshot dir of a hub id, if it was downloaded before (looked up without importing the hub client,
    whose offline switch is frozen at import)."""
    snapshots = _snapshots(model)
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


_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
DTYPES = ("float32", "bfloat16", "float16")


def resolve(name: str, what: str = "model") -> Path:
    """A local directory for a path or a Hub id (cache first, then the network unless HF_HUB_OFFLINE is set);
    check_model_ref has ruled out mistyped paths and unreachable hub ids within a second. Raises UserError."""
    check_model_ref(name, what)
    path = Path(name).expanduser()
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        raise not_found(what, name, "HF_HUB_OFFLINE is set")
    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
    except Exception as err:
        raise not_found(what, name, f"the Hub says: {first_line(err)}") from None


def first_line(err: BaseException) -> str:
    """An exception as one line for the user: its message's first line, or its type when it has none."""
    message = str(err).strip()
    return message.splitlines()[0] if message else type(err).__name__


DEVICES = "cpu, cuda, cuda:N, mps or auto"


def default_device(device: str | None) -> str:
    """The one device policy of every command: the torch device to run on, `device` as given (cpu, cuda, cuda:N,
    mps) or, for None and "auto", cuda when a CUDA GPU is there, else cpu. A UserError, before any model loads,
    for a name that is no device (`gpu`) or a device this machine lacks (cuda without a GPU or a CUDA build)."""
    import torch

    if not device or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"--device {device} is not a device ({DEVICES})")
    if kind == "cuda" and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise UserError(f"--device {device}: {why}; use --device cpu (or auto)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: MPS (Apple GPU) is not available here; use --device cpu (or auto)")
    return device


def adapter_base(path: Path, base: str | None = None) -> str | None:
    """The base model an adapter dir names (``base`` overrides it), or None when ``path`` is not an adapter."""
    adapter_config = path / "adapter_config.json"
    if not adapter_config.is_file():
        return None
    try:
        config = json.loads(adapter_config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"adapter config {adapter_config} is unreadable: {err}") from None
    found = base or config.get("base_model_name_or_path")
    if not found:
        raise UserError(f"adapter '{path}' does not name its base model; pass --base DIR_OR_HUB_ID")
    return found


def is_quantized(model_or_dir) -> bool:
    """Whether a model (or a model dir's config.json) holds quantized weights (bitsandbytes 4/8-bit, GPTQ ...)."""
    if isinstance(model_or_dir, (str, Path)):
        config = Path(model_or_dir) / "config.json"
        return config.is_file() and "quantization_config" in json.loads(config.read_text(encoding="utf-8"))
    return bool(getattr(model_or_dir, "is_quantized", False)
                or getattr(getattr(model_or_dir, "config", None), "quantization_config", None))


def fingerprint(name: str, base: str | None = None) -> dict:
    """What identifies a model's weights without loading them: for a local dir its files (name, size, mtime), for a
    Hub id its cached snapshot (the commit); an adapter adds its base's. The eval cache is keyed by it."""

    def one(ref: str) -> dict:
        path = Path(ref).expanduser()
        if path.is_dir():
            files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
            return {"path": str(path.resolve()), "files": files}
        snapshot = cached_snapshot(ref)
        return {"hub_id": ref, "revision": snapshot.name if snapshot else None}

    found = one(name)
    path = Path(name).expanduser()
    its_base = adapter_base(path, base) if path.is_dir() else base
    if its_base:
        found["base"] = one(its_base)
    return found


def check_model(name: str, base: str | None = None) -> tuple[Path, str | None, Path, Path]:
    """Finds a model's files without loading them (a command calls it before any long work): its folder, the base
    of an adapter (None for a merged model), where its tokenizer and weights are. UserError when any is missing."""
    path = resolve(name, "model")
    base_name = adapter_base(path, base)
    if base_name is None:
        if base:
            raise UserError(f"--base was given but '{name}' is not an adapter (no adapter_config.json)")
        return path, None, path, path
    try:
        base_path = resolve(base_name, "adapter base model")
    except UserError as err:
        hint = "" if base else " (read from adapter_config.json; pass --base DIR_OR_HUB_ID to override)"
        raise UserError(f"{err}{hint}") from None
    if (base_path / "adapter_config.json").is_file() and not (base_path / "config.json").is_file():
        raise UserError(f"adapter base model '{base_name}' is itself an adapter")
    tokenizer_path = path if (path / "tokenizer_config.json").is_file() else base_path
    return path, base_name, tokenizer_path, base_path


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    name: str
    base: str | None = None
    device: str = "cpu"
    merged: bool = False  # an adapter merged into its base (False: applied on the fly, or no adapter)

    def close(self) -> None:
        """Drop the weights (eval runs several models one after the other)."""
        import gc

        self.model = None
        gc.collect()


def load_model(name: str, base: str | None = None, device: str | None = None, dtype: str | None = None,
               merge: bool | None = None) -> LoadedModel:
    """The one loading path of generate, eval, export and demo: a merged model dir/Hub id, or a PEFT adapter over
    its base, ready to generate (eval mode, left padding).

    The base of an adapter is read from its ``adapter_config.json`` (``base_model_name_or_path``); ``base``
    overrides it. The tokenizer comes from the adapter directory when it has one (the trainer saves the tokenizer
    it trained with, template and added tokens included), otherwise from the base. ``dtype``: float32, bfloat16 or
    float16 (default bf16 on CUDA, fp32 on CPU). ``merge=None`` merges the adapter into a full-precision base and
    keeps it unmerged over a quantized one: merging into 4-bit weights re-rounds them and changes the answers;
    ``merge=True`` on a quantized base is refused. Raises UserError with a one-line message.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from tc3.prompts import load_tokenizer

    device = default_device(device)
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}' ({', '.join(DTYPES)})")
    path, base_name, tokenizer_path, weights_path = check_model(name, base)
    quantized = is_quantized(weights_path)
    if merge and quantized:
        raise UserError(f"'{base_name}' is quantized: merging an adapter into it would change its answers")
    try:
        tokenizer = load_tokenizer(str(tokenizer_path))  # chat template ensured, as the trainer does
        # A quantized base is placed by its quantizer; a full-precision one is moved below.
        placement = {"device_map": device} if quantized else {}
        model = AutoModelForCausalLM.from_pretrained(str(weights_path), dtype=getattr(torch, dtype), **placement)
    except (OSError, ValueError, ImportError) as err:
        raise UserError(f"cannot load '{weights_path}': {first_line(err)}") from None
    fit_embeddings(model, tokenizer)
    merged = False
    if base_name is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(path))
        except Exception as err:  # shape mismatches, missing weights
            raise UserError(f"cannot apply adapter '{name}' to '{base_name}': {first_line(err)}") from None
        if merge is not False and not quantized:
            model, merged = model.merge_and_unload(), True
    prepare_tokenizer(tokenizer)
    if not quantized:
        model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, base=base_name, device=device, merged=merged)


def prepare_tokenizer(tokenizer) -> None:
    """Left padding for batched generation, and a pad token (the EOS when there is none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_trained(path: str | Path, device: str = "cpu", dtype=None):
    """(model, tokenizer) from a tc3 output (an adapter dir or a merged model dir), through :func:`load_model`."""
    import torch

    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    loaded = load_model(str(path), device=device, dtype=names.get(dtype, dtype), merge=False)
    return loaded.model, loaded.tokenizer
