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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("work_dir")
    p.add_argument("-o", "--output", default="benches/results/gguf.json")
    p.add_argument("--model-name", help="what to call the base in the record (default: the adapter's base path)")
    args = p.parse_args()

    import llama_cpp
    import torch
    from tc3.export import export_merged
    from tc3.gguf import gguf_name
    from tc3.prompts import load_tokenizer, prompt_ids
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    asked = titles()
    result = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()} {platform.processor()} "
              f"{platform.system()} {platform.release()}, CPU", "date": datetime.date.today().isoformat(),
              "model": args.model_name or json.loads(
                  (Path(args.run_dir) / "adapter_config.json").read_text())["base_model_name_or_path"],
              "run": args.run_dir, "llama_cpp_python": llama_cpp.__version__, "max_new_tokens": NEW_TOKENS,
              "titles": asked, "quant": [], "answers": {}}
    compared, matched = {"fp32": 0, "f16_weights": 0}, {"fp32": 0, "f16_weights": 0}
    for quant in ("f16", "q8_0"):
        out = export_merged(args.run_dir, Path(args.work_dir) / f"export-{quant}", device="cpu", check=False,
                            gguf=quant)
        tokenizer = load_tokenizer(str(out))
        end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        llm = llama_cpp.Llama(str(out / gguf_name(quant)), n_ctx=1024, n_threads=2, verbose=False, logits_all=True)
        # transformers on the merged fp32 weights, and on the same weights rounded to f16 as the GGUF stores them
        hf = {"fp32": AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32),
              "f16_weights": AutoModelForCausalLM.from_pretrained(out, dtype=torch.float16).float()} \
            if quant == "f16" else {}
        result["quant"].append(quant)
        result["answers"][quant] = []
        for title in asked:
            ids = prompt_ids(tokenizer, title, "en")
            ours = []
            for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                if token == llm.token_eos() or len(ours) == NEW_TOKENS:
                    break
                ours.append(token)
            answer = {"title": title, "answer": tokenizer.decode(ours, clean_up_tokenization_spaces=False)}
            if "fp32" in hf:  # the next-token logits after the prompt: how far apart, and how close transformers' top 2
                llm.reset()
                llm.eval(ids)
                with torch.inference_mode():
                    theirs = hf["fp32"](torch.tensor([ids])).logits[0, -1]
                diff = (theirs - torch.tensor(llm.scores[len(ids) - 1])).abs().max()
                top2 = theirs.topk(2).values
                answer |= {"prompt_max_logit_diff": round(float(diff), 4),
                           "transformers_top2_margin": round(float(top2[0] - top2[1]), 4)}
            for name, model in hf.items():
                with torch.inference_mode():
                    theirs = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                            eos_token_id=end, pad_token_id=end)[0, len(ids):].tolist()
                theirs = theirs[:theirs.index(end)] if end in theirs else theirs
                same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
                text = tokenizer.decode(theirs, clean_up_tokenization_spaces=False)
                answer[f"transformers_{name}"] = {"identical": ours == theirs, "tokens_equal_before_divergence": same,
                                                  "answer": text}
                compared[name] += max(len(ours), len(theirs))
                matched[name] += ours == theirs
            result["answers"][quant].append(answer)
        llm.close()
    result |= {"greedy_match": matched["fp32"] == len(asked), "tokens_compared": compared["fp32"],
               "greedy_match_f16_weights": matched["f16_weights"] == len(asked)}
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
