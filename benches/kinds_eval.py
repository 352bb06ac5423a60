"""Content kinds (issue 17): the engine's rules against hand labels, and invented attributions in answers.

    python benches/kinds_eval.py labels [--labels tests/data/kinds_labels.jsonl] [--out benches/results/content-kinds.json]
    python benches/kinds_eval.py attributions ANSWERS.jsonl

`labels` cleans the bundled real records with the engine (`tc3.prep.clean_batch`: the per-record rules,
no dedup, so every labelled record gets a kind), compares each labelled record's `kind` with its label
and reports precision and recall per kind, over all labels and over the held-out ones (labelled after
the rules were written): JSON on stdout, and written to `--out` when given.

`attributions` reads JSON lines `{"title", "reference", "answer"}` (the record's title and description,
and a model's answer for it) and reports the share of answers holding an invented attribution: a quote
followed by a source name (found by the engine's own rule) that the record does not contain.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa

from tc3 import prep
from tc3.cli.prep import EXAMPLE_INPUT
from tc3.eval.faithfulness import invented_attributions

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "tests" / "data" / "kinds_labels.jsonl"


def engine_kinds(records: list[dict]) -> dict[str, str]:
    """uid -> kind the engine gives the record, for the records its per-record filters keep."""
    table = pa.table({name: [r.get(name) for r in records] for name in ("uid", "title", "content")})
    kept, _ = prep.clean_batch(table)
    return dict(zip(kept.column("uid").to_pylist(), kept.column("kind").to_pylist()))


def sample_records() -> list[dict]:
    """The bundled real records (trn.json lines: uid, title, content)."""
    with gzip.open(EXAMPLE_INPUT.open("rb"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def label_scores(labels_path: Path = LABELS) -> dict:
    """`score` of the engine's kinds against the hand labels in `labels_path` (JSON lines uid, kind, note,
    held_out), over all labels and, under `held_out`, over those labelled after the rules were written."""
    rows = [json.loads(line) for line in labels_path.read_text().splitlines()]
    predicted = engine_kinds(sample_records())
    result = score({d["uid"]: d["kind"] for d in rows}, predicted)
    held_out = {d["uid"]: d["kind"] for d in rows if d.get("held_out")}
    return result | ({"held_out": score(held_out, predicted)} if held_out else {})


def score(labels: dict[str, str], predicted: dict[str, str]) -> dict:
    """Precision and recall per kind over the labelled records the engine kept (None where undefined)."""
    pairs = [(labels[uid], predicted[uid]) for uid in labels if uid in predicted]
    confusion = Counter(pairs)
    precision, recall, support, predictions = {}, {}, {}, {}
    for kind in prep.CONTENT_KINDS:
        hit = confusion[(kind, kind)]
        support[kind] = sum(n for (truth, _), n in confusion.items() if truth == kind)
        predictions[kind] = sum(n for (_, guess), n in confusion.items() if guess == kind)
        precision[kind] = round(hit / predictions[kind], 4) if predictions[kind] else None
        recall[kind] = round(hit / support[kind], 4) if support[kind] else None
    return {
        "labelled": len(labels), "scored": len(pairs), "not_kept": len(labels) - len(pairs),
        "accuracy": round(sum(confusion[(k, k)] for k in prep.CONTENT_KINDS) / max(len(pairs), 1), 4),
        "precision": precision, "recall": recall, "support": support, "predicted": predictions,
        "confusion": {f"{truth} -> {guess}": n for (truth, guess), n in sorted(confusion.items()) if truth != guess},
    }


def invented_attribution_share(rows: list[dict]) -> dict:
    """Share of answers with at least one invented attribution; rows hold title, reference and answer."""
    flagged = [bool(invented_attributions(r["answer"], f"{r['title']} {r['reference']}")) for r in rows]
    return {"answers": len(rows), "with_invented_attribution": sum(flagged),
            "invented_attribution_share": round(sum(flagged) / len(rows), 4) if rows else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("labels", help="precision and recall of the kind rules on the hand labels")
    p.add_argument("--labels", type=Path, default=LABELS)
    p.add_argument("--out", type=Path, help="also write the result here (JSON)")
    a = sub.add_parser("attributions", help="invented-attribution share of a set of answers")
    a.add_argument("answers", type=Path, help="JSON lines with title, reference and answer")
    args = parser.parse_args(argv)
    if args.command == "labels":
        result = label_scores(args.labels)
    else:
        result = invented_attribution_share([json.loads(line) for line in args.answers.read_text().splitlines()
                                             if line.strip()])
    if getattr(args, "out", None):
        # Keys the scores do not hold (the measured effect of filtering) stay as they were.
        kept = json.loads(args.out.read_text()) if args.out.is_file() else {}
        args.out.write_text(json.dumps(kept | result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
