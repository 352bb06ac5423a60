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
              "model": json.loads((Path(args.run_dir) / "adapter_config.json").read_text())["base_model_name_or_path"],
              "run": args.run_dir, "llama_cpp_python": llama_cpp.__version__, "max_new_tokens": NEW_TOKENS,
              "titles": asked, "quant": [], "answers": {}}
    compared = matched = 0
    for quant in ("f16", "q8_0"):
        out = export_merged(args.run_dir, Path(args.work_dir) / f"export-{quant}", device="cpu", check=False,
                            gguf=quant)
        tokenizer = load_tokenizer(str(out))
        end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        llm = llama_cpp.Llama(str(out / gguf_name(quant)), n_ctx=1024, n_threads=2, verbose=False)
        hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32) if quant == "f16" else None
        result["quant"].append(quant)
        result["answers"][quant] = []
        for title in asked:
            ids = prompt_ids(tokenizer, title, "en")
            ours = []
            for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                if token == llm.token_eos() or len(ours) == NEW_TOKENS:
                    break
                ours.append(token)
            result["answers"][quant].append({"title": title, "answer": tokenizer.decode(ours)})
            if hf is not None:
                with torch.inference_mode():
                    theirs = hf.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                         eos_token_id=end, pad_token_id=end)[0, len(ids):].tolist()
                theirs = theirs[:theirs.index(end)] if end in theirs else theirs
                compared += max(len(ours), len(theirs))
                matched += ours == theirs
        llm.close()
    result |= {"greedy_match": matched == len(asked), "tokens_compared": compared}
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
