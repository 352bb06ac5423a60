"""What an answer says that nothing gave it: invented press attributions and unsupported facts.

* Invented attribution: a source credited after a quote in the answer (``'A triumph.' Sunday Times``), found by the
  engine's own rule (`tc3._rust_clean.attribution_sources`, the rule that classifies `review_quotes` records), that
  the record (title and description) does not name.
* Hallucination proxy: the answer's *facts*, its numbers and its capitalised names (a capitalised word that does not
  start a sentence and is no stopword), and the share of them found in none of the sources: the question as asked
  (with the record, in a grounded prompt), the title and the reference description. Words are compared lower-cased,
  a possessive ``'s`` dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Runs of letters and digits, joined across an inner apostrophe or a decimal point ("O'Brien", "3.5").
_TOKEN = re.compile(r"[^\W_]+(?:['’.][^\W_]+)*")
# What may stand between a sentence's end (or a line's start) and its first word, and the marks that end one.
_BETWEEN = " \t\"'“”‘’()[]-–—"
_ENDS = ".!?:;\n•*"


def _normal(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def invented_attributions(answer: str, record_text: str) -> list[str]:
    """Sources credited after quotes in `answer` that `record_text` does not name (case and punctuation aside)."""
    from tc3._rust_clean import attribution_sources

    known = f" {_normal(record_text)} "
    return [s for s in attribution_sources(answer) if f" {_normal(s)} " not in known]


def _key(token: str) -> str:
    token = token.lower()
    return token[:-2] if token.endswith(("'s", "’s")) else token


def _starts_sentence(text: str, start: int) -> bool:
    before = text[max(0, start - 40) : start].rstrip(_BETWEEN)  # a bounded look back: linear in the answer
    return not before or before[-1] in _ENDS


def claimed_facts(text: str) -> list[str]:
    """The distinct numbers and capitalised names of `text`, in order, lower-cased (see the module docstring)."""
    from tc3.index import STOPWORDS

    facts: dict[str, None] = {}  # ordered and distinct
    for match in _TOKEN.finditer(text):
        token, key = match.group(), _key(match.group())
        number = any(c.isdigit() for c in token)
        name = token[0].isupper() and key not in STOPWORDS and not _starts_sentence(text, match.start())
        if number or name:
            facts[key] = None
    return list(facts)


def unsupported_facts(answer: str, sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the answer's facts, those found in none of `sources`)."""
    facts = claimed_facts(answer)
    known = {_key(token) for source in sources for token in _TOKEN.findall(source)}
    return facts, [fact for fact in facts if fact not in known]
