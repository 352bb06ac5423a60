#!/usr/bin/env python
"""A tc3-train run exported to GGUF (f16 and q8_0) answering real titles through llama.cpp (llama-cpp-python),
with the f16 file's greedy tokens compared against transformers' on the merged model.

    python benches/gguf_smollm2.py RUN_DIR WORK_DIR -o benches/results/gguf.json

RUN_DIR: a tc3-train output (the README's main job: SmolLM2-135M-Instruct, 10 steps on CPU). WORK_DIR: where the
exports go (tc3-export outputs). Titles: the last three records of the bundled sample
(the records `tc3-prep --example` reads). Greedy, no repetition penalty, so the two runtimes are compared token for token.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

NEW_TOKENS = 48


def titles(count: int = 3) -> list[str]:
    import gzip
    from importlib.resources import files

    sample = files("tc3") / "samples" / "amazon_titles_sample500.jsonl.gz"
    with gzip.open(sample, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [r["title"] for r in records if r["title"].strip()][-count:]


def parse_args() -> argparse.Namespace:
    """The command line's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("work_dir")
    p.add_argument("-o", "--output", default="benches/results/gguf.json")
    p.add_argument("--model-name", help="what to call the base in the record (default: the adapter's base path)")
    return p.parse_args()


def base_record(args: argparse.Namespace, asked: list[str], llama_cpp_version: str) -> dict:
    """The record's head (command, machine, date, model, run, settings, titles), with no quant or answer yet."""
    return {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()} {platform.processor()} "
            f"{platform.system()} {platform.release()}, CPU", "date": datetime.date.today().isoformat(),
            "model": args.model_name or json.loads(
                (Path(args.run_dir) / "adapter_config.json").read_text())["base_model_name_or_path"],
            "run": args.run_dir, "llama_cpp_python": llama_cpp_version, "max_new_tokens": NEW_TOKENS,
            "titles": asked, "quant": [], "answers": {}}


def llama_greedy(llm, ids: list[int]) -> list[int]:
    """llama.cpp's greedy answer to the prompt `ids`: at most NEW_TOKENS tokens, without the end token."""
    ours = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        if token == llm.token_eos() or len(ours) == NEW_TOKENS:
            break
        ours.append(token)
    return ours


def prompt_logits(llm, model, ids: list[int]) -> dict:
    """The next-token logits after the prompt: the largest difference between llama.cpp's and transformers'
    (`model`), and how close transformers' top 2 are."""
    import torch

    llm.reset()
    llm.eval(ids)
    with torch.inference_mode():
        theirs = model(torch.tensor([ids])).logits[0, -1]
    diff = (theirs - torch.tensor(llm.scores[len(ids) - 1])).abs().max()
    top2 = theirs.topk(2).values
    return {"prompt_max_logit_diff": round(float(diff), 4),
            "transformers_top2_margin": round(float(top2[0] - top2[1]), 4)}


def transformers_greedy(model, tokenizer, ids: list[int], ours: list[int], end: int) -> tuple[list[int], dict]:
    """transformers' greedy answer tokens to the prompt `ids`, and its record: whether it equals llama.cpp's `ours`,
    how many tokens agree before they part, and its text."""
    import torch

    with torch.inference_mode():
        theirs = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                eos_token_id=end, pad_token_id=end)[0, len(ids):].tolist()
    theirs = theirs[:theirs.index(end)] if end in theirs else theirs
    same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    text = tokenizer.decode(theirs, clean_up_tokenization_spaces=False)
    return theirs, {"identical": ours == theirs, "tokens_equal_before_divergence": same, "answer": text}


def answer_title(llm, tokenizer, hf: dict, title: str, end: int, compared: dict, matched: dict) -> dict:
    """One title's record: llama.cpp's answer and, for each transformers model of `hf`, how it compares (tallied
    into `compared` and `matched`)."""
    from tc3.prompts import prompt_ids

    ids = prompt_ids(tokenizer, title, "en")
    ours = llama_greedy(llm, ids)
    answer = {"title": title, "answer": tokenizer.decode(ours, clean_up_tokenization_spaces=False)}
    if "fp32" in hf:  # the next-token logits after the prompt: how far apart, and how close transformers' top 2
        answer |= prompt_logits(llm, hf["fp32"], ids)
    for name, model in hf.items():
        theirs, answer[f"transformers_{name}"] = transformers_greedy(model, tokenizer, ids, ours, end)
        compared[name] += max(len(ours), len(theirs))
        matched[name] += ours == theirs
    return answer


def answer_quant(args: argparse.Namespace, quant: str, asked: list[str], compared: dict, matched: dict) -> list[dict]:
    """The run exported to GGUF at `quant`, answering each title in llama.cpp (and, for f16, compared with
    transformers); returns the titles' records."""
    import llama_cpp
    import torch
    from tc3.export import export_merged
    from tc3.gguf import gguf_name
    from tc3.prompts import load_tokenizer
    from transformers import AutoModelForCausalLM

    out = export_merged(args.run_dir, Path(args.work_dir) / f"export-{quant}", device="cpu", check=False,
                        gguf=quant)
    tokenizer = load_tokenizer(str(out))
    end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    llm = llama_cpp.Llama(str(out / gguf_name(quant)), n_ctx=1024, n_threads=2, verbose=False, logits_all=True)
    # transformers on the merged fp32 weights, and on the same weights rounded to f16 as the GGUF stores them
    hf = {"fp32": AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32),
          "f16_weights": AutoModelForCausalLM.from_pretrained(out, dtype=torch.float16).float()} \
        if quant == "f16" else {}
    answers = [answer_title(llm, tokenizer, hf, title, end, compared, matched) for title in asked]
    llm.close()
    return answers


def main() -> int:
    args = parse_args()

    import llama_cpp
    import torch

    torch.set_num_threads(2)
    asked = titles()
    result = base_record(args, asked, llama_cpp.__version__)
    compared, matched = {"fp32": 0, "f16_weights": 0}, {"fp32": 0, "f16_weights": 0}
    for quant in ("f16", "q8_0"):
        result["quant"].append(quant)
        result["answers"][quant] = answer_quant(args, quant, asked, compared, matched)
    result |= {"greedy_match": matched["fp32"] == len(asked), "tokens_compared": compared["fp32"],
               "greedy_match_f16_weights": matched["f16_weights"] == len(asked)}
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
