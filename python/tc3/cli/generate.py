"""tc3-generate: descriptions from titles with a fine-tuned model (merged, or an adapter over its base)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from pathlib import Path

from tc3.cache_keys import GENERATION_MODULES, code_and_prompts
from tc3.cli.args import add_generation_args, add_model_args, make_parser, positive_int, set_threads, settings_from
from tc3.errors import INTERRUPTED, MODEL_MODULES, UserError, command, need, one_line
from tc3.outputs import check_dest, fingerprint, resumable_jsonl
from tc3.progress import Ticker
from tc3.user_text import accept

EXIT_WORDS = {"sair", "exit", "quit"}
TICKER = ("tc3-generate", "titles")  # a bar on a terminal, a line a batch in a log


def parser() -> argparse.ArgumentParser:
    p = make_parser(
        prog="tc3-generate",
        description="Write a product description from its title. --title: one answer; --input: a JSONL of answers; "
        "neither: an interactive loop (exit/sair/Ctrl-D to leave). A question around a title ('What is \"X\" "
        "about?', 'O que é \"X\"?') is reduced to the title unless --literal. --grounded --index DIR answers from "
        "the product's own record in a tc3-index; JSONL rows then carry matched, source_uid and source_title.",
    )
    add_model_args(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--title", help="one title (or a question around one); prints its description")
    what.add_argument("--input", help="text file (a title a line), JSONL with 'title', CSV/TSV with a 'title' "
                      "column, or a tc3-prep output dir")
    p.add_argument("--split", default="validation", help="split of a tc3-prep dir given to --input")
    p.add_argument("--output", "-o", help="JSONL file for --input (default: stdout); it appears only once every "
                   "answer is in it (written as .NAME.KEY.partial until then; an interrupted run keeps that file "
                   "and the same command continues from it); replaces only a file tc3-generate wrote")
    p.add_argument("--batch-size", type=positive_int, default=8, help="titles of --input generated together")
    p.add_argument("--literal", action="store_true",
                   help="--title and the interactive loop: use the text as the title even if it is a question "
                   "(titles read from --input are always literal)")
    add_grounding_args(p)
    add_generation_args(p)
    return p


def add_grounding_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("grounded answers")
    g.add_argument("--grounded", action="store_true",
                   help="look the product up in a tc3-index and answer from its record (shown beside the answer); "
                   "say so instead of answering when no record matches well enough")
    g.add_argument("--index", help="with --grounded: the index dir, or the tc3-prep dir it was built in "
                   "(tc3-index PREP_DIR)")


def open_index(args):
    """The ProductIndex --grounded asks for, or None; opened before the model so that a bad path fails at once."""
    if not args.grounded:
        if args.index:
            raise UserError("--index is used only with --grounded")
        return None
    if not args.index:
        raise UserError("--grounded needs --index (a tc3-index dir, or the tc3-prep dir it was built in)")
    from tc3.index import ProductIndex

    return ProductIndex.open(args.index)


# The interactive loop speaks the language of the instruction it asks with: English, or Portuguese with "pt".
LOOP_TEXT = {
    "en": {"intro": "Type a product title or a question about one ('exit' to leave).", "ask": "\nTitle: ",
           "interrupted": " [interrupted]"},
    "pt": {"intro": "Digite o título de um produto ('sair' para terminar).", "ask": "\nTítulo: ",
           "interrupted": " [interrompido]"},
}


def line_editing() -> None:
    """Line editing and history for the loop's `input()` on a terminal (arrows move, Up recalls an earlier title):
    importing the standard library's readline is what turns them on. Where it is missing (Windows), input stays
    plain."""
    try:
        import readline  # noqa: F401
    except ImportError:
        pass


def interactive(loaded, settings, literal: bool = False, read=input, out=sys.stdout, index=None) -> int:
    """The course's loop: ask for a title, stream the answer token by token. Ctrl-C during an answer stops it (the
    model stops and its thread is joined) and asks again; exit/quit/sair or Ctrl-D leaves with status 0, Ctrl-C at
    the prompt with 130. A text the loop refuses (too long, a prompt the model cannot hold) is one line, then the
    next prompt. Returns the exit status."""
    from tc3.generate import Stream, read_as, title_from_query
    from tc3.grounding import find, found_text, stream_found

    text = LOOP_TEXT["pt" if settings.instruction == "pt" else "en"]
    out.write(text["intro"] + "\n")
    out.flush()
    while True:
        try:
            line = read(text["ask"])
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\n")
            return INTERRUPTED
        if line.strip().lower() in EXIT_WORDS:
            return 0
        try:
            typed = accept(line)
            title = title_from_query(typed, literal=literal)
            if not title:
                continue
            if index is None:
                note = read_as(line, title)  # also when only the cleaning changed the text
                pieces = Stream(loaded, title, settings)
            else:
                found = find(index, typed, literal)
                note = found_text(found)
                pieces = stream_found(loaded, found, settings)
            if note:
                out.write(note + "\n")
            with closing(iter(pieces)) as answer:  # closed on Ctrl-C: the model stops before the next prompt
                for piece in answer:
                    out.write(piece)
                    out.flush()
        except UserError as err:
            out.write(f"tc3-generate: error: {one_line(err)}")
        except KeyboardInterrupt:
            out.write(text["interrupted"])
        out.write("\n")
        out.flush()


def run(args) -> int:
    from tc3.generate import (generate_batch, load_model, quiet_libraries, read_as, read_titles, settings_used,
                              title_from_query)
    from tc3.grounding import answer_found, answer_grounded, find, found_text
    from tc3.model_ref import resolve_model

    # Every mistake that can be seen before the model loads is reported before it loads.
    need("train", *MODEL_MODULES)
    if args.output and args.input is None:
        raise UserError("--output is for --input (the answer to --title, and the interactive loop, are printed)")
    settings = settings_from(args)
    title = text = None
    if args.title is not None:
        text = accept(args.title, "--title: ")  # bounded, and cleaned as tc3-prep cleaned the training titles
        title = title_from_query(text, literal=args.literal)
        if not title:
            raise UserError("--title is empty" + (" once cleaned of markup" if args.title.strip() else ""))
    records = read_titles(args.input, split=args.split) if args.input else None
    if args.output:
        check_dest(args.output, "tc3-generate", folder=False)
    index = open_index(args)
    model = resolve_model(args.model, base=args.base)
    quiet_libraries()
    set_threads(args)
    loaded = load_model(model, device=args.device, dtype=args.dtype)

    def answer(titles: list[str]):
        if index is None:
            return generate_batch(loaded, titles, settings, args.batch_size)
        return answer_grounded(loaded, index, titles, settings, args.batch_size, literal=True)

    if title is not None:
        if index is None:
            note, generation = read_as(args.title, title), generate_batch(loaded, [title], settings)[0]
        else:
            found = find(index, text, args.literal)
            note, generation = found_text(found), answer_found(loaded, [found], settings)[0]
        if note:  # what was looked up and found, on stderr: stdout stays the answer alone
            print(note, file=sys.stderr)
        print(generation.description or generation.extra.get("message", ""))
        return 0
    if records is None:
        line_editing()
        return interactive(loaded, settings, literal=args.literal, index=index)
    if args.output:
        key = fingerprint(Path(args.input), args.split, model.fingerprint, settings.as_dict(),
                          args.batch_size, args.index, args.device, args.dtype, *code_and_prompts(*GENERATION_MODULES))
        with resumable_jsonl(args.output, "tc3-generate", key) as (done, out), Ticker(*TICKER) as ticker:
            if done:
                print(f"tc3-generate: {len(done)} answers kept from an interrupted run; going on", file=sys.stderr)
            write_answers(records, len(done), answer, args.batch_size, out, ticker.update,
                          settings_used(settings))
    else:
        with Ticker(*TICKER) as ticker:
            write_answers(records, 0, answer, args.batch_size, sys.stdout, ticker.update, settings_used(settings))
    if records.skipped:
        lines = ", ".join(map(str, records.skipped[:10])) + (" ..." if len(records.skipped) > 10 else "")
        print(f"tc3-generate: skipped {len(records.skipped)} rows with an empty title (lines {lines})", file=sys.stderr)
    return 0


def write_answers(records: list[dict], start: int, answer, batch_size: int, out, progress, used: dict) -> None:
    """One JSON line an answer to `out`, batch by batch from record `start`, flushed after each batch; `answer`
    takes the titles of a batch (files hold titles: taken literally); `progress(done, total)` after each batch;
    `used` (tc3.generate.settings_used) is each line's ``settings``: the decoding generate() ran with."""
    titles = [r["title"] for r in records]
    for first in range(start, len(titles), batch_size):
        chunk = titles[first : first + batch_size]
        for record, generation in zip(records[first:], answer(chunk)):
            row = {"uid": record["uid"]} if "uid" in record else {}
            row.update(generation.as_record(), settings=used)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()
        progress(first + len(chunk), len(titles))


@command("tc3-generate", interrupted="interrupted; answers already in an -o file are kept: the same command goes on")
def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
