"""The one place that turns a product title into model input: training, generation and evaluation all use it.

Messages are rendered by the tokenizer's own chat template (never by hand), and the rendered text already holds the
BOS token, so it is tokenized with ``add_special_tokens=False``: one BOS, not two.
"""

from __future__ import annotations

INSTRUCTIONS = {
    "pt": "Com base no título do produto, gere a sua descrição.",
    "en": "Based on the product title, write its description.",
}

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
    """A language key of INSTRUCTIONS ("pt", "en") or a literal instruction text."""
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


def user_turn(title: str, instruction: str) -> str:
    return f"{resolve_instruction(instruction).strip()}\n\n{title.strip()}"


def prompt_messages(title: str, instruction: str) -> list[dict]:
    return [{"role": "user", "content": user_turn(title, instruction)}]


def completion_messages(description: str) -> list[dict]:
    return [{"role": "assistant", "content": description.strip()}]


def render_prompt(tokenizer, title: str, instruction: str) -> str:
    """The generation prompt as text; it already holds BOS, so tokenize it with add_special_tokens=False."""
    return tokenizer.apply_chat_template(
        prompt_messages(title, instruction), tokenize=False, add_generation_prompt=True
    )


def prompt_ids(tokenizer, title: str, instruction: str) -> list[int]:
    """Token ids generation feeds the model: exactly the prompt part of a training example."""
    return tokenizer(render_prompt(tokenizer, title, instruction), add_special_tokens=False)["input_ids"]


def end_token_ids(tokenizer) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS and the template's end-of-turn markers it has."""
    vocab = tokenizer.get_vocab()
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    ids += [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
    return list(dict.fromkeys(ids))
