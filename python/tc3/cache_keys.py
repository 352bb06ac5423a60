"""What a cached result depends on within tc3 itself, for the keys of its caches (the datasets cache of training
examples, tc3-eval's results): tc3's version, the source of the modules that produced the result, and the prompt
values those modules read, as they are at run time. A cache keyed by its inputs alone would hand back results of
old prompts or old code after an edit or an upgrade of tc3 (datasets#3297: datasets hashes imported functions by
name alone)."""

from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path

# The module-level values of tc3.prompts that rendering reads: templates, instructions, markers.
PROMPT_VALUES = ("INSTRUCTIONS", "QUESTION_TEMPLATES", "UNSEEN_QUESTION_TEMPLATES", "CONTEXT_TEMPLATE",
                 "CONTEXT_DESCRIPTION_CHARS", "LLAMA3_CHAT_TEMPLATE", "LLAMA3_TEMPLATE_TOKENS", "END_OF_TURN_TOKENS",
                 "ANSWER_MARK")

# The code an answer of tc3-generate or tc3-eval comes from (prompt, generation, grounded lookup).
GENERATION_MODULES = ("tc3.prompts", "tc3.generate", "tc3.grounding", "tc3.index")


@functools.cache
def code_digest(*modules: str) -> str:
    """sha256 (hex) of tc3's version and the source files of `modules` (dotted names, e.g. "tc3.prompts")."""
    import tc3

    digest = hashlib.sha256(tc3.__version__.encode())
    for name in modules:
        digest.update(name.encode() + b"\0" + Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()


def prompt_values() -> dict:
    """PROMPT_VALUES by name, as they are now (JSON-able: strings, numbers, tuples, dicts of strings)."""
    from tc3 import prompts

    return {name: getattr(prompts, name) for name in PROMPT_VALUES}


def code_and_prompts(*modules: str) -> tuple[str, dict]:
    """(`code_digest(*modules)`, `prompt_values()`): the parts of a cache key that tc3 itself decides."""
    return code_digest(*modules), prompt_values()
