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


def looks_like_hub_id(ref: str) -> bool:
    """Whether `ref` has the shape of a hub id, `name` or `owner/name` (never a path: no leading `.`, `/`, `~`, at
    most one `/`). The one test of every command; `hub_id` says which id a local folder comes from."""
    return bool(_HUB_ID.match(ref))


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
    if not looks_like_hub_id(model) or ("/" in model and Path(model.split("/", 1)[0]).expanduser().is_dir()):
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


def is_quantized(model_or_config) -> bool:
    """Whether weights are stored quantized (bitsandbytes 4/8-bit, GPTQ ...): the one test, of a loaded model, a
    transformers config, a parsed config.json (a dict) or a model dir (its config.json)."""
    if isinstance(model_or_config, (str, Path)):
        config = Path(model_or_config) / "config.json"
        model_or_config = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    if isinstance(model_or_config, dict):
        return "quantization_config" in model_or_config
    return bool(getattr(model_or_config, "is_quantized", False)
                or getattr(model_or_config, "quantization_config", None)
                or getattr(getattr(model_or_config, "config", None), "quantization_config", None))


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    name: str
    base: str | None = None
    device: str = "cpu"
    merged: bool = False  # an adapter merged into its base (False: applied on the fly, or no adapter)
    precision: str = "fp32"  # what the weights were loaded in (tc3.runtime)

    def close(self) -> None:
        """Drop the weights (eval runs several models one after the other)."""
        import gc

        self.model = None
        gc.collect()


def load_model(model, base: str | None = None, device: str | None = None, dtype: str | None = None,
               merge: bool | None = None) -> LoadedModel:
    """The one loading path of generate, eval, export and demo: a merged model dir/Hub id, or a PEFT adapter over
    its base, ready to generate (eval mode, left padding).

    ``model``: a tc3.model_ref.ResolvedModel, or a name resolved here (`resolve_model`: the base of an adapter from
    its ``adapter_config.json``, ``base`` overriding it; the tokenizer from the adapter directory when it has one,
    template and added tokens included, else from the base). ``dtype``: a precision (fp32, bf16, fp16; torch's
    names too), default `tc3.runtime.inference_precision`: on CUDA the one the model was trained in (its saved
    plan), fp32 on CPU. ``merge=None`` merges the adapter into a full-precision base and keeps it unmerged over a
    quantized one: merging into 4-bit weights re-rounds them and changes the answers; ``merge=True`` on a quantized
    base is refused. Raises UserError with a one-line message.
    """
    from tc3.model_ref import ResolvedModel, resolve_model
    from tc3.runtime import default_device, inference_precision, precision_of

    ref = (model.over(base) if base else model) if isinstance(model, ResolvedModel) else resolve_model(model, base)
    device = default_device(device)
    precision = precision_of(dtype) if dtype else inference_precision(device, ref.plan and ref.plan.precision)
    if merge and ref.quantized:
        raise UserError(f"'{ref.base}' is quantized: merging an adapter into it would change its answers")
    loaded_model, tokenizer = _load_weights(ref, device, precision)
    merged = False
    if ref.is_adapter:
        from peft import PeftModel

        try:
            loaded_model = PeftModel.from_pretrained(loaded_model, str(ref.path))
        except Exception as err:  # shape mismatches, missing weights
            raise UserError(f"cannot apply adapter '{ref.name}' to '{ref.base}': {first_line(err)}") from None
        if merge is not False and not ref.quantized:
            loaded_model, merged = loaded_model.merge_and_unload(), True
    prepare_tokenizer(tokenizer)
    if not ref.quantized:
        loaded_model.to(device)
    loaded_model.eval()
    return LoadedModel(model=loaded_model, tokenizer=tokenizer, name=ref.name, base=ref.base, device=device,
                       merged=merged, precision=precision)


def _load_weights(ref, device: str, precision: str):
    """(the base or whole model, in `precision`, its embeddings fitted to the tokenizer; the tokenizer)."""
    from transformers import AutoModelForCausalLM

    from tc3.prompts import load_tokenizer
    from tc3.runtime import torch_dtype

    try:
        tokenizer = load_tokenizer(str(ref.tokenizer_path))  # chat template ensured, as the trainer does
        # A quantized base is placed by its quantizer; a full-precision one is moved by load_model.
        placement = {"device_map": device} if ref.quantized else {}
        model = AutoModelForCausalLM.from_pretrained(str(ref.weights.path), dtype=torch_dtype(precision), **placement)
    except (OSError, ValueError, ImportError) as err:
        raise UserError(f"cannot load '{ref.weights.path}': {first_line(err)}") from None
    fit_embeddings(model, tokenizer)
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Left padding for batched generation, and a pad token (the EOS when there is none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_trained(path: str | Path, device: str = "cpu", dtype=None):
    """(model, tokenizer) from a tc3 output (an adapter dir or a merged model dir), through :func:`load_model`;
    `dtype`: a precision or a torch dtype."""
    loaded = load_model(str(path), device=device, dtype=dtype and str(dtype), merge=False)
    return loaded.model, loaded.tokenizer
