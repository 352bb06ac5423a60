"""Descriptions from titles: load a fine-tuned model (merged, or a LoRA adapter over its base) and generate.

Every prompt goes through :mod:`tc3.prompts`, the same rendering the trainer used, so generation sees exactly the
prompt part of a training example. Generation

* stops on every end token the tokenizer has (its EOS and the chat template's end-of-turn markers: for Llama-3
  both ``<|eot_id|>`` and ``<|end_of_text|>``, for SmolLM2 ``<|im_end|>`` and ``<|endoftext|>``);
* never returns special tokens (decoding skips them, and the answer is cut at the first end token);
* is greedy by default, with a repetition penalty of 1.15 that only counts real tokens and never penalises an end
  token: left padding of a batch is not penalised, so a batch gives the same greedy answers as one title at a
  time, and the end-of-turn marker that every chat prompt contains does not make stopping harder;
* runs batches with left padding.

Questions around a title: a question such as ``What is 'Mog's Kittens' about?`` or ``O que é "Mog's Kittens"?``
is reduced to its title (:func:`title_from_query`) and asked with the settings' instruction ("pt" by default:
one of the training question templates, and the only one under ``questions: fixed``). Plain titles pass through
unchanged; ``literal=True`` (``--literal`` on the command line) turns the extraction off.

Model loading looks at a local path first and only then at the Hugging Face Hub, cache first, so it works offline
for anything local or cached. Mistakes (a bad path, an adapter whose base cannot be found) raise
:class:`UserError` with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError
from .models import check_model_ref
from .outputs import split_lines
from .prompts import end_token_ids, load_tokenizer, render_prompt, title_in_question


# --------------------------------------------------------------------------------------------------------------------
# Questions around a title


_QUOTES = [("'", "'"), ('"', '"'), ("\u2018", "\u2019"), ("\u201c", "\u201d"), ("\u00ab", "\u00bb"), ("`", "`")]
_QUESTION_LEAD = re.compile(
    r"^\s*(?:"
    r"what(?:'s|\s+is|\s+are|\s+was)|tell\s+me\s+about|describe|write\s+(?:a|the)\s+description\s+(?:of|for)|"
    r"o\s+que\s+(?:é|e|são|sao)|(?:me\s+)?fale(?:-me)?\s+sobre|descreva|qual\s+(?:é|e)\s+a\s+descrição\s+d[eoa]s?|"
    r"gere\s+(?:a|uma)\s+descrição\s+(?:de|para|do|da)"
    r")\s+(?P<title>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_QUESTION_TAIL = re.compile(r"\s+(?:about|sobre)$|\s*[?.!]+$", re.IGNORECASE)


def title_from_query(text: str, literal: bool = False) -> str:
    """The product title inside a question, or the text itself when it is not a question around a title.

    ``What is 'X' about?``, ``Tell me about "X"``, ``O que é “X”?``, ``Descreva X``, ``What is X about?`` give ``X``.
    A quoted title is taken verbatim; an unquoted one is taken only when the text starts like a question and
    ends with ``?`` (or is a ``describe``/``descreva`` request), so titles such as ``Who Moved My Cheese?`` or
    ``The "Real" Book`` are left alone.
    """
    text = text.strip()
    if literal or not text:
        return text
    known = title_in_question(text)  # phrased as one of the training or held-out question templates
    if known is not None:
        return known
    match = _QUESTION_LEAD.match(text)
    if match is None:
        return text
    rest = match.group("title").strip()
    # A quoted title: the outermost quoted span of the rest.
    for opening, closing in _QUOTES:
        start = rest.find(opening)
        end = rest.rfind(closing)
        if start == 0 and end > start:
            if not _strip_tail(" " + rest[end + 1 :]):
                return rest[start + 1 : end].strip()
    lead = text[: match.start("title")].strip().lower()
    if not (text.endswith("?") or lead.startswith(("describe", "descreva", "tell", "fale", "me fale", "write", "gere"))):
        return text
    return _strip_tail(rest) or text


def _strip_tail(text: str) -> str:
    """Drop trailing '?', '.', '!' and a final 'about'/'sobre', repeatedly."""
    text = text.rstrip()
    while True:
        stripped = _QUESTION_TAIL.sub("", text).rstrip()
        if stripped == text:
            return text.strip()
        text = stripped


# --------------------------------------------------------------------------------------------------------------------
# Loading


_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]


def _resolve(name: str, what: str) -> Path:
    """A local directory for a path or a Hub id (cache first, then the network unless HF_HUB_OFFLINE is set);
    tc3.models.check_model_ref has ruled out mistyped paths and unreachable hub ids within a second."""
    check_model_ref(name, what)
    path = Path(name).expanduser()
    if path.exists():
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise UserError(f"{what} '{name}' has neither config.json nor adapter_config.json")
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise UserError(f"{what} '{name}' is not a local directory nor in the Hub cache (HF_HUB_OFFLINE is set)")
    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
    except Exception as err:
        raise UserError(f"{what} '{name}' is not a local directory and not on the Hub: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    """An exception as one line for the user: its message's first line, or its type when it has none."""
    message = str(err).strip()
    return message.splitlines()[0] if message else type(err).__name__


def _default_device(device: str | None) -> str:
    if device and device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    name: str
    base: str | None = None
    device: str = "cpu"

    def close(self) -> None:
        """Drop the weights (eval runs two models one after the other)."""
        import gc

        self.model = None
        gc.collect()


def check_model(name: str, base: str | None = None) -> tuple[Path, str | None, Path, Path]:
    """Finds a model's files without loading them (a command calls it before any long work): its folder, the base
    of an adapter (None for a merged model), where its tokenizer and weights are. UserError when any is missing."""
    path = _resolve(name, "model")
    adapter_config = path / "adapter_config.json"
    base_name = None
    if adapter_config.is_file():
        try:
            config = json.loads(adapter_config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserError(f"adapter config {adapter_config} is unreadable: {err}") from None
        base_name = base or config.get("base_model_name_or_path")
        if not base_name:
            raise UserError(f"adapter '{name}' does not name its base model; pass --base DIR_OR_HUB_ID")
        try:
            base_path = _resolve(base_name, "adapter base model")
        except UserError as err:
            hint = "" if base else " (read from adapter_config.json; pass --base DIR_OR_HUB_ID to override)"
            raise UserError(f"{err}{hint}") from None
        if (base_path / "adapter_config.json").is_file() and not (base_path / "config.json").is_file():
            raise UserError(f"adapter base model '{base_name}' is itself an adapter")
        tokenizer_path = path if (path / "tokenizer_config.json").is_file() else base_path
        weights_path = base_path
    else:
        if base:
            raise UserError(f"--base was given but '{name}' is not an adapter (no adapter_config.json)")
        tokenizer_path = weights_path = path
    return path, base_name, tokenizer_path, weights_path


def load_model(name: str, base: str | None = None, device: str | None = None, dtype: str | None = None,
               merge: bool = True) -> LoadedModel:
    """A merged model directory/Hub id, or a PEFT adapter over its base.

    The base of an adapter is read from its ``adapter_config.json`` (``base_model_name_or_path``); ``base``
    overrides it. The tokenizer comes from the adapter directory when it has one (the trainer saves the tokenizer
    it trained with, template and added tokens included), otherwise from the base. The adapter is merged into the
    base for faster inference unless ``merge=False``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = _default_device(device)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    )
    if torch_dtype is None:
        raise UserError(f"unknown dtype '{dtype}' (float32, bfloat16, float16)")
    path, base_name, tokenizer_path, weights_path = check_model(name, base)
    try:
        tokenizer = load_tokenizer(str(tokenizer_path))  # chat template ensured, as the trainer does
        model = AutoModelForCausalLM.from_pretrained(str(weights_path), dtype=torch_dtype)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load '{weights_path}': {_first_line(err)}") from None
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if base_name is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(path))
        except Exception as err:  # shape mismatches, missing weights
            raise UserError(f"cannot apply adapter '{name}' to '{base_name}': {_first_line(err)}") from None
        if merge:
            model = model.merge_and_unload()
    prepare_tokenizer(tokenizer)
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, base=base_name, device=device)


def quiet_libraries() -> None:
    """No progress bars or advisory warnings from transformers on a command line's stderr."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def prepare_tokenizer(tokenizer) -> None:
    """Left padding for batched generation, and a pad token (the EOS when there is none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


# --------------------------------------------------------------------------------------------------------------------
# Generation


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    repetition_penalty: float = 1.15
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    seed: int | None = None
    instruction: str = "pt"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Ask:
    """One prompt to answer: a title, its question (None: the settings' instruction) and an optional context record
    (``uid``, ``title``, ``description``) that grounds the answer."""

    title: str
    question: str | None = None
    context: dict | None = None


def as_ask(item: str | Ask) -> Ask:
    return item if isinstance(item, Ask) else Ask(item)


@dataclass
class Generation:
    title: str
    description: str
    tokens: int  # new tokens of the answer, the end token not counted
    seconds: float  # wall time of its batch shared among the batch's titles
    stopped: bool  # ended with an end token before max_new_tokens
    extra: dict = field(default_factory=dict)

    def as_record(self) -> dict:
        record = {"title": self.title, "description": self.description, "tokens": self.tokens,
                  "seconds": round(self.seconds, 4), "stopped": self.stopped}
        record.update(self.extra)
        return record


class PaddedRepetitionPenalty:
    """CTRL's repetition penalty (as in transformers) over the real tokens only, end tokens exempt.

    transformers' own processor penalises every id in ``input_ids``, pads included; when the pad token is an end
    token (pad = EOS is common) a padded row would be pushed away from stopping and batch and single generation
    would disagree. And every chat prompt holds the end-of-turn marker (it closes the system and user turns), so
    the plain processor also penalises the very token that ends the answer. Measured on SmolLM2-135M (50 titles,
    160 new tokens, penalty 1.15): with end tokens penalised the fine-tuned model stopped by itself 6% of the time
    and looped 20%; exempt, 54% and 0% (the untouched model: 10% -> 40%). The penalty is for repeated content, so
    end tokens are never penalised.
    """

    def __init__(self, penalty: float, attention_mask, exempt_ids=()):
        self.penalty = penalty
        self.prompt_mask = attention_mask.bool()
        self.exempt_ids = list(exempt_ids)

    def __call__(self, input_ids, scores):
        import torch

        batch, length = input_ids.shape
        valid = torch.ones((batch, length), dtype=torch.bool, device=input_ids.device)
        prompt_length = self.prompt_mask.shape[1]
        valid[:, :prompt_length] = self.prompt_mask.to(input_ids.device)
        seen = torch.zeros_like(scores)
        seen.scatter_add_(1, input_ids, valid.to(scores.dtype))
        if self.exempt_ids:
            seen[:, self.exempt_ids] = 0
        picked = scores.masked_select(seen > 0)
        penalised = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.masked_scatter(seen > 0, penalised)


def _generation_config(model, tokenizer, settings: GenerationSettings):
    from transformers import GenerationConfig

    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        eos_token_id=end_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return GenerationConfig(**kwargs)


def _encode(tokenizer, asks: list[Ask], instruction: str, device: str):
    prompts = [render_prompt(tokenizer, a.title, a.question or instruction, a.context) for a in asks]
    prepare_tokenizer(tokenizer)
    return tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(device)


def _processors(settings: GenerationSettings, attention_mask, tokenizer):
    from transformers import LogitsProcessorList

    processors = LogitsProcessorList()
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors.append(PaddedRepetitionPenalty(settings.repetition_penalty, attention_mask,
                                                  exempt_ids=end_token_ids(tokenizer)))
    return processors


def _seed(settings: GenerationSettings) -> None:
    if settings.do_sample and settings.seed is not None:
        from transformers import set_seed

        set_seed(settings.seed)


def split_answer(tokenizer, new_ids: list[int]) -> tuple[str, int, bool]:
    """(text, tokens, stopped) of one row of new token ids: cut at the first end token, special tokens dropped."""
    ends = set(end_token_ids(tokenizer))
    stop = next((i for i, token in enumerate(new_ids) if token in ends), None)
    content = new_ids if stop is None else new_ids[:stop]
    text = tokenizer.decode(content, skip_special_tokens=True).strip()
    return text, len(content), stop is not None


def generate_batch(loaded: LoadedModel, titles: Iterable[str | Ask], settings: GenerationSettings | None = None,
                   batch_size: int = 8, progress=None) -> list[Generation]:
    """One answer a title (or Ask), batch by batch with left padding. ``progress(done, total)`` after each batch."""
    import torch

    settings = settings or GenerationSettings()
    model, tokenizer = loaded.model, loaded.tokenizer
    titles = [as_ask(t) for t in titles]
    config = _generation_config(model, tokenizer, settings)
    _seed(settings)
    results: list[Generation] = []
    for start in range(0, len(titles), max(1, batch_size)):
        chunk = titles[start : start + max(1, batch_size)]
        inputs = _encode(tokenizer, chunk, settings.instruction, loaded.device)
        began = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, generation_config=config,
                                    logits_processor=_processors(settings, inputs["attention_mask"], tokenizer))
        seconds = (time.perf_counter() - began) / len(chunk)
        new = output[:, inputs["input_ids"].shape[1] :].tolist()
        for ask, row in zip(chunk, new):
            text, tokens, stopped = split_answer(tokenizer, row)
            results.append(Generation(title=ask.title, description=text, tokens=tokens, seconds=seconds,
                                      stopped=stopped))
        if progress is not None:
            progress(len(results), len(titles))
    return results


def generate_one(loaded: LoadedModel, title: str | Ask, settings: GenerationSettings | None = None) -> Generation:
    return generate_batch(loaded, [title], settings, batch_size=1)[0]


class Stream:
    """Iterate to receive the answer as text pieces, token by token; ``result`` holds the Generation afterwards."""

    def __init__(self, loaded: LoadedModel, title: str | Ask, settings: GenerationSettings | None = None):
        self.loaded, self.ask, self.settings = loaded, as_ask(title), settings or GenerationSettings()
        self.result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        inputs = _encode(tokenizer, [self.ask], self.settings.instruction, self.loaded.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        config = _generation_config(model, tokenizer, self.settings)
        holder: dict = {}

        def work():
            try:
                with torch.inference_mode():
                    holder["output"] = model.generate(
                        **inputs, generation_config=config, streamer=streamer,
                        logits_processor=_processors(self.settings, inputs["attention_mask"], tokenizer),
                    )
            except BaseException as err:  # surfaced in the consumer
                holder["error"] = err
                streamer.end()

        _seed(self.settings)
        began = time.perf_counter()
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        started = False
        for piece in streamer:
            if not started:  # the answer as the batch path returns it: no leading whitespace
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece
        thread.join()
        if "error" in holder:
            raise holder["error"]
        row = holder["output"][0, inputs["input_ids"].shape[1] :].tolist()
        text, tokens, stopped = split_answer(tokenizer, row)
        self.result = Generation(title=self.ask.title, description=text, tokens=tokens,
                                 seconds=time.perf_counter() - began, stopped=stopped)


# --------------------------------------------------------------------------------------------------------------------
# Inputs


class Titles(list):
    """The records of `read_titles` (dicts with ``title`` and, where the input has them, ``uid``); `skipped` holds
    the line numbers of JSONL rows whose title is empty, left out and reported rather than answered."""

    skipped: list[int]

    def __init__(self, records=(), skipped=()):
        super().__init__(records)
        self.skipped = list(skipped)


def read_titles(path: str | os.PathLike, split: str = "validation") -> Titles:
    """Titles from a text file (one a line), a JSONL file (objects with ``title``), or a tc3-prep output directory
    (``data/{split}-*.parquet``). Only ``\n`` ends a line (tc3.outputs.split_lines). A JSONL row with an empty
    title is skipped and its line number kept in ``skipped``. UserError for an input that cannot be read or
    holds no title."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input '{path}' does not exist")
    if path.is_dir():
        records = Titles({k: r[k] for k in ("uid", "title") if k in r} for r in read_prep_split(path, split))
    else:
        records = _read_title_file(path)
    if not records:
        why = " (every row's title is empty)" if records.skipped else ""
        raise UserError(f"input '{path}' holds no title{why}")
    return records


def _read_title_file(path: Path) -> Titles:
    try:
        lines = split_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read '{path}': {err}") from None
    records = Titles()
    first = next((line for line in lines if line.strip()), "")
    jsonl = path.suffix in {".jsonl", ".ndjson"} or first.lstrip().startswith("{")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise UserError(f"{path}:{number}: not JSON: {err}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("title"), str):
                raise UserError(f"{path}:{number}: a JSON line needs a string 'title'")
            if not obj["title"].strip():
                records.skipped.append(number)
                continue
            records.append({k: obj[k] for k in ("uid", "title") if k in obj})
        else:
            records.append({"title": line.strip()})
    return records


def read_prep_split(directory: str | os.PathLike, split: str) -> list[dict]:
    """Rows (``uid``, ``title``, ``description``) of one split of a tc3-prep output directory."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    files = sorted((directory / "data").glob(f"{split}-*.parquet")) or sorted(directory.glob(f"{split}-*.parquet"))
    if not files:
        raise UserError(f"'{directory}' has no {split} split (expected data/{split}-*.parquet from tc3-prep)")
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
