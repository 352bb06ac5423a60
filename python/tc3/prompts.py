"""The one place that turns a product title into model input: training, generation and evaluation all use it.

Messages are rendered by the tokenizer's own chat template (never by hand), and the rendered text already holds the
BOS token, so it is tokenized with ``add_special_tokens=False``: one BOS, not two. ``split_rendered`` is the one place
that cuts a rendered example into prompt and completion; ``encode_example`` tokenizes it, within a length.

Text is text: a title, description, question or grounded record that holds a string of the tokenizer's markup
(``<|eot_id|>``, ``<|im_start|>``, ``[INST]``, ``</s>``, ``<think>``: any added or special token) is tokenized as the
plain text it is, never as the control token, on every path (training, the reference loss, generation, the demo).
The template renders stand-ins (``TEXT_MARK``) where the messages' texts go, so it never reads them; the texts go
in after, and `encode_rendered` reads markup only outside them. Text without markup is tokenized exactly as before.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from dataclasses import dataclass

from tc3.config import ConfigError

INSTRUCTIONS = {
    "pt": "Com base no título do produto, gere a sua descrição.",
    "en": "Based on the product title, write its description.",
}

# The user turns of training, Portuguese and English, around the title; `{title}` marks where it goes (a
# template without it is followed by a blank line and the title). `tc3-train` draws one per example (questions:
# varied); `questions: fixed` keeps the one instruction. Both instructions above are among them.
QUESTION_TEMPLATES = (
    INSTRUCTIONS["pt"],
    "O que é '{title}'?",
    "Descreva o produto '{title}'.",
    "Me fale sobre {title}.",
    "Escreva uma descrição para: {title}",
    INSTRUCTIONS["en"],
    "Describe '{title}'.",
    "What can you tell me about {title}?",
    "Write a product description for: {title}",
    "What is '{title}' about?",
)

# Phrasings never used in training: `tc3-eval --questions unseen` asks these to see whether the model generalises
# beyond the wording it was trained on.
UNSEEN_QUESTION_TEMPLATES = (
    'Gostaria de saber mais sobre "{title}". Pode me explicar?',
    "Qual é a descrição de {title}?",
    "Preciso de um texto de apresentação para o produto {title}.",
    'I\'m thinking of buying "{title}". What should I know about it?',
    "Give me a short overview of {title}.",
    "Could you summarize what {title} is?",
)

QUESTION_SETS = {"seen": QUESTION_TEMPLATES, "unseen": UNSEEN_QUESTION_TEMPLATES}

# The product record put before the question in a grounded prompt; long descriptions are cut to keep prompts short.
CONTEXT_TEMPLATE = "Product record {uid}\nTitle: {title}\nDescription: {description}"
CONTEXT_DESCRIPTION_CHARS = 1500

# Meta-Llama-3-8B-Instruct's template, verbatim: BOS once, every turn closed by <|eot_id|>.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_TEMPLATE_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# End-of-turn / end-of-text markers of the common chat templates; a model stops on any of them it has.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eom_id|>")


def resolve_instruction(instruction: str) -> str:
    """A language key of INSTRUCTIONS ("pt", "en"), or a literal instruction or question template."""
    return INSTRUCTIONS.get(instruction, instruction)


def ensure_chat_template(tokenizer) -> None:
    """Give a base model's tokenizer (no chat template) the Llama-3 template and its marker tokens.

    Tokens added here grow the vocabulary: the caller resizes the model's embeddings to len(tokenizer).
    """
    if tokenizer.chat_template is not None:
        return
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    vocab = tokenizer.get_vocab()
    missing = [token for token in LLAMA3_TEMPLATE_TOKENS if token not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)


def load_tokenizer(model: str):
    """The tokenizer of a model dir or hub id, ready to render: chat template ensured."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    ensure_chat_template(tokenizer)
    return tokenizer


def seeded_unit(seed: int, *key) -> float:
    """A number in [0, 1) fixed by (seed, key): the same for a record whatever the order or process it is seen in."""
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_question(uid: str, seed: int, templates=QUESTION_TEMPLATES) -> str:
    """The question template of one example: a seeded draw keyed by its uid."""
    return templates[int(seeded_unit(seed, "question", uid) * len(templates))]


def render_question(template: str, title: str) -> str:
    """A template (or a "pt"/"en" instruction key) filled with the title."""
    template = resolve_instruction(template).strip()
    title = title.strip()
    return template.replace("{title}", title) if "{title}" in template else f"{template}\n\n{title}"


def context_description(description: str) -> str:
    """A record's description as a grounded prompt shows it: cut at a word boundary past CONTEXT_DESCRIPTION_CHARS."""
    description = description.strip()
    if len(description) > CONTEXT_DESCRIPTION_CHARS:
        description = description[:CONTEXT_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + " ..."
    return description


def render_context(record: dict) -> str:
    return CONTEXT_TEMPLATE.format(uid=record["uid"], title=record["title"].strip(),
                                   description=context_description(record["description"]))


def user_turn(title: str, instruction: str, context: dict | None = None) -> str:
    """The question around the title, after the product's record when the answer is grounded in one."""
    question = render_question(instruction, title)
    return question if context is None else f"{render_context(context)}\n\n{question}"


def prompt_messages(title: str, instruction: str, context: dict | None = None) -> list[dict]:
    return [{"role": "user", "content": user_turn(title, instruction, context)}]


class _Template:
    """A question template as a matcher: its words before and after `{title}`, matched word by word with any run of
    white space between them (case-insensitive), in time linear in the text (no regex: one with `.+?` between
    two whitespace runs backtracks quadratically, and a 64,000-character question held the GIL for 44 s)."""

    def __init__(self, template: str):
        if "{title}" not in template:
            template += "\n\n{title}"
        head, tail = template.split("{title}", 1)
        self.head, self.tail = head.lower().split(), tail.lower().split()

    def title(self, text: str) -> str | None:
        """The text between the template's head and tail words, stripped; None if the text is not phrased so."""
        start = _words_from(text, self.head)
        end = _words_until(text, self.tail)
        if start is None or end is None or start >= end:
            return None
        return text[start:end].strip() or None


def _words_from(text: str, words: list[str]) -> int | None:
    """Where the text goes on after `words` at its start (white space before and between them), or None."""
    at = len(text) - len(text.lstrip())
    for n, word in enumerate(words):
        if n:
            spaced = len(text) - len(text[at:].lstrip())
            if spaced == at:
                return None
            at = spaced
        if text[at : at + len(word)].lower() != word:
            return None
        at += len(word)
    return at


def _words_until(text: str, words: list[str]) -> int | None:
    """Where `words` start at the end of the text (white space between and after them), or None."""
    at = len(text.rstrip())
    for n, word in enumerate(reversed(words)):
        if n:
            spaced = len(text[:at].rstrip())
            if spaced == at:
                return None
            at = spaced
        if text[max(0, at - len(word)) : at].lower() != word:
            return None
        at -= len(word)
    return at


_TEMPLATES = [_Template(t) for t in QUESTION_TEMPLATES + UNSEEN_QUESTION_TEMPLATES]


def title_in_question(text: str) -> str | None:
    """The title inside a text phrased as one of the known question templates, or None."""
    for template in _TEMPLATES:
        title = template.title(text)
        if title:
            return title
    return None


def questions_card_section(questions: str, instruction: str, context_fraction: float = 0.0) -> str:
    """Markdown naming the user turns of training: for the model card and the dataset card."""
    if questions == "fixed":
        lines = [f'Every example asks the one instruction "{resolve_instruction(instruction)}", a blank line, the title.']
    else:
        lines = ["Each example's user turn is one of these templates, drawn per example from a hash of its uid and",
                 "the seed (`tc3.prompts.QUESTION_TEMPLATES`; `{title}` is the title; a template without it is",
                 "followed by a blank line and the title):", ""]
        lines += [f"- `{t}`" for t in QUESTION_TEMPLATES]
        lines += ["", "Held out of training, asked by `tc3-eval --questions unseen`:", ""]
        lines += [f"- `{t}`" for t in UNSEEN_QUESTION_TEMPLATES]
    if context_fraction:
        lines += ["", f"{context_fraction:.0%} of the examples (seeded by uid) carry the product's own record before",
                  "the question, as `tc3-generate --grounded` does:", "", "```", CONTEXT_TEMPLATE, "```"]
    return "\n".join(lines)


def completion_messages(description: str) -> list[dict]:
    return [{"role": "assistant", "content": description.strip()}]


# Stands in for the answer when the prompt is rendered without one; plain letters survive any template's filters.
ANSWER_MARK = "TC3ANSWERMARK"

# Stands in for message i's text while the template renders: letters of both cases and digits, so that a template
# that changes its content's case shows (TemplateError), and no template markup can be read into it.
TEXT_MARK = "tc3Text{}Mark"


class TemplateError(ConfigError):
    """A chat template whose generation prompt is not the start of the example it renders."""


@dataclass(frozen=True)
class Rendered:
    """Rendered chat text (``text``) and where the texts from data or users lie in it (``literal``: (start, end)
    character spans): `encode_rendered` reads those as plain text, never as control tokens."""

    text: str
    literal: tuple[tuple[int, int], ...] = ()


def split_rendered(tokenizer, messages: list[dict], answer: str) -> tuple[str, str]:
    """(prompt, completion) texts of one example: the one place that renders an example and checks it.

    The chat template renders `messages` and the answer as one assistant turn. The prompt is everything before the
    answer's text: the template's generation prompt plus whatever the template puts at the start of a last
    assistant turn (Qwen3: an empty `<think>` block), so that generation, fed this prompt, never writes that markup
    itself. The completion is the answer and the template's end of turn, cut after the first end token (a newline
    after it is never trained); the tokenizer's EOS is appended when the template closes the turn with none.
    Every message's text and the answer are stripped and written verbatim where the template puts them.
    Raises TemplateError when the generation prompt is not a prefix of the rendered example, or the template does
    not write each text once, verbatim.
    """
    prompt, completion = render_parts(tokenizer, messages, answer)
    return prompt.text, completion.text


def render_parts(tokenizer, messages: list[dict], answer: str) -> tuple[Rendered, Rendered]:
    """`split_rendered`'s (prompt, completion), each with the spans of the texts from data or users."""
    texts = [message["content"].strip() for message in messages] + [answer.strip()]
    marks = [TEXT_MARK.format(i) for i in range(len(texts))]
    stand_ins = [{**message, "content": mark} for message, mark in zip(messages, marks)]
    full = tokenizer.apply_chat_template(stand_ins + completion_messages(marks[-1]), tokenize=False)
    generation = tokenizer.apply_chat_template(stand_ins, tokenize=False, add_generation_prompt=True)
    if any(full.count(mark) != 1 for mark in marks):
        raise TemplateError("the tokenizer's chat template does not write an answer verbatim "
                            f"({texts[-1][:40]!r}; each message's text must appear once, unchanged)")
    at = full.index(marks[-1])
    if not full.startswith(generation) or at < len(generation):
        raise TemplateError(
            "the tokenizer's chat template renders its generation prompt differently from the start of an example "
            f"(prompt ends {generation[-60:]!r}, example {full[len(generation) - 60 : len(generation) + 20]!r}): "
            "training and generation would disagree; give the model a template whose assistant turn starts with "
            "its generation prompt"
        )
    close = _close_turn(tokenizer, full[at + len(marks[-1]) :])
    return _fill(full[:at], texts), _fill(marks[-1] + close, texts)


_MARK_PATTERN = re.compile(re.escape(TEXT_MARK).replace(r"\{\}", r"(\d+)"))


def _fill(rendered: str, texts: list[str]) -> Rendered:
    """The rendered text with each stand-in replaced by its text, and the spans those texts take."""
    parts, spans, length, last = [], [], 0, 0
    for match in _MARK_PATTERN.finditer(rendered):
        text = texts[int(match.group(1))]
        parts += [rendered[last : match.start()], text]
        length += match.start() - last
        spans.append((length, length + len(text)))
        length, last = length + len(text), match.end()
    parts.append(rendered[last:])
    return Rendered("".join(parts), tuple(spans))


def _close_turn(tokenizer, tail: str) -> str:
    """The template's text after the answer, up to and including its first end token."""
    ends = [token for token in tokenizer.convert_ids_to_tokens(end_token_ids(tokenizer)) if token in tail]
    if not ends:
        return tail + (tokenizer.eos_token or "")
    first = min(ends, key=tail.index)
    return tail[: tail.index(first) + len(first)]


OVERLONG = ("trim", "drop")  # what becomes of an example longer than max_length (TrainConfig.overlong)


def encode_example(tokenizer, messages: list[dict], description: str, max_length: int | None = None,
                   overlong: str = "trim") -> tuple[list[int], list[int], str]:
    """(prompt ids, completion ids, fit) of one example, as training and the reference loss see it.

    No example loses its end token: one longer than `max_length` tokens is cut at a word boundary of the description
    and its turn closed ("trim"), or left out ("drop"; also when not one word fits). `fit` is "whole", "trimmed" or
    "dropped" (then both id lists are empty).
    """
    def encode(answer: str) -> tuple[list[int], list[int]]:
        prompt, completion = render_parts(tokenizer, messages, answer)
        return encode_rendered(tokenizer, prompt), encode_rendered(tokenizer, completion)

    ids = encode(description)
    if max_length is None or len(ids[0]) + len(ids[1]) <= max_length:
        return (*ids, "whole")
    word_ends = [m.end() for m in re.finditer(r"\S+", description.strip())]
    low, high, best = 1, len(word_ends) - 1, None  # the most words that fit: a binary search on the word count
    while overlong == "trim" and low <= high:
        middle = (low + high) // 2
        candidate = encode(description.strip()[: word_ends[middle - 1]])
        if len(candidate[0]) + len(candidate[1]) <= max_length:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return (*best, "trimmed") if best else ([], [], "dropped")


def render_prompt(tokenizer, title: str, instruction: str, context: dict | None = None) -> str:
    """The generation prompt as text: exactly the prompt part of a training example (`split_rendered`). For
    display and for other runtimes (the Modelfile); tc3 feeds the model `prompt_ids`, which reads markup in the
    title or record as text."""
    return split_rendered(tokenizer, prompt_messages(title, instruction, context), ANSWER_MARK)[0]


def prompt_ids(tokenizer, title: str, instruction: str, context: dict | None = None) -> list[int]:
    """Token ids generation feeds the model: exactly the prompt part of a training example."""
    messages = prompt_messages(title, instruction, context)
    return encode_rendered(tokenizer, render_parts(tokenizer, messages, ANSWER_MARK)[0])


# ---------------------------------------------------------------------------------------------------------------------
# Markup in text: tokenized as text

_MARKUP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _markup(tokenizer) -> tuple[dict[str, int], re.Pattern | None]:
    """(token text -> id, a pattern finding them) of the tokenizer's added tokens, special or not: the strings it
    reads as one token wherever they occur. Cached per tokenizer until its added tokens change."""
    size = len(tokenizer)  # grows with every added token; far cheaper than reading them
    cached = _MARKUP.get(tokenizer)
    if cached is None or cached[0] != size:
        added = tokenizer.added_tokens_decoder
        ids = {token.content: i for i, token in added.items() if token.content}
        strip = {token.content: (token.lstrip, token.rstrip) for token in added.values()}
        alternatives = [(r"\s*" if strip[t][0] else "") + re.escape(t) + (r"\s*" if strip[t][1] else "")
                        for t in sorted(ids, key=len, reverse=True)]  # the longest first, as the tokenizer matches
        cached = (size, ids, re.compile("|".join(alternatives)) if alternatives else None)
        _MARKUP[tokenizer] = cached
    return cached[1], cached[2]


def holds_markup(tokenizer, text: str) -> bool:
    """Whether `text` holds a string the tokenizer would read as an added or special token."""
    pattern = _markup(tokenizer)[1]
    return pattern is not None and pattern.search(text) is not None


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as plain text: the tokenizer's normalizer, pre-tokenizer and model, never its added
    tokens (a title's ``<|eot_id|>`` is the characters, not the end of a turn). Text without markup gets the ids
    plain tokenization gives."""
    if not holds_markup(tokenizer, text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return _plain_ids(tokenizer, text)


def _plain_ids(tokenizer, text: str) -> list[int]:
    """`text_ids` of any text, through the tokenizer's pipeline without its added vocabulary."""
    if not text:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a tokenizer without a Rust backend: its own switch (special tokens only)
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    words = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer is not None else [(text, None)]
    return [token.id for word, _ in words for token in backend.model.tokenize(word)]


def encode_rendered(tokenizer, rendered: Rendered) -> list[int]:
    """Token ids of rendered chat text: the template's markup as the tokenizer reads it, the literal spans as
    plain text. Without markup in the literal spans, exactly plain tokenization (``add_special_tokens=False``).

    Otherwise the text is cut at the added tokens the template wrote (found outside the literal spans), as the
    tokenizer itself cuts text at added tokens, and each piece between is tokenized as plain text.
    """
    text, literal = rendered.text, rendered.literal
    if not any(holds_markup(tokenizer, text[start:end]) for start, end in literal):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return _cut_at_markup(tokenizer, rendered)


def _cut_at_markup(tokenizer, rendered: Rendered) -> list[int]:
    """`encode_rendered` of text with markup in a literal span. Tested to give plain tokenization's ids on text
    without any."""
    text, literal = rendered.text, rendered.literal
    token_ids, pattern = _markup(tokenizer)
    ids, last = [], 0
    structure = zip((0, *(end for _, end in literal)), (*(start for start, _ in literal), len(text)))
    for begin, end in structure:  # the template's own text: between the literal spans
        for match in pattern.finditer(text, begin, end):
            ids += _plain_ids(tokenizer, text[last : match.start()])
            token = match.group()  # with the white space an lstrip/rstrip token takes along
            ids.append(token_ids[token] if token in token_ids else token_ids[token.strip()])
            last = match.end()
    return ids + _plain_ids(tokenizer, text[last:])


def end_token_ids(tokenizer) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS and the template's end-of-turn markers it has."""
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    # one lookup a token: get_vocab() copies the whole vocabulary, and this runs for every training example
    found = (tokenizer.convert_tokens_to_ids(token) for token in END_OF_TURN_TOKENS)
    ids += [i for i in found if i is not None and i != tokenizer.unk_token_id]
    return list(dict.fromkeys(ids))
