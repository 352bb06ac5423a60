"""Answers grounded in the product's own record: look the product up in the `tc3-index` of the cleaned data, put
the best record into the prompt as context (asked about the record's own title), and say so when nothing matches
instead of inventing one.

The lookup takes the title out of a question first (``What can you tell me about X?`` looks up ``X``), so the
question words do not count against the match (`tc3.index.ProductIndex.lookup` decides what matches well enough).
A grounded Generation keeps the answer alone in ``description``; its ``extra`` says which record it came from:
``matched`` (bool), ``source_uid``, ``source_title``, ``match_coverage``, and ``message`` (the no-match sentence,
with an empty description, when nothing matched), so a script never has to parse the answer text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .generate import Ask, Generation, GenerationSettings, LoadedModel, Stream, generate_batch, title_from_query

NO_MATCH = ("No product in the index matches \"{query}\" well enough, so there is no record to answer from. "
            "Try the product's exact title.")


def no_match_answer(query: str) -> str:
    return NO_MATCH.format(query=query.strip())


def citation(hit) -> str:
    return f'[source: {hit.uid}, "{hit.title}"]'


def record_of(hit) -> dict:
    return {"uid": hit.uid, "title": hit.title, "description": hit.description}


def found_text(found: tuple, description_chars: int = 300) -> str:
    """What the lookup did, for a reader: the title read out of the question and the record retrieved (uid, title,
    the start of its description) or that none matched. Shown beside the answer by the CLI and the demo."""
    title, hit = found
    lines = [f'Looked up: "{title}"']
    if hit is None:
        return "\n".join(lines + ["Record: none matches well enough"])
    description = " ".join(hit.description.split())
    if len(description) > description_chars:
        description = description[: description_chars - 1] + "…"
    return "\n".join(lines + [f"Record: {citation(hit)}", f"Record description: {description}"])


def find(index, text: str, literal: bool = False):
    """(title asked about, best matching record or None)."""
    title = title_from_query(text, literal=literal)
    hit = index.lookup(title) if title else None
    if hit is None and not literal:
        # A question typed without its "?" ("what is mogs kittens"): try the title after its question words.
        bare = title_from_query(text.rstrip() + "?")
        if bare and bare != title and (bare_hit := index.lookup(bare)) is not None:
            return bare, bare_hit
    return title, hit


def _no_match(title: str) -> Generation:
    return Generation(title=title, description="", tokens=0, seconds=0.0, stopped=False,
                      extra={"matched": False, "source_uid": None, "source_title": None, "match_coverage": None,
                             "message": no_match_answer(title)})


def _grounded(generation: Generation, title: str, hit) -> Generation:
    generation.title = title  # as asked; the record's own title is source_title
    generation.extra.update(matched=True, source_uid=hit.uid, source_title=hit.title,
                            match_coverage=round(hit.coverage, 4))
    return generation


def answer_grounded(loaded: LoadedModel, index, texts: Sequence[str], settings: GenerationSettings | None = None,
                    batch_size: int = 8, literal: bool = False, progress=None) -> list[Generation]:
    """One grounded answer a title or question, in order; the model runs only for those that matched."""
    return answer_found(loaded, [find(index, text, literal) for text in texts], settings, batch_size, progress)


def grounded_ask(hit) -> Ask:
    """The prompt of a matched product: its record, and the question asked about the record's own title, so the
    answer does not depend on how the title was typed ('the prophet', 'The Prophet', a typo the lookup forgave)."""
    return Ask(hit.title, context=record_of(hit))


def answer_found(loaded: LoadedModel, found: Sequence[tuple], settings: GenerationSettings | None = None,
                 batch_size: int = 8, progress=None) -> list[Generation]:
    """Answers of (title, record found or None) pairs: a lookup already made, here or elsewhere."""
    matched = [hit for _, hit in found if hit is not None]
    answers = iter(generate_batch(loaded, [grounded_ask(hit) for hit in matched], settings, batch_size, progress))
    return [_no_match(title) if hit is None else _grounded(next(answers), title, hit) for title, hit in found]


def stream_grounded(loaded: LoadedModel, index, text: str, settings: GenerationSettings | None = None,
                    literal: bool = False) -> Iterator[str]:
    """The grounded answer as text pieces (the model's tokens), or the no-match sentence."""
    return stream_found(loaded, find(index, text, literal), settings)


def stream_found(loaded: LoadedModel, found: tuple, settings: GenerationSettings | None = None) -> Iterator[str]:
    """`stream_grounded` of a lookup already made: (title, record found or None)."""
    title, hit = found
    if hit is None:
        yield no_match_answer(title)
        return
    yield from Stream(loaded, grounded_ask(hit), settings)
