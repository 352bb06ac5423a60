"""Seeded generator of a synthetic LF-Amazon-1.3M `trn.json` with the statistics of the real file.

The text is resampled from 500 real records (benches/seed_corpus.json.gz): contents and titles are built
from word windows (2-7 words) of the real text, so they read and tokenize like it while nearly never
colliding by accident; the real quirks (entities, double escapes, `--This text refers to` suffixes,
Reed footers, repeated blurbs, metadata-only contents, tags) are added at the rates of the real file.

    python benches/gen_trn.py -o benches/data/trn.json                 # 2,248,619 lines, ~1.9 GB
    python benches/gen_trn.py --records 50000 -o small.json --gz       # also writes small.json.gz
    python benches/gen_trn.py --records 3000 --quirks 0.05 -o q.json   # + malformed/edge-case lines
    python benches/gen_trn.py --build-corpus       # remake seed_corpus.json.gz from the bundled real records

Records are made in fixed blocks, each from its own seed (SeedSequence(seed, block)), so one seed always
gives the same bytes.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import html
import itertools
import json
import re
import sys
import time
import unicodedata
import zlib
from json.encoder import encode_basestring_ascii as jstr
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "seed_corpus.json.gz"
# The 500 real records the corpus comes from (trn.json lines), as `tc3-prep --example` reads them.
REAL_RECORDS = Path(__file__).resolve().parents[1] / "python" / "tc3" / "samples" / "amazon_titles_sample500.jsonl.gz"
BLOCK = 1 << 16
N_LABELS = 1_305_265

# Inverse CDFs (quantile -> characters, interpolated in log space) of the real non-empty lengths.
CONTENT_Q = ([0, .01, .05, .25, .5, .75, .95, .99, .999, .99999, 1],
             [8, 25, 70, 194, 398, 805, 1728, 3000, 7000, 40000, 197622])
TITLE_Q = ([0, .05, .25, .5, .75, .95, .999, 1], [4, 15, 32, 54, 80, 118, 300, 1999])  # 118: suffixes add the rest

# Empty rates from the real counts (empty title 126,834; empty content 749,901; both 18,519).
P_EMPTY_TITLE = 126_834 / 2_248_619
P_EMPTY_CONTENT_GIVEN_EMPTY_TITLE = 18_519 / 126_834
P_EMPTY_CONTENT_GIVEN_TITLE = (749_901 - 18_519) / (2_248_619 - 126_834)
P_BOOK = 0.6          # ISBN-like uids; the suffix and footer rates below apply to these
P_TTRT, P_TTRT_ONLY, P_REED = 0.24, 0.1, 0.14
P_BLURB, P_SAME_AS_TITLE, P_METADATA = 0.055, 0.005, 0.005
P_ENTITY, P_TITLE_ENTITY, P_DOUBLE, P_TAGS, P_CONTROL, P_TITLE_SUFFIX = 0.135, 0.03, 0.004, 0.01, 0.002, 0.08
N_BLURBS = 10_000

TTRT = (["--This text refers to an out of print or unavailable edition of this title."] * 60
        + ["--This text refers to thePaperbackedition."] * 20 + ["--This text refers to theHardcoveredition."] * 10
        + ["--This text refers to an alternatePaperbackedition.", "--This text refers to an alternateHardcoveredition.",
           "--This text refers to theAudio Cassetteedition.", "--This text refers to theLibrary Bindingedition.",
           "--This text refers to thePrint on Demand (Paperback)edition.",
           "--This text refers to theAudio CDedition."] * 2)
REED_ELSEVIER = "Copyright &copy; Reed Business Information, a division of Reed Elsevier Inc. All rights reserved."
MONTHS = ["", "", "(Jan.)", "(Mar.)", "(June)", "(Oct.)", " (Nov.)"]
METADATA = ["VHS Tape", "Audio CD", "Paperback", "Hardcover", "DVD", "Audio Cassette", "Kindle Edition", "Vinyl"]
TITLE_SUFFIXES = [" [VHS]", " (Paperback)", " [DVD]", " (Audio CD)", ": A Novel", " (Hardcover)", " (Book 2)"]
APOS = ["&#8217;", "&#x2019;", "&rsquo;", "&#x92;", "&#146;", "&#39;"]
QUOTES = [("&#8220;", "&#8221;"), ("&#x201C;", "&#x201D;"), ("&ldquo;", "&rdquo;"), ("&quot;", "&quot;")]
DASHES = ["&mdash;", "&#8212;", "&#x2014;", "&#151;", "&#x97;", "&ndash;", "&#8211;"]
ELLIPSES = ["&#8230;", "&#x2026;", "&hellip;"]
EXTRAS = [" &amp; ", "&#160;", "&#xA0;", "&nbsp;", " &copy; ", " &#x2022; ", " Fran&#xE7;ois ", " caf&eacute; ",
          "&#xB9; "]
TAGS = ["<b>{}</b>", "<p>{}</p>", "<i>{}</i>", "{}<br /><br />", "<P>{}<br>"]

# --quirks: lines the real file does not have but a reader must survive (malformed, odd text).
QUIRK_LINES = [
    b"", b"   ", b"\t", b"[1, 2]", b'"a string"', b"null", b"42", b"{", b'{"title": "x", "content": "y"} trailing',
    b'{"uid": "Q1", "title": 5, "content": "a number as title is a bad field type"}',
    b'{"uid": "Q2", "title": "Fine title", "content": ["a", "list"]}', b'{"uid": 7, "title": "t", "content": "c"}',
    b'{"uid": "Q3", "title": null, "content": "the title is null so this record has an empty title"}',
    b'{"uid": "Q4", "title": "A title with a null content", "content": null}',
    b'{"title": "No uid: the cleaned title is hashed", "content": "A content long enough to pass the length filter."}',
    b'{"uid": "Q5", "content": "The title key is missing altogether, so the title is empty."}',
    b'{"uid": "Q6", "title": "Lone surrogate", "content": "bad \\ud800 escape in a string is invalid json"}',
    (b'{"uid": "Q7", "title": "Caf\xc3\xa9 raw UTF-8", '
     b'"content": "R\xc3\xa9sum\xc3\xa9 with raw\xc2\xa0NBSP, zero\xe2\x80\x8bwidth '
     b'and a pair \\ud83d\\ude00 escape."}'),
    b'{"uid": "Q8", "title": "Invalid UTF-8", "content": "a stray \xff byte"}',
    (b'{"uid": "Q9", "title": "Controls", '
     b'"content": "tab\\tnew\\nline \\u0001 \\u0085 nel \\u2060 joiner \\ufeff bom \\u00a0 and done."}'),
    (b'{"uid": "Q10", "title": "AT&amp;amp;T &copy &notit; &#x80; &#0; &#1114112; &ampx", '
     b'"content": "Entity edges: &amp;amp;amp; &#X41;&#65; &#xD800; &lt;b&gt;bold&lt;/b&gt; &amp;quot;q&amp;quot;."}'),
    (b'{"uid": "Q11", "title": "<b></b>", '
     b'"content": "A title made only of a tag is empty once cleaned, so it is dropped."}'),
    (b'{"uid": "Q12", "title": "Tags", '
     b'"content": "x<!-- a\\ncomment -->y a < b > c <3 <p class=\\"k\\">para</p> and <br/>end of tags."}'),
    (b'{"uid": "Q13", "title": "Footers", '
     b'"content": "A review of some length here.(c) 1995 Reed Business Information, Inc. More text follows."}'),
    (b'{"uid": "Q14", "title": "Footers 2", "content": "Another review text.&copy;1997 by Reed Business Information, '
     b'a division of Reed Elsevier, Inc. All rights reserved --this Text Refers To the tail"}'),
    (b'{"uid": "Q15", "title": "Suffix", '
     b'"content": "Only a refers-to: this text refers to\\u00a0something\\nacross lines"}'),
    (b'{"uid": "Q16", "title": "The Same As Its Title, Long Enough To Pass", '
     b'"content": "the same as its title -- long enough to pass!"}'),
    b'{"uid": "Q17", "title": "  ", "content": "A whitespace-only title is empty after cleaning and is dropped."}',
    (b'{"uid": "Q18", "title": "Extra fields", "content": "Other fields are ignored even when they are odd.", '
     b'"target_ind": {"a": [1]}, "x": null}'),
    (b'{"uid": "Q19", "title": "Cafe\\u0301 Headset&microphone \xe2\x80\xa8 &copy 2021", '
     b'"content": "Explains List&lt;String&gt; and vector<int>&lt;br&gt;: <Product> a<b and c>d, &copy2020, R&D."}'),
]


def fold_ascii(s: str) -> str:
    """Real text as plain ASCII, without the suffixes and footers the generator adds back at known rates."""
    s = html.unescape(html.unescape(s))
    s = re.sub(r"-*\s*this text refers to\b.*\Z", "", s, flags=re.I | re.S)
    s = re.sub(r"Copyright[^.]*Reed Business Information[^.]*(\.[^.]*reserved)?\.?", "", s, flags=re.I)
    s = s.translate(str.maketrans({"\u2019": "'", "\u2018": "'", "\u201a": "'", "\u2039": "'", "\u201c": '"',
                                   "\u201d": '"', "\u2014": "--", "\u2013": "-", "\u2026": "...", "\u2022": "*",
                                   "\xa0": " ", "\xa9": "(c)"}))
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


def build_corpus(real: Path = REAL_RECORDS) -> None:
    """Writes CORPUS from `real`, trn.json lines (gzipped or not) of real records."""
    with gzip.open(real, "rt", encoding="utf-8") if real.suffix == ".gz" else real.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    corpus = {"titles": [fold_ascii(r["title"]) for r in records],
              "contents": [c for c in (fold_ascii(r["content"]) for r in records) if c]}
    CORPUS.write_bytes(gzip.compress(json.dumps(corpus, indent=0).encode(), mtime=0))
    print(f"wrote {CORPUS} ({len(corpus['titles'])} titles, {len(corpus['contents'])} contents)")


class Pools:
    """Word windows of the real text, blurbs that repeat, and label lists, all from one seed."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1 << 40]))  # apart from the block seeds
        corpus = json.loads(gzip.decompress(CORPUS.read_bytes()))
        # Split on single spaces so double spaces of the real text survive the join.
        self.content, self.content_len = windows(rng, " ".join(corpus["contents"]).split(" "), 2, 7, 1 << 17)
        self.title, self.title_len = windows(rng, " ".join(corpus["titles"]).split(" "), 1, 4, 1 << 15)
        self.blurbs = build_texts(rng, self.content, self.content_len, sample_lengths(rng, CONTENT_Q, N_BLURBS))
        counts = np.minimum(1 + rng.negative_binomial(1.2, 1.2 / 22.2, 1 << 16), 1000)
        ids = np.sort(rng.integers(0, N_LABELS, counts.sum()) + np.repeat(np.arange(counts.size) * N_LABELS, counts))
        groups = np.split(ids, np.cumsum(counts)[:-1])
        self.labels = [f'"target_ind": [{", ".join(map(str, (g - i * N_LABELS).tolist()))}], '
                       f'"target_rel": [{", ".join(["1.0"] * g.size)}]' for i, g in enumerate(groups)]


def windows(rng, words: list[str], lo: int, hi: int, n: int):
    starts = rng.integers(0, len(words) - hi, n).tolist()
    sizes = rng.integers(lo, hi + 1, n).tolist()
    pool = [" ".join(words[s:s + k]).strip(" ") or "the" for s, k in zip(starts, sizes, strict=True)]
    # Texts join ~25 windows: keep half the real double spaces so ~18% of texts have one, as real ones do.
    pool = [p if keep else p.replace("  ", " ") for p, keep in zip(pool, (rng.random(n) < 0.5).tolist(), strict=True)]
    return pool, np.array([len(p) + 1 for p in pool])  # +1: the joining space


def sample_lengths(rng, q, n: int) -> np.ndarray:
    return np.exp(np.interp(rng.random(n), q[0], np.log(q[1]))).astype(np.int64)


def build_texts(rng, pool: list[str], pool_len: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Joins random windows into texts of about the given lengths, all in one vectorised draw."""
    n_draw = int(lengths.sum() / pool_len.mean() * 1.1) + 2 * lengths.size + 100
    idx = rng.integers(0, len(pool), n_draw)
    ends = np.searchsorted(np.cumsum(pool_len[idx]), np.cumsum(lengths))
    ends = np.maximum.accumulate(ends - np.arange(ends.size)) + np.arange(1, ends.size + 1)  # >= 1 window each
    idx, bounds = idx.tolist(), [0] + ends.tolist()
    texts = [" ".join([pool[j] for j in idx[a:b]]) for a, b in itertools.pairwise(bounds)]
    return [t[:1].upper() + t[1:] for t in texts]


def with_entities(s: str, rng) -> str:
    """Writes the non-ASCII punctuation one way throughout a record, as the real records do."""
    r = rng.integers(0, 1 << 30, 6).tolist()
    s = s.replace("'", APOS[r[0] % len(APOS)]).replace("--", DASHES[r[1] % len(DASHES)])
    s = s.replace("...", ELLIPSES[r[2] % len(ELLIPSES)])
    if '"' in s:
        open_, close = QUOTES[r[3] % len(QUOTES)]
        parts = s.split('"')
        s = parts[0] + "".join((open_ if i % 2 else close) + p for i, p in enumerate(parts[1:], 1))
    if "&" not in s:
        at = s.find(" ", r[4] % max(len(s), 1))
        s = s + EXTRAS[r[5] % len(EXTRAS)].rstrip() if at < 0 else s[:at] + EXTRAS[r[5] % len(EXTRAS)] + s[at + 1:]
    return s


def with_tags(s: str, rng) -> str:
    cut = s.find(" ", int(rng.integers(0, max(len(s), 1))))
    cut = len(s) if cut < 0 else cut
    return TAGS[int(rng.integers(0, len(TAGS)))].format(s[:cut]) + s[cut:]


def make_uids(index: np.ndarray, book: np.ndarray, seed: int) -> list[str]:
    """Unique ASIN-like uids: an ISBN-10 (with check digit) for books, B0 + 8 base-36 characters otherwise."""
    n = (index * 2_654_435_761 + seed * 97) % 10**9
    digits = (n[:, None] // 10 ** np.arange(8, -1, -1)) % 10
    check = (11 - (digits * np.arange(10, 1, -1)).sum(1) % 11) % 11
    m = (index * 1_500_000_000_001 + seed) % 36**8  # K coprime to 36**8; index * K < 2**63 up to 6M records
    b36 = (m[:, None] // 36 ** np.arange(7, -1, -1)) % 36
    alnum = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", np.uint8)
    codes = np.where(book[:, None],
                     np.concatenate([digits + 48, np.where(check == 10, 88, check + 48)[:, None]], 1),
                     np.concatenate([np.full((index.size, 2), [66, 48]), alnum[b36]], 1))
    return codes.astype(np.uint8).view("S10").ravel().astype(str).tolist()


def gen_block(pools: Pools, seed: int, block: int, n: int, quirks: float) -> bytes:
    rng = np.random.default_rng(np.random.SeedSequence([seed, block]))
    u = rng.random((n, 14))
    empty_title = u[:, 0] < P_EMPTY_TITLE
    empty_content = u[:, 1] < np.where(empty_title, P_EMPTY_CONTENT_GIVEN_EMPTY_TITLE, P_EMPTY_CONTENT_GIVEN_TITLE)
    book = u[:, 2] < P_BOOK
    uids = make_uids(np.arange(block * BLOCK, block * BLOCK + n, dtype=np.int64), book, seed)
    titles = build_texts(rng, pools.title, pools.title_len, sample_lengths(rng, TITLE_Q, n))
    contents = build_texts(rng, pools.content, pools.content_len, sample_lengths(rng, CONTENT_Q, n))
    labels = rng.integers(0, len(pools.labels), n).tolist()
    blurb = (rng.random(n) ** 2 * N_BLURBS).astype(int).tolist()  # skewed: series blurbs repeat a lot
    picks = rng.integers(0, 1 << 30, (n, 3)).tolist()
    flags = (u[:, 3:12] < [P_BLURB, P_SAME_AS_TITLE, P_METADATA, P_ENTITY, P_DOUBLE, P_TAGS, P_CONTROL,
                           P_TITLE_ENTITY, P_TITLE_SUFFIX]).tolist()
    ttrt = (book & (u[:, 12] < P_TTRT)).tolist()
    reed = (book & (u[:, 13] < P_REED)).tolist()
    empty_title, empty_content = empty_title.tolist(), empty_content.tolist()
    out = []
    for i in range(n):
        is_blurb, same, meta, ent, double, tags, control, title_ent, suffix = flags[i]
        p0, p1, p2 = picks[i]
        title = "" if empty_title[i] else titles[i] + (TITLE_SUFFIXES[p0 % len(TITLE_SUFFIXES)] if suffix else "")
        if title_ent and title:
            title = with_entities(title, rng)
        if empty_content[i]:
            content = ""
        elif same and title:
            content = title
        elif meta:
            content = METADATA[p1 % len(METADATA)]
        else:
            content = pools.blurbs[blurb[i]] if is_blurb else contents[i]
            if ent:
                content = with_entities(content, rng)
                if double:
                    content = content.replace("&", "&amp;")
            if tags:
                content = with_tags(content, rng)
            if control:
                content = content.replace(". ", ".\n" if p2 % 2 else ".\t", 1)
            if reed[i]:
                year = 1985 + p2 % 24
                footer = REED_ELSEVIER if p2 % 4 == 0 else f"Copyright {year} Reed Business Information, Inc."
                content += MONTHS[p1 % len(MONTHS)] + footer
            if ttrt[i]:
                suffix_only = p1 % 1000 < P_TTRT_ONLY * 1000  # the suffix is the whole content
                content = TTRT[p2 % len(TTRT)] if suffix_only else content + TTRT[p2 % len(TTRT)]
        out.append(f'{{"uid": "{uids[i]}", "title": {jstr(title)}, "content": {jstr(content)}, '
                   f'{pools.labels[labels[i]]}}}\n')
    data = "".join(out).encode()
    return add_quirks(data, rng, quirks, every_kind=block == 0) if quirks else data


def add_quirks(data: bytes, rng, rate: float, every_kind: bool) -> bytes:
    lines = data.split(b"\n")[:-1]
    kinds = len(QUIRK_LINES) + 2
    hit = np.flatnonzero(rng.random(len(lines)) < rate).tolist()
    kind = rng.integers(0, kinds, len(hit)).tolist()
    if every_kind:  # each kind at least once (spread evenly), so even a small file tests them all
        hit += np.linspace(0, len(lines) - 1, kinds).astype(int).tolist()
        kind += list(range(kinds))
    for i, k in sorted(zip(hit, kind, strict=True), reverse=True):  # from the end so indices stay valid
        if k == len(QUIRK_LINES):
            lines[i] += b"\r"  # a CRLF line
        elif k == len(QUIRK_LINES) + 1:
            lines[i] = lines[i][: len(lines[i]) // 2]  # truncated: invalid json
        else:
            lines.insert(i, QUIRK_LINES[k])
    return b"\n".join(lines) + b"\n"


def generate(path: Path, records: int, seed: int, quirks: float = 0.0, gz_too: bool = False) -> None:
    pools = Pools(seed)
    gz_path = path if path.suffix == ".gz" else path.with_name(path.name + ".gz") if gz_too else None
    path.parent.mkdir(parents=True, exist_ok=True)  # benches/data/ is ignored, so a fresh clone lacks it
    with contextlib.ExitStack() as files:
        plain = None if path.suffix == ".gz" else files.enter_context(open(path, "wb"))
        gz = files.enter_context(open(gz_path, "wb")) if gz_path else None
        deflate = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip header with mtime 0, no name
        for block in range((records + BLOCK - 1) // BLOCK):
            data = gen_block(pools, seed, block, min(BLOCK, records - block * BLOCK), quirks)
            if block == 0 and quirks:
                data = b"\xef\xbb\xbf" + data  # a BOM at the start of the file
            if plain:
                plain.write(data)
            if gz:
                gz.write(deflate.compress(data))
        if gz:
            gz.write(deflate.flush())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("benches/data/trn.json"))
    ap.add_argument("--records", type=int, default=2_248_619)
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--gz", action="store_true", help="also write OUTPUT.gz (an OUTPUT ending in .gz is gzip only)")
    ap.add_argument("--quirks", type=float, default=0.0, help="rate of inserted malformed/edge-case lines")
    ap.add_argument("--build-corpus", type=Path, nargs="?", const=REAL_RECORDS, metavar="TRN_JSON",
                    help="rebuild seed_corpus.json.gz from trn.json lines (default: the bundled real records) and exit")
    args = ap.parse_args(argv)
    if args.build_corpus:
        return build_corpus(args.build_corpus)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generate(args.output, args.records, args.seed, args.quirks, args.gz)
    print(f"wrote {args.records:,} records to {args.output} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
