"""A run's examples: the splits sampled, measured and tokenized to max_length, and the lines that say what that did."""

from __future__ import annotations

from tc3.config import ConfigError, TrainConfig

LENGTH_SAMPLE = 5000  # examples tokenized to measure the length distribution


def measure_lengths(config: TrainConfig, tokenizer, train) -> dict:
    """Token-length statistics of a seeded sample of training sequences, and the max_length the run uses."""
    from tc3.data import derive_max_length, length_stats, sample, token_lengths

    lengths = token_lengths(tokenizer, sample(train, LENGTH_SAMPLE, config.seed))
    max_length = config.max_length or derive_max_length(lengths, config.max_length_percentile, config.max_length_cap)
    return {"stats": length_stats(lengths), "max_length": max_length}


def tokenized_splits(config: TrainConfig, tokenizer, state) -> dict:
    """{"train", "eval": tokenized datasets, "fits": {split: whole/trimmed/dropped counts}, "lengths"}: the splits
    sampled and tokenized to the derived max_length (here, not by TRL, whose truncation would cut the end token off
    long examples). One process fills the datasets cache while the others wait. ConfigError when a split keeps no
    example."""
    from tc3.data import tokenize_examples, training_splits

    with state.main_process_first(), state.local_main_process_first():
        train_set, eval_set = training_splits(config)
        lengths = measure_lengths(config, tokenizer, train_set)
        max_length = lengths["max_length"]
        (train_set, train_fits), (eval_set, eval_fits) = (
            tokenize_examples(split, tokenizer, max_length, config.overlong, config.dataset_num_proc)
            for split in (train_set, eval_set)
        )
    check_some_fit("train", train_fits, max_length)
    check_some_fit("eval", eval_fits, max_length)
    return {"train": train_set, "eval": eval_set, "fits": {"train": train_fits, "eval": eval_fits},
            "lengths": lengths}


def render_example(tokenizer, row) -> str:
    """A training example as the model sees it, with the point where the loss starts marked."""
    from tc3.prompts import split_rendered

    prompt, completion = split_rendered(tokenizer, row["prompt"], row["completion"][0]["content"])
    return f"{prompt}[loss from here →]{completion}"


def describe_fits(fits: dict, config: TrainConfig) -> str:
    """One line on what max_length did to the examples of a split."""
    done = "cut at a word boundary, turn closed" if config.overlong == "trim" else "left out"
    return (f"{fits['whole']} whole, {fits['trimmed']} trimmed ({done}), {fits['dropped']} dropped "
            f"(overlong: {config.overlong}; no example loses its end token)")


def check_some_fit(name: str, fits: dict, max_length: int) -> None:
    """ConfigError when max_length left no example of a split (every one dropped): training would stop in TRL."""
    if fits["whole"] + fits["trimmed"] == 0:
        raise ConfigError(f"no {name} example fits max_length {max_length} (all {fits['dropped']} dropped, even "
                          "trimmed to a word): raise max_length, or leave it null to derive it from the data")


def describe_token_rows(tokenizer, ids: list[int] | None) -> str:
    if ids is None:
        return "not checked (the weights are not on this machine yet)"
    if not ids:
        return "none: every template token has a trained row"
    names = ", ".join(f"{token} ({i})" for token, i in zip(tokenizer.convert_ids_to_tokens(ids), ids))
    return f"{names}: untrained or new, set to the mean trained row and trained (PEFT trainable tokens)"
