"""Product search over a `tc3-prep` dir's records: a tantivy BM25 index of the titles, saved beside the data.

`build_index` indexes every record of both splits into PREP/index; `ProductIndex` finds records by uid or by a
title (or a fragment of one, typos allowed), and `lookup` returns the best hit only when it covers the query
well enough, so a caller can say "no product matches" instead of inventing one. Rules: docs/index.md.
"""

from __future__ import annotations

import functools
import json
import os
import time
import unicodedata
from collections.abc import Callable
from difflib import SequenceMatcher
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tc3.errors import UserError
from tc3.layout import PrepDir
from tc3.outputs import check_dest, staged_dir

__all__ = [
    "build_index", "ProductIndex", "Hit", "coverage", "match_key", "content_words", "words", "title_analyzer",
    "MATCH_THRESHOLD", "META_NAME", "SPLITS",
]

META_NAME = "tc3-index.json"
SPLITS = PrepDir.SPLITS
FORMAT = 3  # 2: the `row` field; 3: titles analysed by TITLE_TOKENIZER
TITLE_TOKENIZER = "tc3_title"  # the name the index's title field knows `title_analyzer` by

# Share of the query's content words that the best hit's title must hold (one edit a word allowed) for `lookup`
# to accept it. benches/retrieval_bench.py on 1.25 M records: every noisy held-out title covers 100% of its own
# words at any threshold; titles that are not indexed (and are no fragment of an indexed title) are accepted
# 12.8% of the time at 0.8, 3.1% at 0.85, 0.5% at 0.9, while a query with one stray word added is still
# accepted 95%, 83%, 68%. 0.85 is the knee: a wrong product costs more than a "no match". In words: all of
# up to 6 content words, one miss allowed from 7.
MATCH_THRESHOLD = 0.85

# Short function words in English and Portuguese (the languages of the questions): they say nothing about
# which product is meant, so they do not count towards coverage (short queries search them only to break ties).
STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it of on or the this that to with without your you "
    "o os as um uma uns umas e de do da dos das em no na nos nas para por com sem que se ao aos"
    .split()
)
FUZZY_MIN_LEN = 4  # words this long (either side) may differ by one edit: shorter ones would match too much
MAX_TOKEN_BYTES = 40  # a word of this many UTF-8 bytes or more (as written, before lower-casing) is not a term
MAX_QUERY_WORDS = 16  # bounds the latency of a whole pasted title; 16 distinct content words identify one
SHORT_QUERY = 3  # content words up to which the query's stopwords join the search, to break ties
CANDIDATES = 32  # BM25 hits reranked by coverage: enough for the right one to be among them after one typo
TIE_HITS = 4  # how far past CANDIDATES a tie of BM25 scores at the cut is followed
VARIANT_BOOST = 0.8  # a title with the word as typed ranks above one with a variant of it, other things equal
LETTERS, DIGITS = "abcdefghijklmnopqrstuvwxyz", "0123456789"
BATCH_ROWS = 8192

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Hit:
    uid: str
    title: str
    description: str
    split: str
    score: float  # tantivy's BM25 score of the title (a word matched by a variant weighs VARIANT_BOOST)
    coverage: float  # share of the query's content words found in the title (see `coverage`)


@functools.cache
def title_analyzer():
    """The one definition of a title's terms, for the index and for every query and comparison: tantivy's simple
    tokenizer (runs of characters that are alphabetic or numeric in Unicode), words of MAX_TOKEN_BYTES bytes or
    more left out, then lower-cased character by character (so "İ" is "i" and a combining dot, "Σ" always "σ").
    It is tantivy's own `default` analyzer, registered under TITLE_TOKENIZER so that index and query cannot drift."""
    import tantivy

    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    return builder.filter(tantivy.Filter.remove_long(MAX_TOKEN_BYTES)).filter(tantivy.Filter.lowercase()).build()


def normalize(text: str) -> str:
    """Text as the index holds it: Unicode NFC (tc3-prep's titles are; a typed query may come decomposed, NFD,
    whose combining marks the tokenizer would take for separators)."""
    return unicodedata.normalize("NFC", text)


def words(text: str) -> list[str]:
    """The terms of `text` as the index has them (`normalize`, then `title_analyzer`), in order."""
    return title_analyzer().analyze(normalize(text))


def content_words(text: str) -> list[str]:
    """Distinct words of `text` minus stopwords, in order (all distinct words when every one is a stopword)."""
    distinct = list(dict.fromkeys(words(text)))
    kept = [w for w in distinct if w not in STOPWORDS]
    return kept or distinct


def within_one_edit(a: str, b: str) -> bool:
    """Optimal-string-alignment distance <= 1: one substitution, insertion, deletion or adjacent transposition."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la < lb:  # one insertion
        return a[i:] == b[i + 1:]
    if a[i + 1:] == b[i + 1:]:  # one substitution
        return True
    return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2:] == b[i + 2:]


def _variants(word: str) -> set[str]:
    """The words one edit from `word` (letters/digits substituted or inserted, one deleted, two adjacent
    swapped) that `coverage` would count as found: at least one side of 4+ letters."""
    if len(word) < FUZZY_MIN_LEN - 1:
        return set()
    # Digits go only into words that have one: a typed word seldom gains a digit, and it saves a quarter of
    # the dictionary look-ups.
    alphabet = set(LETTERS + (DIGITS if any(c.isdigit() for c in word) else "")) | set(word)
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + c + b for a, b in splits for c in alphabet}  # insertions
    if len(word) >= FUZZY_MIN_LEN:
        out |= {a + b[1:] for a, b in splits if b}  # deletions
        out |= {a + c + b[1:] for a, b in splits if b for c in alphabet}  # substitutions
        out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}  # transpositions
    out.discard(word)
    return out


def _found(word: str, others: set[str]) -> bool:
    if word in others:
        return True
    n = len(word)
    return any(
        abs(len(o) - n) <= 1 and max(len(o), n) >= FUZZY_MIN_LEN and within_one_edit(word, o) for o in others
    )


def _share_found(needles: list[str], haystack: set[str]) -> float:
    return sum(_found(w, haystack) for w in needles) / len(needles) if needles else 0.0


def coverage(query: str, title: str) -> float:
    """Share of the query's content words (its words minus stopwords) found among the title's words, equal or
    (either word 4+ letters) one edit apart; 0 when the query has no content word ("the of and" names no product)."""
    return _coverage(content_words(query), set(words(title)))


def _coverage(q_content: list[str], t_words: set[str]) -> float:
    """`coverage` from the query's `content_words` (which fall back to stopwords, for the search alone)."""
    return _share_found([w for w in q_content if w not in STOPWORDS], t_words)


def match_key(query: str, title: str) -> tuple[float, float, float, float]:
    """How well `title` answers `query`, in the order `search` ranks hits (BM25 breaks what ties remain):
    coverage; then the share of the title's content words found in the query (of two titles that hold every
    query word, the one with fewer other words is the one meant: a title typed in full or nearly); then the
    Jaccard similarity of their exact word sets, small words included ("the age" is "The Age", not "Ages");
    then how closely the word sequences agree (order and repeats)."""
    return _key(content_words(query), words(query), title)


def _key(q_content: list[str], q_sequence: list[str], title: str) -> tuple[float, float, float, float]:
    t_sequence = words(title)
    t_words, q_words = set(t_sequence), set(q_sequence)
    t_content = [w for w in t_words if w not in STOPWORDS] or list(t_words)
    union = len(q_words | t_words)
    return (
        _coverage(q_content, t_words),
        _share_found(t_content, set(q_content)),
        len(q_words & t_words) / union if union else 0.0,
        # the same words in the typed order, none repeated: "The Book of Revelation", not "Book) The Book of ..."
        SequenceMatcher(None, q_sequence, t_sequence, autojunk=False).ratio(),
    )


def _prep_files(prep_dir: Path) -> dict[str, list[Path]]:
    prep = PrepDir(prep_dir).check()
    return {split: prep.split_files(split) for split in SPLITS}


def _sources(prep_dir: Path, files: dict[str, list[Path]]) -> list[dict[str, Any]]:
    """What the index was built from, to tell when the prep dir has changed since (a stale index)."""
    return [
        {"file": f.relative_to(prep_dir).as_posix(), "bytes": f.stat().st_size}
        for split in SPLITS for f in files[split]
    ]


def _schema():
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("uid", stored=True, tokenizer_name="raw", index_option="basic")  # exact term: get(uid)
    sb.add_text_field("title", stored=True, tokenizer_name=TITLE_TOKENIZER)  # `words`, BM25
    sb.add_bytes_field("description", stored=True)  # bytes: the one stored-only field tantivy-py can make
    sb.add_text_field("split", stored=True, tokenizer_name="raw", index_option="basic")
    sb.add_unsigned_field("row", stored=True)  # place in the prep dir (train, then validation): breaks full ties
    return sb.build()


def _with_analyzer(index):
    """`index`, knowing TITLE_TOKENIZER (a tantivy index holds the analyzer's name, not the analyzer)."""
    index.register_tokenizer(TITLE_TOKENIZER, title_analyzer())
    return index


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build_index(
    prep_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Indexes every record of `prep_dir` (train and validation) into `out_dir` (default PREP/index) and
    returns the index's meta (also written to OUT/tc3-index.json).

    The index is built beside `out_dir` under a temporary name and renamed into place at the end, so an
    interrupted build never leaves something that looks like an index; an existing `out_dir` is replaced only
    with `force` and only when tc3-index built it (tc3.outputs), so `-o PREP/data` never touches the data.
    `progress(done, total)` is called every few thousand records. Mistakes raise UserError.
    """
    import pyarrow.parquet as pq
    import tantivy

    prep = Path(prep_dir)
    if not prep.is_dir():
        raise UserError(f"{prep} is not a directory")
    files = _prep_files(prep)
    out = Path(out_dir) if out_dir is not None else prep / "index"
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, not {threads}")
    if out.resolve() == prep.resolve() or out.resolve() in prep.resolve().parents:
        raise UserError(f"{out} holds the prep dir; give the index a place of its own")
    check_dest(out, "tc3-index", force=force)
    threads = threads or min(os.cpu_count() or 1, 8)
    total = sum(pq.ParquetFile(f).metadata.num_rows for split in SPLITS for f in files[split])
    started = time.perf_counter()
    with staged_dir(out, "tc3-index", force=force) as tmp:
        index = writer = None
        try:
            index = _with_analyzer(tantivy.Index(_schema(), path=str(tmp), reuse=False))
            # 128 MB of indexing heap per thread: few segments to merge, yet memory stays well under 1 GB.
            writer = index.writer(heap_size=128_000_000 * threads, num_threads=threads)
            records = {}
            for doc in _documents(files, records, progress, total):
                writer.add_document(doc)
            writer.commit()
            writer.wait_merging_threads()
        except BaseException:
            # Dropping the writer joins its indexing threads; until then they go on writing segment files into tmp.
            writer = index = None
            raise
        meta = {
            "format": FORMAT,
            "records": records,
            "total": sum(records.values()),
            "sources": _sources(prep, files),
            "tantivy": tantivy.__version__,
            "threads": threads,
            "seconds": round(time.perf_counter() - started, 2),
            "bytes": _dir_bytes(tmp),
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _documents(files: dict[str, list[Path]], records: dict, progress: ProgressCallback | None, total: int):
    """Every record of `files` (split -> Parquet files) as a tantivy Document, numbered in order, counted by split
    into `records`; `progress(done, total)` after each batch. A generator: the writer stays in build_index, whose
    error handling drops it (a frame of this function in a traceback would otherwise keep it writing)."""
    import pyarrow.parquet as pq
    import tantivy

    done = 0
    for split in SPLITS:
        records[split] = 0
        for f in files[split]:
            for batch in pq.ParquetFile(f).iter_batches(BATCH_ROWS, columns=["uid", "title", "description"]):
                uids, titles, descriptions = (c.to_pylist() for c in batch.columns)
                for row, (uid, title, description) in enumerate(zip(uids, titles, descriptions), done):
                    doc = tantivy.Document()
                    doc.add_text("uid", uid or "")
                    doc.add_text("title", normalize(title))
                    doc.add_bytes("description", description.encode())
                    doc.add_text("split", split)
                    doc.add_unsigned("row", row)
                    yield doc
                records[split] += batch.num_rows
                done += batch.num_rows
                if progress:
                    progress(done, total)


class ProductIndex:
    """A built index, opened for search. Open with `ProductIndex.open(path)`."""

    def __init__(self, index, path: Path, meta: dict[str, Any]):
        import tantivy

        self._tantivy = tantivy
        self._index = index
        self._schema = index.schema
        self._searcher = index.searcher()
        self.path = path
        self.meta = meta

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ProductIndex:
        """Opens the index at `path`: the index dir, or a prep dir with the index in `index/` (checked for
        staleness against that prep dir's Parquet files, as is an index dir inside a prep dir)."""
        import tantivy

        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path} is not a directory")
        if (path / META_NAME).is_file():
            index_dir = path
            prep = path.parent if (path.parent / "data").is_dir() else None
        elif (path / "data").is_dir():
            index_dir, prep = path / "index", path
            if not (index_dir / META_NAME).is_file():
                raise UserError(f"{path} has no index; build it with: tc3-index {path}")
        else:
            raise UserError(f"{path} is neither a tc3-index dir nor a tc3-prep dir with index/ inside")
        try:
            meta = json.loads((index_dir / META_NAME).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{index_dir / META_NAME} cannot be read: {e}") from None
        if meta.get("format") != FORMAT:
            raise UserError(f"{index_dir} was built by another version of tc3-index; rebuild it with --force")
        if prep is not None and meta["sources"] != _sources(prep, _prep_files(prep)):
            raise UserError(
                f"{index_dir} is stale: {prep}/data has changed since it was built; "
                f"rebuild it with: tc3-index {prep} --force"
            )
        try:
            index = _with_analyzer(tantivy.Index.open(str(index_dir)))
        except (OSError, ValueError) as e:
            raise UserError(f"{index_dir} cannot be opened as a tantivy index: {e}") from None
        return cls(index, index_dir, meta)

    def __len__(self) -> int:
        return self._searcher.num_docs

    def _hit(self, doc, score: float = 0.0, cov: float = 0.0) -> Hit:
        doc = doc.to_dict()
        return Hit(doc["uid"][0], doc["title"][0], doc["description"][0].decode(), doc["split"][0], score, cov)

    def get(self, uid: str) -> Hit | None:
        """The record with this uid, or None (score and coverage are 0)."""
        query = self._tantivy.Query.term_query(self._schema, "uid", uid)
        hits = self._searcher.search(query, 1, count=False).hits
        return self._hit(self._searcher.doc(hits[0][1])) if hits else None

    def _query(self, terms: list[str], small_words: list[str] = ()):
        """One clause per query word: the word itself or, a little less, its best-scoring indexed variant one
        edit away. Variants are looked up in the term dictionary, so a corrected typo weighs its real BM25
        (tantivy's fuzzy query scores every match the same, which lets common words crowd the right title out)."""
        Query, Occur = self._tantivy.Query, self._tantivy.Occur
        clauses = []
        for w in terms:
            options = [(t, 1.0 if t == w else VARIANT_BOOST) for t in [w, *sorted(_variants(w))]
                       if self._searcher.doc_freq("title", t)]
            if not options:
                continue
            queries = [Query.term_query(self._schema, "title", t) for t, _ in options]
            queries = [q if boost == 1.0 else Query.boost_query(q, boost) for q, (_, boost) in zip(queries, options)]
            clauses.append((Occur.Should, queries[0] if len(queries) == 1 else Query.disjunction_max_query(queries)))
        if clauses:
            clauses += [(Occur.Should, Query.term_query(self._schema, "title", w)) for w in small_words]
        return Query.boolean_query(clauses) if clauses else None

    def _strict_query(self, text: str):
        """Every word of the text, small ones included, as it is typed (None when one is in no title: a typo)."""
        Query, Occur = self._tantivy.Query, self._tantivy.Occur
        typed = list(dict.fromkeys(words(text)))[:MAX_QUERY_WORDS]
        if not typed or not all(self._searcher.doc_freq("title", w) for w in typed):
            return None
        return Query.boolean_query([(Occur.Must, Query.term_query(self._schema, "title", w)) for w in typed])

    def search(self, text: str, k: int = 5) -> list[Hit]:
        """The `k` records whose titles best match `text`, ranked by `match_key` then BM25, from the
        CANDIDATES best by BM25. Any text is accepted: queries are built from its words, never parsed."""
        query_words = content_words(text)
        terms = query_words[:MAX_QUERY_WORDS]
        if not terms or k < 1:
            return []
        # With few content words, many titles tie on them (and the right one may not make the candidates);
        # the query's small words then pick "The Age" over "Age". Long queries need no help and skip their cost.
        small = [w for w in dict.fromkeys(words(text)) if w in STOPWORDS] if len(terms) <= SHORT_QUERY else []
        query = self._query(terms, small)
        if query is None:  # no word of the text, nor a variant of one, is in any title
            return []
        q_sequence = words(text)
        candidates = {}
        # BM25's best favour short titles; a title that holds every word typed (small ones too) is a candidate as
        # well, or among many near-copies ("Life of My Choice") the title typed in full may not make the cut.
        # The BM25 query goes last, so a title both find keeps its BM25 score (the tie-break).
        for candidate_query in (self._strict_query(text), query):
            if candidate_query is not None:
                for score, address in self._top(candidate_query, max(k, CANDIDATES)):
                    candidates[(address.segment_ord, address.doc)] = (score, address)
        ranked = []
        for score, address in candidates.values():
            doc = self._searcher.doc(address)  # loaded once: its title ranks it, the best become hits
            ranked.append((*_key(query_words, q_sequence, doc["title"][0]), score, doc))
        # Full ties (the same title under several uids) go to the record that comes first in the prep dir, as
        # dedup keeps the first: not to the first the index holds, which depends on how the build's threads
        # shared out the records.
        ranked.sort(key=lambda r: r[5]["row"][0])
        ranked.sort(key=lambda r: r[:5], reverse=True)
        return [self._hit(r[5], r[4], r[0]) for r in ranked[:k]]

    def _top(self, query, n: int) -> list:
        """The `n` best (score, address) hits, and every hit tied with the n-th: which of a tie at the cut tantivy
        keeps depends on the build's threads. A tie running past TIE_HITS x n is still cut there."""
        hits = self._searcher.search(query, TIE_HITS * n, count=False).hits
        return [h for h in hits if h[0] >= hits[n - 1][0]] if len(hits) > n else hits

    def lookup(self, text: str, min_coverage: float = MATCH_THRESHOLD) -> Hit | None:
        """The best hit for `text` when it covers at least `min_coverage` of the query's content words, else
        None: the product is not in the index (or the query says too little to tell which one it is)."""
        hits = self.search(text, k=1)
        return hits[0] if hits and hits[0].coverage >= min_coverage else None
