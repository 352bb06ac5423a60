"""Descriptions from titles: load a fine-tuned model (merged, or a LoRA adapter over its base) and generate.

Every prompt goes through :mod:`tc3.prompts`, the same rendering the trainer used, so generation sees exactly the
prompt part of a training example. Generation

* stops on every end token the tokenizer has (its EOS and the chat template's end-of-turn markers: for Llama-3
  both ``<|eot_id|>`` and ``<|end_of_text|>``, for SmolLM2 ``<|im_end|>`` and ``<|endoftext|>``);
* never returns special tokens (decoding skips them, and the answer is cut at the first end token), and decodes
  with ``clean_up_tokenization_spaces=False``: the clean-up deletes real spaces ("the word 'social'" became
  "the word'social'" on some transformers versions);
* is greedy by default, with a repetition penalty of 1.15 that counts only the tokens the model generated (the
  prompt's too with ``penalize_prompt``) and never penalises an end token, so the title's words are not pushed out
  of the answer;
* runs batches with left padding, never counted by the penalty. In fp32 a batch gives the same greedy answers as
  one title at a time; in bf16 (the CUDA default) it need not: padding changes the shapes of the matrix products,
  their rounding, and so a near-tie between two tokens (`benches/gpu/batch_agreement.py` measures the share).

Questions around a title: a question such as ``What is 'Mog's Kittens' about?`` or ``O que é "Mog's Kittens"?``
is reduced to its title (:func:`title_from_query`) and asked with the settings' instruction ("en" by default, the
references' language; "pt" and any literal instruction stay available). Plain titles pass through
unchanged; ``literal=True`` (``--literal`` on the command line) turns the extraction off.

Model loading (:func:`tc3.models.load_model`, the one path of every command) looks at a local path first and only
then at the Hugging Face Hub, cache first, so it works offline for anything local or cached. Mistakes (a bad path,
an adapter whose base cannot be found) raise :class:`tc3.errors.UserError` with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError
from .layout import PrepDir
from .models import LoadedModel, load_model, prepare_tokenizer  # noqa: F401 (the CLIs' imports)
from .outputs import split_lines
from .prompts import end_token_ids, prompt_ids, title_in_question
from .sniff import describe, read_head
from .user_text import accept


# --------------------------------------------------------------------------------------------------------------------
# Questions around a title


_QUOTES = [("'", "'"), ('"', '"'), ("\u2018", "\u2019"), ("\u201c", "\u201d"), ("\u00ab", "\u00bb"), ("`", "`")]
_QUESTION_LEAD = re.compile(
    r"^\s*(?:"
    r"what(?:'s|\s+is|\s+are|\s+was)|tell\s+me\s+about|describe|write\s+(?:a|the)\s+description\s+(?:of|for)|"
    r"o\s+que\s+(?:é|e|são|sao)|(?:me\s+)?fale(?:-me)?\s+sobre|descreva|qual\s+(?:é|e)\s+a\s+descrição\s+d[eoa]s?|"
    r"gere\s+(?:a|uma)\s+descrição\s+(?:de|para|do|da)"
    r")(?=\s)",  # the title after white space: sliced off with str methods, no `.+?` before `\s*$` to backtrack
    re.IGNORECASE,
)
_TAIL_WORDS = ("about", "sobre")


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
    rest = text[match.end() :].strip()
    # A quoted title: the outermost quoted span of the rest.
    for opening, closing in _QUOTES:
        start = rest.find(opening)
        end = rest.rfind(closing)
        if start == 0 and end > start:
            if not _strip_tail(" " + rest[end + 1 :]):
                return rest[start + 1 : end].strip()
    lead = text[: match.end()].strip().lower()
    if not (text.endswith("?") or lead.startswith(("describe", "descreva", "tell", "fale", "me fale", "write", "gere"))):
        return text
    return _strip_tail(rest) or text


def read_as(text: str, title: str) -> str | None:
    """The line that says which title a question was read as (None when the text was the title itself)."""
    return None if title == text.strip() else f'(read as the title "{title}")'


def _strip_tail(text: str) -> str:
    """Drop trailing '?', '.', '!' and a final 'about'/'sobre' (after white space), repeatedly; linear time."""
    end = len(text)
    while True:
        while end and (text[end - 1].isspace() or text[end - 1] in "?.!"):
            end -= 1
        for word in _TAIL_WORDS:
            start = end - len(word)
            if start > 0 and text[start:end].lower() == word and text[start - 1].isspace():
                end = start
                break
        else:
            return text[:end].strip()


def quiet_libraries() -> None:
    """No progress bars or advisory warnings from transformers on a command line's stderr."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


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
    instruction: str = "en"  # the references' language: see tc3.prompts.INSTRUCTIONS ("pt" stays available)
    penalize_prompt: bool = False  # True: the repetition penalty also counts the prompt's tokens (transformers' way)

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
    """CTRL's repetition penalty (as in transformers) over the generated tokens only, end tokens exempt.

    transformers' own processor penalises every id in ``input_ids``: the prompt's too. The title's words and, in
    a grounded prompt, the record's are exactly the words a good answer reuses, so by default only tokens the
    model has generated count (``penalize_prompt=True`` also counts the prompt's real tokens, the old behaviour;
    left padding is never counted, so padding alone changes no penalty). End tokens
    are never penalised: every chat prompt holds the end-of-turn marker, and penalising it made SmolLM2 stop far
    less (50 titles, 160 new tokens, penalty 1.15: the fine-tuned model stopped by itself 6% of the time and
    looped 20% with end tokens penalised; exempt, 54% and 0%).
    """

    def __init__(self, penalty: float, attention_mask, exempt_ids=(), penalize_prompt: bool = False):
        self.penalty = penalty
        # which prompt positions count: the real tokens, or none
        self.prompt_mask = attention_mask.bool() & penalize_prompt
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


def decoding_fields(settings: GenerationSettings) -> dict:
    """Every GenerationConfig field that decides which tokens come out, as tc3 sets it (JSON-safe).

    transformers' own repetition penalty and n-gram ban are off (tc3's penalty is a logits processor,
    :class:`PaddedRepetitionPenalty`); greedy decoding names neutral sampling values rather than leaving them unset.
    """
    sampling = settings.do_sample
    return dict(
        max_new_tokens=settings.max_new_tokens, min_new_tokens=0, do_sample=sampling, num_beams=1,
        temperature=settings.temperature if sampling else 1.0, top_p=settings.top_p if sampling else 1.0,
        top_k=settings.top_k if sampling else 0, repetition_penalty=1.0, no_repeat_ngram_size=0,
    )


def settings_used(settings: GenerationSettings) -> dict:
    """The decoding generate() runs with (tc3-generate's JSONL rows and tc3-eval's report record it): the
    GenerationConfig fields of :func:`decoding_fields` (nothing else: the model's ``generation_config.json`` fills
    no field, see :func:`run_generate`) and tc3's repetition penalty, which counts the generated tokens (the
    prompt's too with ``penalize_prompt``) and never an end token."""
    penalty = settings.repetition_penalty or 1.0
    return {**decoding_fields(settings), "tc3_repetition_penalty": penalty,
            "tc3_penalty_counts": "prompt and generated tokens" if settings.penalize_prompt else "generated tokens",
            "tc3_penalty_exempt": "end tokens"}


def _generation_config(tokenizer, settings: GenerationSettings):
    from transformers import GenerationConfig

    return GenerationConfig(**decoding_fields(settings), eos_token_id=end_token_ids(tokenizer),
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)


def run_generate(model, inputs, settings: GenerationSettings, tokenizer, **kwargs):
    """``model.generate`` with tc3's settings and nothing else.

    transformers fills every field a passed GenerationConfig leaves unset from the model's own
    ``generation_config.json`` (a hub model's ``repetition_penalty: 1.8`` or ``no_repeat_ngram_size: 2`` would
    apply although tc3 asked for neither), and some "off" values cannot be written as set. So the model's
    generation config is transformers' defaults while it generates (`_defaults_only`), and its own afterwards.
    """
    with _defaults_only(model):
        return model.generate(**inputs, generation_config=_generation_config(tokenizer, settings),
                              logits_processor=_processors(settings, inputs["attention_mask"], tokenizer), **kwargs)


_SWAP_LOCK = threading.Lock()
_SWAPPED: dict[int, list] = {}  # id of a model generating now -> [generations running, its own generation config]


@contextmanager
def _defaults_only(model):
    """The model's generation config replaced by transformers' defaults (on the transformers model under a PEFT
    wrapper), and given back when the last generation running on it ends: concurrent streams share the swap."""
    from transformers import GenerationConfig

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    with _SWAP_LOCK:
        entry = _SWAPPED.setdefault(id(inner), [0, inner.generation_config])
        entry[0] += 1
        inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        with _SWAP_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                inner.generation_config = entry[1]
                del _SWAPPED[id(inner)]


def _encode(tokenizer, asks: list[Ask], instruction: str, device: str):
    ids = [prompt_ids(tokenizer, a.title, a.question or instruction, a.context) for a in asks]  # markup is text
    prepare_tokenizer(tokenizer)
    return tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(device)


def _processors(settings: GenerationSettings, attention_mask, tokenizer):
    from transformers import LogitsProcessorList

    processors = LogitsProcessorList()
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors.append(PaddedRepetitionPenalty(settings.repetition_penalty, attention_mask,
                                                  exempt_ids=end_token_ids(tokenizer),
                                                  penalize_prompt=settings.penalize_prompt))
    return processors


def _seed(settings: GenerationSettings) -> None:
    if settings.do_sample and settings.seed is not None:
        from transformers import set_seed

        set_seed(settings.seed)


# How every answer is decoded: no special tokens, and no "clean-up" of spaces (it deletes real ones: "word 'x'").
DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


def split_answer(tokenizer, new_ids: list[int]) -> tuple[str, int, bool]:
    """(text, tokens, stopped) of one row of new token ids: cut at the first end token, special tokens dropped."""
    ends = set(end_token_ids(tokenizer))
    stop = next((i for i, token in enumerate(new_ids) if token in ends), None)
    content = new_ids if stop is None else new_ids[:stop]
    text = tokenizer.decode(content, **DECODE).strip()
    return text, len(content), stop is not None


def model_positions(model) -> int | None:
    """The longest sequence (prompt and answer, in tokens) the model's config allows; None when it names none."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(loaded: LoadedModel, asks: list[Ask], inputs, settings: GenerationSettings) -> None:
    """UserError, before generating, when an ask's prompt (a row of the encoded, padded batch `inputs`) and
    `max_new_tokens` do not fit in the model's positions: said, never truncated or run past them."""
    positions = model_positions(loaded.model)
    if positions is None:
        return
    for ask, length in zip(asks, inputs["attention_mask"].sum(dim=1).tolist()):
        if length + settings.max_new_tokens > positions:
            title = ask.title if len(ask.title) <= 60 else ask.title[:59] + "…"
            raise UserError(f'the prompt for "{title}" is {length:,} tokens; with {settings.max_new_tokens:,} new '
                            f"tokens (--max-new-tokens) that is more than the model's {positions:,} positions: "
                            "shorten the title or lower --max-new-tokens")


def generate_batch(loaded: LoadedModel, titles: Iterable[str | Ask], settings: GenerationSettings | None = None,
                   batch_size: int = 8, progress=None) -> list[Generation]:
    """One answer a title (or Ask), batch by batch with left padding. ``progress(done, total)`` after each batch."""
    import torch

    settings = settings or GenerationSettings()
    model, tokenizer = loaded.model, loaded.tokenizer
    titles = [as_ask(t) for t in titles]
    _seed(settings)
    results: list[Generation] = []
    for start in range(0, len(titles), max(1, batch_size)):
        chunk = titles[start : start + max(1, batch_size)]
        inputs = _encode(tokenizer, chunk, settings.instruction, loaded.device)
        check_fits(loaded, chunk, inputs, settings)
        began = time.perf_counter()
        with torch.inference_mode():
            output = run_generate(model, inputs, settings, tokenizer)
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
    """Iterate to receive the answer as text pieces, token by token; ``result`` holds the Generation afterwards.

    The model runs in a thread of its own. When the consumer goes before the answer is complete (the iterator
    closed or collected: a demo client cancelled or gone, Ctrl-C in the interactive loop), generation stops
    at its next token and the thread is joined before the consumer goes on: an abandoned answer never keeps
    generating beside the next one.
    """

    def __init__(self, loaded: LoadedModel, title: str | Ask, settings: GenerationSettings | None = None):
        self.loaded, self.ask, self.settings = loaded, as_ask(title), settings or GenerationSettings()
        self.result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        inputs = _encode(tokenizer, [self.ask], self.settings.instruction, self.loaded.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=600, **DECODE)
        holder: dict = {}
        check_fits(self.loaded, [self.ask], inputs, self.settings)
        cancel = threading.Event()  # set when the consumer goes: generation stops at its next token

        def work():
            try:
                with torch.inference_mode():
                    holder["output"] = run_generate(model, inputs, self.settings, tokenizer, streamer=streamer,
                                                    stopping_criteria=StoppingCriteriaList([Cancelled(cancel)]))
            except BaseException as err:  # surfaced in the consumer
                holder["error"] = err
                streamer.end()

        _seed(self.settings)
        began = time.perf_counter()
        thread = threading.Thread(target=work, daemon=True, name="tc3-stream")
        thread.start()
        try:
            started = False
            for piece in streamer:
                if not started:  # the answer as the batch path returns it: no leading whitespace
                    piece = piece.lstrip()
                    started = bool(piece)
                if piece:
                    yield piece
        finally:  # also when the consumer left mid-answer (GeneratorExit, KeyboardInterrupt)
            cancel.set()
            thread.join()
        if "error" in holder:
            raise holder["error"]
        row = holder["output"][0, inputs["input_ids"].shape[1] :].tolist()
        text, tokens, stopped = split_answer(tokenizer, row)
        self.result = Generation(title=self.ask.title, description=text, tokens=tokens,
                                 seconds=time.perf_counter() - began, stopped=stopped)


class Cancelled:
    """A stopping criterion (transformers' StoppingCriteria protocol): every row is done once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


# --------------------------------------------------------------------------------------------------------------------
# Inputs


class Titles(list):
    """The records of `read_titles` (dicts with ``title`` and, where the input has them, ``uid``); `skipped` holds
    the line numbers of JSONL rows whose title is empty, left out and reported rather than answered. A title read
    from a text or JSONL file is cleaned as tc3-prep cleans titles (`tc3.user_text.accept`: a row left empty by the
    cleaning is skipped too; one over `tc3.user_text.MAX_CHARS` characters is a UserError naming its line); a
    tc3-prep dir's are clean already."""

    skipped: list[int]

    def __init__(self, records=(), skipped=()):
        super().__init__(records)
        self.skipped = list(skipped)


def read_titles(path: str | os.PathLike, split: str = "validation") -> Titles:
    """Titles from a text file (one a line), a JSONL file (objects with ``title``), a CSV/TSV file with a header
    line (its ``title`` and ``uid`` columns; by suffix, or a header naming ``title``), or a tc3-prep output directory
    (``data/{split}-*.parquet``); a binary file (Parquet ...) or a JSON array is refused, naming what it looks like.
    Only ``\n`` ends a line (tc3.outputs.split_lines). A JSONL or CSV row with an empty title is skipped and its
    line number kept in ``skipped``. UserError for an input that cannot be read or
    holds no title."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input '{path}' does not exist")
    if path.is_dir():
        records = Titles({k: r[k] for k in ("uid", "title") if k in r} for r in PrepDir(path).read_split(split))
    else:
        records = _read_title_file(path)
    if not records:
        why = " (every row's title is empty)" if records.skipped else ""
        raise UserError(f"input '{path}' holds no title{why}")
    return records


TITLE_FILES = "give a text file (a title a line), JSONL with 'title', CSV with a 'title' column, or a tc3-prep dir"


def _read_title_file(path: Path) -> Titles:
    head = read_head(path)
    if head is not None and (head.kind == "binary" or head.first_line.startswith("[")):
        raise UserError(f"input '{path}' looks like {describe(head)}; {TITLE_FILES}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read '{path}': {err}") from None
    separator = _csv_separator(path, head.first_line if head else "")
    if separator is not None:
        return _read_csv(path, text, separator)
    lines = split_lines(text)
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
            title = accept(obj["title"], f"{path}:{number}: ")
            if not title:
                records.skipped.append(number)
                continue
            records.append({**({"uid": obj["uid"]} if "uid" in obj else {}), "title": title})
        else:
            title = accept(line, f"{path}:{number}: ")
            if not title:
                records.skipped.append(number)
                continue
            records.append({"title": title})
    return records


def _csv_separator(path: Path, first_line: str) -> str | None:
    """The field separator when `path` is CSV/TSV: by its suffix, or a first line that is a header naming a
    `title` column; None for a text file (a title a line, commas and all)."""
    by_suffix = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
    if by_suffix:
        return by_suffix
    for separator in (",", "\t", ";"):
        if separator in first_line and "title" in (c.strip().strip('"').lower() for c in first_line.split(separator)):
            return separator
    return None


def _read_csv(path: Path, text: str, separator: str) -> Titles:
    """Titles (and uids) from the `title` (and `uid`) column of a CSV/TSV file with a header line."""
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=separator)
    columns = {name.strip().lower(): name for name in reader.fieldnames or () if name}
    if "title" not in columns:
        raise UserError(f"input '{path}' is CSV without a 'title' column (its header: "
                        f"{', '.join(columns.values()) or 'none'}); {TITLE_FILES}")
    records = Titles()
    for row in reader:
        title = accept(row.get(columns["title"]) or "", f"{path}:{reader.line_num}: ")
        if not title:
            records.skipped.append(reader.line_num)
            continue
        uid = row.get(columns["uid"]) if "uid" in columns else None
        records.append({"uid": uid, "title": title} if uid else {"title": title})
    return records
