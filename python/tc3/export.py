"""Merge a trained LoRA adapter into a full-precision copy of its base: a plain model dir for transformers, vLLM and
llama.cpp, which stops where the fine-tune ends its answers, and a measure of how far it departs from the adapter.

* dtype: by default the one the adapter was trained in (its saved training plan's ``precision``; for a run saved
  before plans were, its config's explicit ``precision``, else the dtype the base is stored in), so an fp32 run is
  not silently rounded to bf16 and a bf16 run over an fp32 base is not widened;
* end token: ``config.json``, ``generation_config.json`` and the tokenizer all name the token that ends an answer
  under the chat template (Llama-3: ``<|eot_id|>``), not the base's end-of-text;
* QLoRA: the adapter was trained over 4-bit weights, and the export merges it into the 16-bit originals (merging
  into rounded weights would keep their rounding error). Instead of claiming that changes nothing, the export loads
  the adapter as it was trained and evaluated (unmerged, over its own base) and measures the largest logit
  difference and the greedy agreement between it and the merged model on a few titles (``export_check.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tc3.config import ConfigError
from tc3.gguf import MODELFILE, QUANTS as GGUF_QUANTS, check_supported, modelfile, write_gguf
from tc3.layout import RunDir
from tc3.model_ref import ResolvedModel, resolve_model
from tc3.models import check_model_folder, check_model_ref, go_offline_if_possible
from tc3.outputs import check_dest, staged_dir
from tc3.runtime import PRECISIONS, TORCH_NAMES, precision_of

QUANTIZED_SUFFIX = "-bnb-4bit"  # unsloth's pre-quantized repos; the 16-bit weights are the same id without it
# Titles the merged model and the adapter both answer to measure how far apart they are.
CHECK_TITLES = ("Mog's Kittens", "Girls Ballet Tutu Neon Pink", "Anker PowerCore 10000 Portable Charger",
                "The Prophet (Hardcover)", "Stainless Steel Garlic Press", "Harry Potter and the Goblet of Fire",
                "Yoga Mat with Carrying Strap, 6 mm", "The Very Hungry Caterpillar (Board Book)")
# A greedy choice whose lead over the runner-up is under this many logits is a near-tie: rounding may flip it.
NEAR_TIE = 0.1
CHECK_NEW_TOKENS = 32
CHECK_FILE = "export_check.json"


def sixteen_bit_base(base: str) -> str:
    """The base to merge into. Merging into 4-bit weights would bake their rounding error into the merged model, so
    unsloth's pre-quantized id is replaced by its 16-bit original (any other quantized base is refused once it is
    resolved: `check_mergeable`)."""
    return base[: -len(QUANTIZED_SUFFIX)] if base.endswith(QUANTIZED_SUFFIX) else base


def check_mergeable(target: ResolvedModel) -> None:
    if target.quantized:
        raise ConfigError(f"base {target.base} is quantized; pass --base with its 16-bit weights")


def trained_dtype(target: ResolvedModel) -> str:
    """fp32, bf16 or fp16: the precision the adapter was trained in, from its saved training plan. A run saved before
    plans were: its config's explicit ``precision``, else the dtype the base's weights are stored in (what training
    on CPU keeps; bf16 when the base does not say)."""
    if target.plan is not None:
        return target.plan.precision
    precision = target.config.precision if target.config else "auto"
    if precision != "auto":
        return precision
    stored = target.weights.model_config or {}
    stored = stored.get("dtype") or stored.get("torch_dtype")
    return precision_of(stored) if stored in TORCH_NAMES.values() else "bf16"


def answer_end_token(tokenizer) -> str:
    """The token the chat template closes an assistant answer with (Llama-3: ``<|eot_id|>``; SmolLM2:
    ``<|im_end|>``), else the tokenizer's EOS."""
    from tc3.prompts import END_OF_TURN_TOKENS, completion_messages, prompt_messages, render_prompt

    marker = "tc3-answer-marker"
    prompt = render_prompt(tokenizer, "X", "en")
    full = tokenizer.apply_chat_template(prompt_messages("X", "en") + completion_messages(marker), tokenize=False)
    after = full[len(prompt):].split(marker, 1)[-1]
    vocab = tokenizer.get_vocab()
    found = [(after.find(token), token) for token in END_OF_TURN_TOKENS if token in after and token in vocab]
    return min(found)[1] if found else tokenizer.eos_token


def name_end_token(model, tokenizer) -> int:
    """Make config, generation config and tokenizer all end on the answer's end token; returns its id. The
    generation config keeps the other end tokens after it, so plain transformers stops on any of them."""
    from tc3.prompts import end_token_ids

    token = answer_end_token(tokenizer)
    others = end_token_ids(tokenizer)
    tokenizer.eos_token = token
    end = tokenizer.convert_tokens_to_ids(token)
    model.config.eos_token_id = end
    model.generation_config.eos_token_id = [end, *[i for i in others if i != end]]
    return end


def departure(adapter, merged, titles=CHECK_TITLES, max_new_tokens: int = CHECK_NEW_TOKENS) -> dict:
    """How far the merged model is from the adapter it came from (both LoadedModel), on ``titles``: how many greedy
    answers agree; the largest absolute logit difference over each prompt and the adapter's answer; and, at each
    position of the adapter's answers, whether the merged model's first choice is the adapter's, counted apart where
    the adapter's lead over its runner-up is over ``NEAR_TIE`` logits (``decisive_*``: there the two must agree)."""
    import torch

    from tc3.generate import GenerationSettings, generate_batch
    from tc3.prompts import prompt_ids

    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    theirs = generate_batch(adapter, titles, settings)
    ours = generate_batch(merged, titles, settings)
    largest, positions, agree, decisive, decisive_agree = 0.0, 0, 0, 0, 0
    for title, answer in zip(titles, theirs):
        prompt = prompt_ids(adapter.tokenizer, title, settings.instruction)
        ids = prompt + adapter.tokenizer(answer.description, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            a = adapter.model(input_ids=torch.tensor([ids], device=adapter.device)).logits.float().cpu()[0]
            b = merged.model(input_ids=torch.tensor([ids], device=merged.device)).logits.float().cpu()[0]
        largest = max(largest, float((a - b).abs().max()))
        answer_logits = slice(len(prompt) - 1, len(ids))  # the positions that chose each answer token and the end
        top2 = a[answer_logits].topk(2, dim=-1).values
        same = a[answer_logits].argmax(-1) == b[answer_logits].argmax(-1)
        sure = (top2[:, 0] - top2[:, 1]) > NEAR_TIE
        positions += len(same)
        agree += int(same.sum())
        decisive += int(sure.sum())
        decisive_agree += int((same & sure).sum())
    return {
        "titles": list(titles),
        "max_new_tokens": max_new_tokens,
        "greedy_agree": sum(x.description == y.description for x, y in zip(theirs, ours)),
        "max_logit_diff": largest,
        "positions": positions,
        "top1_agree": agree,
        "near_tie": NEAR_TIE,
        "decisive_positions": decisive,
        "decisive_agree": decisive_agree,
        "answers": [{"title": t, "adapter": x.description, "merged": y.description}
                    for t, x, y in zip(titles, theirs, ours)],
    }


def export_merged(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, dtype: str = "auto",
                  device: str | None = None, check: bool = True, gguf: str | None = None) -> Path:
    """Write base + adapter, merged, in ``dtype`` (auto, fp32, bf16, fp16) to ``out_dir``, with tokenizer, config,
    plan, model card and (``check``) ``export_check.json``, the :func:`departure` of the merged model from the
    adapter; with ``gguf`` (a quant of tc3.gguf.QUANTS: f16, q8_0, q4_k_m) also ``model-<quant>.gguf`` and an Ollama
    ``Modelfile`` (tc3.gguf). Returns ``out_dir``. Raises UserError for a user mistake."""
    from tc3.models import load_model

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    run = RunDir(check_model_folder(str(adapter_dir), "adapter", adapter=True))
    check_dest(out_dir, "tc3-export")
    if gguf is not None and gguf not in GGUF_QUANTS:
        raise ConfigError(f"gguf quant must be one of {', '.join(GGUF_QUANTS)}, got {gguf!r}")
    if dtype != "auto" and dtype not in PRECISIONS:
        raise ConfigError(f"dtype must be auto, {', '.join(PRECISIONS)}, got {dtype!r}")
    trained_base = run.adapter_config["base_model_name_or_path"]
    base = base or sixteen_bit_base(trained_base)
    check_model_ref(base, "base")
    go_offline_if_possible(base)
    target = resolve_model(str(adapter_dir), base, run)
    check_mergeable(target)
    trained = trained_dtype(target)
    dtype = trained if dtype == "auto" else dtype

    merged = load_model(target, device=device, dtype=dtype, merge=True)
    result = None
    if check:  # the adapter as it was trained and evaluated: over its own base, unmerged where that is 4-bit
        adapter = load_model(target.over(trained_base), device=merged.device, dtype=trained, merge=False)
        result = {"dtype": dtype, "base": base, "adapter_base": trained_base, **departure(adapter, merged)}
        adapter.close()
    write_export(target, merged, out_dir, result, gguf)
    return out_dir


def write_export(target: ResolvedModel, merged, out_dir: Path, check: dict | None, gguf: str | None) -> None:
    """The merged model's folder, written whole: weights, the tokenizer as the trainer saved it (ending on the
    answer's end token), the GGUF and Modelfile, export_check.json, and the run's config, plan and a model card."""
    from tc3.model_card import write_model_card
    from tc3.prompts import load_tokenizer

    # the tokenizer as the trainer saved it (load_model readies its copy for batched generation: left padding)
    tokenizer = load_tokenizer(str(target.tokenizer_path))
    name_end_token(merged.model, tokenizer)
    if gguf is not None:
        check_supported(merged.model.config)  # before the merge is written, not after

    run = target.run
    with staged_dir(out_dir, "tc3-export") as staging:  # whole or absent: a half-written merge never sits at out_dir
        merged.model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        if gguf is not None:
            written = write_gguf(merged.model, tokenizer, staging, gguf)
            (staging / MODELFILE).write_text(modelfile(tokenizer, written.name), encoding="utf-8")
        if check is not None:
            (staging / CHECK_FILE).write_text(json.dumps(check, indent=2, ensure_ascii=False) + "\n")
        if run.plan is not None:
            run.plan.save(staging / RunDir.PLAN)
        if run.config is not None:
            run.config.save(staging / RunDir.CONFIG)
            write_model_card(staging, run.config, {**run.metrics, "merged_into": target.base}, merged=True,
                             plan=run.plan)
