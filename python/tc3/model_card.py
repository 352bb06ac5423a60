"""The README.md model card of a trained adapter or merged model: base model, data, config, metrics, license."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import yaml

from tc3.layout import PrepDir
from tc3.models import hub_id, model_dir
from tc3.prompts import questions_card_section


def base_model_license(model: str) -> str:
    """The `license:` of the base model's own card when its files are here; "other" otherwise (check the base)."""
    local = model_dir(model)
    card = local / "README.md" if local else None
    if card is None or not card.is_file():
        return "other"
    text = card.read_text(encoding="utf-8", errors="replace")
    if text.startswith("---"):
        try:
            front = yaml.safe_load(text.split("---", 2)[1]) or {}
        except yaml.YAMLError:
            return "other"
        if isinstance(front, dict) and front.get("license"):
            return str(front["license"])
    return "other"


def public_path(path: str) -> str:
    """A path as a published card may show it: an absolute (or ~) path by its last part alone, which says what it
    was without telling the world the layout of the machine; a relative path as it is."""
    return Path(path).name if os.path.isabs(os.path.expanduser(path)) else path


def public_model(model: str) -> str:
    """How a card names a base model: its hub id (a hub-cache snapshot dir by the id it caches), else `public_path`."""
    return hub_id(model) or public_path(model)


def without_local_paths(value):
    """`value` (JSON-like: dicts, lists, scalars) with every absolute path string replaced by `public_path`."""
    if isinstance(value, dict):
        return {k: without_local_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_local_paths(v) for v in value]
    return public_path(value) if isinstance(value, str) and value else value


def data_summary(prep_dir: str) -> str:
    """What the prep report says about the data, when it is there (its input paths as `public_path` shows them)."""
    stats = PrepDir(prep_dir).stats
    what = f"A `tc3-prep` output dir (`{public_path(prep_dir)}`) of LF-Amazon-1.3M (AmazonTitles-1.3MM) `trn.json`"
    if stats is None:
        return what + "."
    report = without_local_paths(stats)
    return f"{what}; its report:\n\n```json\n{json.dumps(report, indent=2)}\n```"


def kinds_line(kinds: list[str] | None, grounded_kinds: list[str] | None = None) -> str:
    """Which content kinds of the prep output trained (the config's `kinds`, and `grounded_kinds` with their record
    only), and why review_quotes is left out of closed-book examples."""
    if kinds is None:
        return ("Content kinds: every kind of the prep output trained, review_quotes (press praise with its source) "
                "included: such a model writes invented press quotes (two answers in three for SmolLM2, issue 25).")
    line = f"Content kinds trained on: {', '.join(f'`{k}`' for k in kinds)} (tc3-prep's `kind` column)."
    if "review_quotes" not in kinds:
        line += (" `review_quotes` records (press praise with its source) were not trained closed book: so "
                 "trained, SmolLM2 wrote invented press quotes in 66% of its answers to held-out titles, without them in 0%.")
    if grounded_kinds:
        line += (f" Trained only with their own record in the prompt (grounded examples, never closed book): "
                 f"{', '.join(f'`{k}`' for k in grounded_kinds)}.")
    return line


def examples_section(config, metrics: dict) -> str:
    """Markdown on what max_length did to the examples and which template tokens' rows were trained."""
    lines = []
    fits = metrics.get("examples_fit_max_length")
    if fits:
        done = ("trimmed at a word boundary, the turn closed" if config.overlong == "trim" else "dropped")
        lines.append(f"Every example ends with its end-of-turn token: those over `max_length` ({config.max_length} "
                     f"tokens) were {done} (`overlong: {config.overlong}`).")
        lines += [f"- {split}: {f['whole']} whole, {f['trimmed']} trimmed, {f['dropped']} dropped"
                  for split, f in fits.items()]
    tokens = metrics.get("trained_template_tokens")
    if tokens is not None:
        lines.append("")
        lines.append(
            f"Template tokens whose embedding rows were untrained or new, set to the mean trained row and trained "
            f"(PEFT trainable tokens, saved with the adapter): {', '.join(f'`{t}`' for t in tokens)}."
            if tokens else "Every template token of the base model had a trained embedding row: none was retrained."
        )
    return "\n".join(lines).strip()


def plan_section(plan) -> str:
    """Markdown of the training plan (tc3.train.plan.TrainPlan): how the run ran on its machine. A run saved before
    plans were says so."""
    if plan is None:
        return "## Training plan\nNot recorded (a run saved before tc3 wrote its plan)."
    notes = "".join(f"\n- {note}" for note in plan.notes)
    return (f"## Training plan\nBackend `{plan.backend}` on {plan.device}, {plan.precision}, optimizer "
            f"`{plan.optimizer}`, global batch {plan.global_batch} ({plan.world_size} process(es)), attention: "
            f"{plan.attention}.{notes}\n```json\n{json.dumps(plan.to_dict(), indent=2)}\n```")


def front_matter(config, license_id: str, merged: bool) -> str:
    front = {
        # the Hub accepts only a hub id here; a model from a plain local dir is named in the text alone
        **({"base_model": hub_id(config.model)} if hub_id(config.model) else {}),
        "library_name": "transformers" if merged else "peft",
        "license": license_id,
        "language": ["pt", "en"],
        "pipeline_tag": "text-generation",
        "tags": ["tc3", "lora", "sft", "trl", "product-descriptions"] + (["merged"] if merged else []),
    }
    return yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()


def write_model_card(out_dir: Path, config, metrics: dict, merged: bool = False, plan=None) -> None:
    """OUT_DIR/README.md for the Hub: front matter (base_model only as a hub id), what the model is, its prompt,
    data, metrics, training plan (`plan`, tc3.train.plan.TrainPlan; None for a run saved before plans were), config
    and license. No absolute local path goes in (`public_path`)."""
    license_id = base_model_license(config.model)
    base = f"`{public_model(config.model)}`"
    if not hub_id(config.model):
        base += " (a local model folder, not on the Hub)"
    shown = dataclasses.replace(  # the config as the card shows it: no absolute local path
        config,
        model=public_model(config.model),
        data=public_path(config.data),
        output_dir=public_path(config.output_dir),
    )
    what = "A 16-bit model with a LoRA adapter merged in" if merged else "A LoRA adapter"
    card = f"""---
{front_matter(config, license_id, merged)}
---
# {Path(config.output_dir).name}

{what} for {base} that writes a product's description from its title, trained with
`tc3-train` (TRL SFTTrainer, loss on the description only).

## Prompt
One user turn, rendered by the tokenizer's chat template (`tc3.prompts.render_prompt`). The answer ends with
the template's end-of-turn token: stop generation on any of `tc3.prompts.end_token_ids(tokenizer)`.

{questions_card_section(config.questions, config.instruction, config.context_fraction)}

{examples_section(config, metrics)}

## Data
{data_summary(config.data)}

{kinds_line(config.kinds, config.grounded_kinds)}

Train examples: {metrics.get("train_examples")}, eval examples: {metrics.get("eval_examples")}
(seeded random samples, seed {config.seed}).

## Metrics
```json
{json.dumps(without_local_paths(metrics), indent=2)}
```

{plan_section(plan)}

## Config
```yaml
{shown.to_yaml().strip()}
```

## License
The weights derive from {base}: its license (`{license_id}`) and use policy apply.
The training text is Amazon product metadata as redistributed by the Extreme Classification Repository.
"""
    (Path(out_dir) / "README.md").write_text(card, encoding="utf-8")
