"""tc3-index: the tantivy product index of a prep dir (round trip, noisy titles, no-match, staleness, CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tc3 import index
from tc3.cli import index as cli
from tc3.errors import UserError
from tc3.index import ProductIndex, build_index, coverage, match_key, within_one_edit
from tc3.outputs import MARKER

SYNTAX = ':()"\'+-^[]{}~*?\\/!'


def records(prep: Path) -> list[dict]:
    return [
        dict(r, split=f.name.split("-")[0])
        for f in sorted((prep / "data").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]


def noisy(title: str) -> str:
    """Lower-cased, a typo in the longest word (its second and third letters swapped, or the second deleted
    when they are equal) and one other whitespace-separated token dropped."""
    w = max(index.words(title), key=len)
    typo = w[0] + w[2] + w[1] + w[3:] if w[1] != w[2] else w[0] + w[2:]
    tokens = title.lower().replace(w, typo, 1).split()
    del tokens[next(i for i, t in enumerate(tokens) if typo not in t)]
    return " ".join(tokens)


@pytest.fixture(scope="module")
def built(prep_dir, tmp_path_factory):
    """The real records' index, built beside (not inside) the read-only prep dir; and its meta."""
    out = tmp_path_factory.mktemp("index") / "index"
    meta = build_index(prep_dir, out)
    return ProductIndex.open(out), meta


@pytest.fixture
def prep_copy(prep_dir, tmp_path) -> Path:
    """A prep dir of our own, to build the index in its default place (PREP/index)."""
    return Path(shutil.copytree(prep_dir, tmp_path / "prep"))


def test_every_record_comes_back_by_uid(prep_dir, built):
    ix, meta = built
    rows = records(prep_dir)
    stats = json.loads((prep_dir / "stats.json").read_text())
    assert len(ix) == len(rows) == meta["total"] == stats["kept"]["total"]
    assert meta["records"] == {"train": stats["kept"]["train"], "validation": stats["kept"]["validation"]}
    for r in rows:
        hit = ix.get(r["uid"])
        assert (hit.uid, hit.title, hit.description, hit.split) == (r["uid"], r["title"], r["description"], r["split"])
    assert ix.get("no-such-uid") is None


def test_titles_are_found_top1_exact_and_noisy(prep_dir, built):
    ix, _ = built
    rows = [r for r in records(prep_dir) if len(r["title"].split()) >= 4]
    assert len(rows) > 200
    misses = 0
    for r in rows:
        assert ix.search(r["title"], k=1)[0].uid == r["uid"], r["title"]
        query = noisy(r["title"])
        best = ix.lookup(query)
        assert best is not None and best.coverage == 1.0, (r["title"], query)
        if best.uid != r["uid"]:  # only when the dropped word was what told them apart
            misses += 1
            assert match_key(query, best.title) >= match_key(query, r["title"]), (r["title"], query, best.title)
    assert misses <= 0.02 * len(rows)


def test_titles_with_syntax_characters_are_found(prep_dir, built):
    ix, _ = built
    rows = [r for r in records(prep_dir) if any(c in r["title"] for c in SYNTAX)]
    assert len(rows) > 20
    for r in rows:
        assert ix.lookup(r["title"]).uid == r["uid"]


@pytest.mark.parametrize("text", [
    SYNTAX, "title:foo", "(unclosed", '"half quoted', "a AND OR NOT b", "[1 TO 5]", "foo^2 bar~1", "\\", "*",
    "", "   ", "the", "x" * 300, "Ünïcödé — ✓ ☃ 漢字",
])
def test_query_syntax_never_raises(built, text):
    ix, _ = built
    hits = ix.search(text, k=3)
    assert isinstance(hits, list) and len(hits) <= 3
    assert ix.lookup(text) is None or ix.lookup(text).coverage >= index.MATCH_THRESHOLD


def test_absent_products_are_not_matched(built):
    ix, _ = built
    for text in ["Stainless Steel Espresso Machine with Milk Frother", "Bluetooth noise cancelling headphones",
                 "Cafeteira elétrica inox 220V", "the", "o que é"]:
        assert ix.lookup(text) is None, text


def test_coverage_rule():
    assert coverage("harry potter", "Harry Potter and the Goblet of Fire") == 1.0
    assert coverage("the potter of harry", "Harry Potter") == 1.0  # stopwords do not count
    assert coverage("hary pottre", "Harry Potter") == 1.0  # a deletion, a transposition
    assert coverage("cat dog", "The Cot and the Dig") == 0.0  # two 3-letter words must be equal
    assert coverage("cat dog", "The Cats and the Dogs") == 1.0  # one edit to a 4-letter word is fine
    assert coverage("harry potter wand", "Harry Potter") == pytest.approx(2 / 3)
    assert coverage("hardy pottery", "Harry Potter") == 1.0
    assert coverage("hxrdy potter", "Harry Potter") == 0.5  # two edits
    assert within_one_edit("abcd", "abdc") and within_one_edit("abcd", "abd") and within_one_edit("abc", "xabc")
    assert not within_one_edit("abcd", "badc") and not within_one_edit("abcd", "ab")


def test_results_do_not_depend_on_the_build_threads(tmp_path):
    """Titles shared by several uids (other editions) rank the same way however many threads built the index:
    a full tie goes to the record that comes first in the prep dir."""
    from conftest import realdata_records
    from tc3.prep import run

    base = realdata_records()
    copies = [dict(r, uid=f"{c}{r['uid'][1:]}", content=f"{r['content']} Edition {c}.")
              for r in base[::3] for c in "AZ"]
    trn = tmp_path / "trn.json"
    trn.write_text("".join(json.dumps(r) + "\n" for r in base + copies))
    run(inputs=[str(trn)], out_dir=str(tmp_path / "prep"), val_fraction=0.1)
    rows = records(tmp_path / "prep")
    results = []
    for threads in (1, 4):
        build_index(tmp_path / "prep", tmp_path / f"ix{threads}", threads=threads)
        ix = ProductIndex.open(tmp_path / f"ix{threads}")
        results.append([[h.uid for h in ix.search(r["title"], k=5)] for r in rows])
    assert results[0] == results[1]
    uids_of = {}
    for r in rows:
        uids_of.setdefault(r["title"], []).append(r["uid"])
    shared = {t: u for t, u in uids_of.items() if len(u) > 1}
    assert len(shared) > 100
    for r, hits in zip(rows, results[0]):
        if r["title"] in shared:
            assert hits[0] == shared[r["title"]][0]


W39, W40, W41 = "Quasiautobiographicalhistoriographymaxi"[:39], "Q" * 40, "R" * 41  # bytes, as written
UNICODE_TITLES = [
    "İstanbul Travel Guide",
    "Die Straße der Ölsardinen",
    "Café Olé: Recettes de Cuisine Française",
    "Işık ve Gölge Üzerine Denemeler",
    "ΟΔΟΣ ΠΡΟΣ ΤΗΝ ΕΛΕΥΘΕΡΙΑ",  # a final capital sigma: tantivy lower-cases it to σ, Python's str.lower to ς
    "東京タワー 写真集",
    "I ❤️ Cats 😺 Coloring Book",
    "Zażółć Gęślą Jaźń",
    f"Lexicon {W39} Edition",
    f"Almanac {W40} Volume",
    f"Gazetteer {W41} Atlas",
    "İİİİİİİİİİİİİİİİİİİ Marble",  # 38 bytes as written (kept), 57 once lower-cased
]


@pytest.fixture(scope="module")
def unicode_index(tmp_path_factory):
    """An index of the real records and the UNICODE_TITLES, built through tc3-prep: (index, {title: uid})."""
    from conftest import realdata_records
    from tc3.prep import run

    work = tmp_path_factory.mktemp("unicode")
    extra = [{"uid": f"U{i:09d}", "title": t, "content": f"A record about {t}, written for the index tests."}
             for i, t in enumerate(UNICODE_TITLES)]
    (work / "trn.json").write_text("".join(json.dumps(r) + "\n" for r in realdata_records() + extra))
    run(inputs=[str(work / "trn.json")], out_dir=str(work / "prep"), val_fraction=0.1)
    build_index(work / "prep")
    uids = {r["title"]: r["uid"] for r in records(work / "prep") if r["uid"].startswith("U")}
    assert len(uids) == len(UNICODE_TITLES)  # tc3-prep kept every one, its title unchanged
    return ProductIndex.open(work / "prep"), uids


@pytest.mark.parametrize("title", UNICODE_TITLES)
def test_a_title_in_any_script_is_found_as_typed(unicode_index, title):
    """Index and query share one analyzer: a title typed back exactly, or typed decomposed (NFD), is found, and
    every word of it that the query uses is a term the index holds."""
    import unicodedata

    ix, uids = unicode_index
    for typed in (title, unicodedata.normalize("NFD", title)):
        assert all(ix._searcher.doc_freq("title", w) for w in index.words(typed)), typed
        hit = ix.lookup(typed)
        assert hit is not None and hit.uid == uids[title] and hit.coverage == 1.0, typed


def test_words_are_the_terms_tantivy_indexes():
    """40 bytes as written is the limit (tantivy drops a word of 40 bytes or more before lower-casing)."""
    assert index.words(f"a {W39} {W40} {W41}") == ["a", W39.lower()]
    assert index.words("İstanbul ΟΔΟΣ Straße ıI") == ["i̇stanbul", "οδοσ", "straße", "ıi"]
    assert index.words("I ❤️ Cats 😺 東京タワー 写真集") == ["i", "cats", "東京タワー", "写真集"]
    assert index.words("Cafe\u0301 o\u0308l") == ["café", "öl"]  # NFD as typed, NFC as indexed


def test_query_operators_are_words(unicode_index):
    """Query text never becomes a query operator: quotes, AND/OR/NOT, `field:`, wildcards, ranges and boosts are
    separators or plain words, so a query that would mean something else to a query parser finds the same title."""
    ix, uids = unicode_index
    uid = uids["İstanbul Travel Guide"]
    for text in ['"İstanbul Travel Guide"', "İstanbul AND Travel AND Guide", "İstanbul* Travel? Guide~",
                 "+İstanbul -Travel Guide^", "(İstanbul OR Travel) Guide", "[İstanbul TO Travel] Guide"]:
        hit = ix.lookup(text)
        assert hit is not None and hit.uid == uid, text
    # a field name is a word like any other: the best hit, covering 3 of the 4 words (not enough to match)
    assert [h.uid for h in ix.search("title:İstanbul Travel Guide", k=1)] == [uid]
    assert ix.lookup("title:İstanbul Travel Guide") is None
    assert ix.lookup("uid:U000000001") is None and ix.lookup("* OR *") is None


def test_existing_index_is_kept_without_force(prep_copy):
    build_index(prep_copy)
    meta_file = prep_copy / "index" / index.META_NAME
    before = meta_file.read_text()
    with pytest.raises(UserError, match="exists"):
        build_index(prep_copy)
    assert meta_file.read_text() == before
    build_index(prep_copy, force=True)
    assert json.loads(meta_file.read_text())["total"] == len(ProductIndex.open(prep_copy))
    assert sorted(p.name for p in prep_copy.iterdir()) == [MARKER, "README.md", "data", "index", "stats.json"]


def test_interrupted_build_leaves_nothing(prep_copy):
    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(prep_copy, progress=interrupt)
    assert sorted(p.name for p in prep_copy.iterdir()) == [MARKER, "README.md", "data", "stats.json"]


def test_stale_index_is_detected(prep_copy):
    build_index(prep_copy)
    assert len(ProductIndex.open(prep_copy)) == len(ProductIndex.open(prep_copy / "index"))
    val = next((prep_copy / "data").glob("validation-*.parquet"))
    table = pq.read_table(val)
    pq.write_table(table.slice(0, table.num_rows - 1), val)
    for path in (prep_copy, prep_copy / "index"):
        with pytest.raises(UserError, match="stale"):
            ProductIndex.open(path)


def test_index_of_another_format_is_refused(prep_copy):
    build_index(prep_copy)
    meta_file = prep_copy / "index" / index.META_NAME
    meta_file.write_text(json.dumps(dict(json.loads(meta_file.read_text()), format=index.FORMAT - 1)))
    with pytest.raises(UserError, match="another version of tc3-index; rebuild it with --force"):
        ProductIndex.open(prep_copy)


def test_user_mistakes_raise_one_line_errors(prep_dir, prep_copy, tmp_path):
    with pytest.raises(UserError, match="not a tc3-prep output dir"):
        build_index(tmp_path)
    with pytest.raises(UserError, match="no index"):
        ProductIndex.open(prep_copy)
    with pytest.raises(UserError, match="holds the prep dir"):
        build_index(prep_copy, prep_copy, force=True)
    with pytest.raises(UserError, match="threads"):
        build_index(prep_dir, tmp_path / "ix", threads=0)


def test_cli_builds_and_queries(prep_copy, capsys):
    assert cli.main([str(prep_copy), "-q"]) == 0
    assert (prep_copy / "index" / index.META_NAME).is_file()
    r = records(prep_copy)[0]
    capsys.readouterr()
    assert cli.main([str(prep_copy), "--query", noisy(r["title"]) if len(r["title"].split()) >= 4 else r["title"],
                     "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert r["uid"] in out and f"lookup: {r['uid']}" in out
    assert cli.main([str(prep_copy), "--query", "Stainless Steel Espresso Machine"]) == 0
    assert "no product matches" in capsys.readouterr().out
    # a typed query is cleaned as the indexed titles were: markup and entities do not count against it
    assert cli.main([str(prep_copy), "--query", f"<b>{r['title'].replace('&', '&amp;')}</b>", "-k", "1"]) == 0
    assert f"lookup: {r['uid']}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["{prep}"], "exists; replace it with --force"),
    (["{tmp}/nowhere"], "is not a directory"),
    (["{tmp}", "--query", "x"], "neither a tc3-index dir nor a tc3-prep dir"),
    (["{prep}", "--query", "x", "-k", "0"], "-k must be at least 1"),
    (["{prep}", "--query", "  <br> "], "--query is empty"),
    (["{prep}", "--force", "--threads", "0"], "--threads must be at least 1"),
])
def test_cli_user_mistakes_exit_2_with_one_line(prep_copy, tmp_path, capsys, argv, message):
    build_index(prep_copy)
    capsys.readouterr()
    assert cli.main([a.format(prep=prep_copy, tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tc3-index: error: ") and message in err and err.count("\n") == 1


def test_tc3_prep_force_says_it_removes_the_index_of_the_old_data(tmp_path, capsys):
    from tc3.cli import prep as prep_cli

    prep = tmp_path / "prep"
    assert prep_cli.main(["--example", "-o", str(prep), "-q"]) == 0
    assert cli.main([str(prep), "-q"]) == 0 and cli.main([str(prep), "-o", str(prep / "titles"), "-q"]) == 0
    capsys.readouterr()
    assert prep_cli.main(["--example", "-o", str(prep), "-q", "--force", "--val-fraction", "0.2"]) == 0
    assert capsys.readouterr().err == (
        f"tc3-prep: the index {prep / 'index'} was built from the replaced data and is removed with it; rebuild it: "
        f"tc3-index {prep}\n"
        f"tc3-prep: the index {prep / 'titles'} was built from the replaced data and is removed with it; rebuild it: "
        f"tc3-index {prep} -o {prep / 'titles'}\n")
    assert not (prep / "index").exists() and not (prep / "titles").exists()
    assert prep_cli.main(["--example", "-o", str(prep), "-q", "--force"]) == 0
    assert capsys.readouterr().err == ""  # nothing to say when there was no index
