"""Answers grounded in the product's own record: look the product up in the `tc3-index` of the cleaned data, put
the best record into the prompt as context, cite its uid, and say so when nothing matches instead of inventing one.

The lookup takes the title out of a question first (``What can you tell me about X?`` looks up ``X``), so the
question words do not count against the match (`tc3.index.ProductIndex.lookup` decides what matches well enough).
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
    return Generation(title=title, description=no_match_answer(title), tokens=0, seconds=0.0, stopped=True,
                      extra={"grounded": False, "source_uid": None})


def _grounded(generation: Generation, hit) -> Generation:
    generation.description = f"{generation.description}\n\n{citation(hit)}"
    generation.extra.update(grounded=True, source_uid=hit.uid, source_title=hit.title,
                            match_coverage=round(hit.coverage, 4))
    return generation


def answer_grounded(loaded: LoadedModel, index, texts: Sequence[str], settings: GenerationSettings | None = None,
                    batch_size: int = 8, literal: bool = False, progress=None) -> list[Generation]:
    """One grounded answer a title or question, in order; the model runs only for those that matched."""
    return answer_found(loaded, [find(index, text, literal) for text in texts], settings, batch_size, progress)


def answer_found(loaded: LoadedModel, found: Sequence[tuple], settings: GenerationSettings | None = None,
                 batch_size: int = 8, progress=None) -> list[Generation]:
    """Answers of (title, record found or None) pairs: a lookup already made, here or elsewhere."""
    matched = [(title, hit) for title, hit in found if hit is not None]
    answers = iter(generate_batch(loaded, [Ask(title, context=record_of(hit)) for title, hit in matched],
                                  settings, batch_size, progress))
    return [_no_match(title) if hit is None else _grounded(next(answers), hit) for title, hit in found]


def stream_grounded(loaded: LoadedModel, index, text: str, settings: GenerationSettings | None = None,
                    literal: bool = False) -> Iterator[str]:
    """The grounded answer as text pieces: the model's tokens, then the citation; or the no-match answer."""
    return stream_found(loaded, find(index, text, literal), settings)


def stream_found(loaded: LoadedModel, found: tuple, settings: GenerationSettings | None = None) -> Iterator[str]:
    """`stream_grounded` of a lookup already made: (title, record found or None)."""
    title, hit = found
    if hit is None:
        yield no_match_answer(title)
        return
    yield from Stream(loaded, Ask(title, context=record_of(hit)), settings)
    yield f"\n\n{citation(hit)}"
