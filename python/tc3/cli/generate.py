"""tc3-generate: descriptions from titles with a fine-tuned model (merged, or an adapter over its base)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext

from tc3.staging import staged_open

EXIT_WORDS = {"sair", "exit", "quit"}


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="merged model or LoRA adapter: a local dir or a Hub id")
    p.add_argument("--base", help="base model of an adapter (default: base_model_name_or_path of its config)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; 1 is faster on a busy box)")


def set_threads(args) -> None:
    if getattr(args, "threads", None):
        if args.threads <= 0:
            raise ValueError("--threads must be positive")
        import torch

        torch.set_num_threads(args.threads)


def add_generation_args(p: argparse.ArgumentParser, max_new_tokens: int = 256, seed: bool = True,
                        instruction: str | None = "en") -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--instruction", default=instruction,
                   help="'en', 'pt' or a literal instruction (default: "
                   + (f"{instruction})" if instruction else "the model is asked as it was trained)"))
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    g.add_argument("--repetition-penalty", type=float, default=1.15,
                   help="over the generated tokens only (default: 1.15; 1 turns it off)")
    g.add_argument("--penalize-prompt", action="store_true",
                   help="the repetition penalty also counts the prompt's tokens (transformers' behaviour): the "
                   "title's and the record's words are then pushed out of the answer")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=0.7, help="with --sample")
    g.add_argument("--top-p", type=float, default=0.9, help="with --sample")
    g.add_argument("--top-k", type=int, default=50, help="with --sample")
    if seed:
        g.add_argument("--seed", type=int, help="with --sample: make it reproducible")


def settings_from(args):
    from tc3.generate import GenerationSettings

    if args.max_new_tokens <= 0:
        raise ValueError("--max-new-tokens must be positive")
    if args.repetition_penalty <= 0:
        raise ValueError("--repetition-penalty must be positive")
    if args.sample and args.temperature <= 0:
        raise ValueError("--temperature must be positive")
    return GenerationSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
                              do_sample=args.sample, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, seed=getattr(args, "seed", None),
                              penalize_prompt=args.penalize_prompt,
                              **({"instruction": args.instruction} if args.instruction else {}))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tc3-generate",
        description="Write a product description from its title. --title: one answer; --input: a JSONL of answers; "
        "neither: an interactive loop (exit/sair/Ctrl-D to leave). A question around a title ('What is \"X\" "
        "about?', 'O que é \"X\"?') is reduced to the title unless --literal. --grounded --index DIR answers from "
        "the product's own record in a tc3-index; JSONL rows then carry matched, source_uid and source_title.",
    )
    add_model_args(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--title", help="one title (or a question around one); prints its description")
    what.add_argument("--input", help="text file (a title a line), JSONL with 'title', or a tc3-prep output dir")
    p.add_argument("--split", default="validation", help="split of a tc3-prep dir given to --input")
    p.add_argument("--output", "-o", help="JSONL file for --input (default: stdout); it appears only once every "
                   "answer is in it (written as .NAME.PID.partial until then)")
    p.add_argument("--batch-size", type=int, default=8)
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
            raise ValueError("--index is used only with --grounded")
        return None
    if not args.index:
        raise ValueError("--grounded needs --index (a tc3-index dir, or the tc3-prep dir it was built in)")
    from tc3.index import ProductIndex

    return ProductIndex.open(args.index)


# The interactive loop speaks the language of the instruction it asks with: English, or Portuguese with "pt".
LOOP_TEXT = {
    "en": {"intro": "Type a product title or a question about one ('exit' to leave).", "ask": "\nTitle: ",
           "interrupted": " [interrupted]"},
    "pt": {"intro": "Digite o título de um produto ('sair' para terminar).", "ask": "\nTítulo: ",
           "interrupted": " [interrompido]"},
}


def interactive(loaded, settings, literal: bool = False, read=input, out=sys.stdout, index=None) -> None:
    """The course's loop: ask for a title, stream the answer token by token, leave on exit/quit/sair/Ctrl-D."""
    from tc3.generate import Stream, read_as, title_from_query
    from tc3.grounding import find, found_text, stream_found

    text = LOOP_TEXT["pt" if settings.instruction == "pt" else "en"]
    out.write(text["intro"] + "\n")
    out.flush()
    while True:
        try:
            line = read(text["ask"])
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            break
        if line.strip().lower() in EXIT_WORDS:
            break
        title = title_from_query(line, literal=literal)
        if not title:
            continue
        if index is None:
            note = read_as(line, title)
            pieces = Stream(loaded, title, settings)
        else:
            found = find(index, line, literal)
            note = found_text(found)
            pieces = stream_found(loaded, found, settings)
        if note:
            out.write(note + "\n")
        try:
            for piece in pieces:
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write(text["interrupted"])
        out.write("\n")
        out.flush()


def run(args) -> int:
    from tc3.generate import generate_batch, load_model, quiet_libraries, read_as, read_titles, title_from_query
    from tc3.grounding import answer_found, answer_grounded, find, found_text

    quiet_libraries()
    set_threads(args)
    if args.batch_size <= 0:
        raise ValueError("--batch-size must be positive")
    settings = settings_from(args)
    records = read_titles(args.input, split=args.split) if args.input else None
    index = open_index(args)
    loaded = load_model(args.model, base=args.base, device=args.device, dtype=args.dtype)

    def answer(titles: list[str]):
        if index is None:
            return generate_batch(loaded, titles, settings, args.batch_size)
        return answer_grounded(loaded, index, titles, settings, args.batch_size, literal=True)

    if args.title is not None:
        title = title_from_query(args.title, literal=args.literal)
        if not title:
            raise ValueError("--title is empty")
        if index is None:
            note, generation = read_as(args.title, title), generate_batch(loaded, [title], settings)[0]
        else:
            found = find(index, args.title, args.literal)
            note, generation = found_text(found), answer_found(loaded, [found], settings)[0]
        if note:  # what was looked up and found, on stderr: stdout stays the answer alone
            print(note, file=sys.stderr)
        print(generation.description or generation.extra.get("message", ""))
        return 0
    if records is None:
        interactive(loaded, settings, literal=args.literal, index=index)
        return 0
    titles = [r["title"] for r in records]  # files hold titles: taken literally
    with staged_open(args.output) if args.output else nullcontext(sys.stdout) as out:
        done = 0
        for start in range(0, len(titles), args.batch_size):
            chunk = titles[start : start + args.batch_size]
            for record, generation in zip(records[start:], answer(chunk)):
                row = {"uid": record["uid"]} if "uid" in record else {}
                row.update(generation.as_record())
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            done += len(chunk)
            print(f"tc3-generate: {done}/{len(titles)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from tc3.generate import InputError, ModelLoadError
    from tc3.index import ProductIndexError

    try:
        return run(args)
    except (ModelLoadError, InputError, ProductIndexError, ValueError, OSError) as err:
        print(f"tc3-generate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tc3-generate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
