"""The chat template's own tokens in a model's embeddings: found untrained, initialised and trained on every backend.

Llama-3 *base* never saw `<|eot_id|>` or its header tokens: their rows are near zero, so a fine-tune that leaves them
frozen (LoRA alone) barely learns to end its answers. Tokens the tokenizer gained (`ensure_chat_template`) have no
row at all. Both kinds are set to the mean of the trained rows (as unsloth's `fix_untrained_tokens` does) and then
trained as PEFT trainable tokens, in the input embeddings and, when untied, the output embeddings.
"""

from __future__ import annotations

from pathlib import Path

# A row whose L2 norm is under this share of the mean row norm never learned anything (Llama-3 base: ~0 against ~1).
UNTRAINED_FRACTION = 0.01


def template_token_ids(tokenizer) -> list[int]:
    """Ids of the special tokens a rendered training example holds (BOS, role headers, end of turn), sorted."""
    from tc3.prompts import encode_example, prompt_messages

    prompt, completion, _ = encode_example(tokenizer, prompt_messages("x", "en"), "x")
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return sorted({i for i in prompt + completion if i in special})


def _trained_mask(weight):
    """Per row of an embedding matrix (rows x dim): whether its norm says it was trained."""
    norms = weight.detach().float().norm(dim=1)
    return norms >= UNTRAINED_FRACTION * norms.mean()


def rows_to_train(tokenizer, weights, rows_before: int | None = None) -> list[int]:
    """Template token ids whose row is untrained in any of `weights` (embedding matrices, rows x dim), or that have
    no row of their own (id >= rows_before, the rows the model had before it was resized)."""
    ids = template_token_ids(tokenizer)
    fix = {i for i in ids if rows_before is not None and i >= rows_before}
    for weight in weights:
        trained = _trained_mask(weight)
        fix |= {i for i in ids if i < weight.shape[0] and not trained[i]}
    return sorted(fix)


def embedding_matrices(model) -> list:
    """The input embedding matrix, and the output one when it is not the same tensor (untied)."""
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    return matrices


def initialise_rows(model, ids: list[int]) -> None:
    """Set rows `ids` of the input and output embeddings to the mean of their trained rows (no new randomness)."""
    import torch

    if not ids:
        return
    with torch.no_grad():
        for weight in embedding_matrices(model):
            trained = _trained_mask(weight)
            trained[ids] = False
            mean = weight[trained].sum(0, dtype=torch.float32) / trained.sum()
            weight[ids] = mean.to(weight.dtype)


def trainable_token_indices(model, ids: list[int]) -> dict[str, list[int]] | None:
    """PEFT's `trainable_token_indices` for rows `ids`: the input embedding module and, when untied, the output
    one (PEFT follows a tied output embedding by itself)."""
    if not ids:
        return None
    names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    targets = {names[model.get_input_embeddings()]: ids}
    if len(embedding_matrices(model)) == 2:
        targets[names[model.get_output_embeddings()]] = ids
    return targets


def make_rows_trainable(model, ids: list[int]) -> None:
    """Give the trainable-token deltas of rows `ids` (PEFT's `trainable_tokens_delta`, rows x dim) gradients (the
    trainer keeps them in fp32 with LoRA's matrices: `tc3.kernels.trainable_in_fp32`).

    Needed on unsloth: its `get_peft_model` (2026.10.x, through unsloth_zoo's `prepare_model_for_training`) freezes
    every parameter that is not a LoRA matrix, these deltas too, so the rows stayed at their initial mean while the
    run said they were trained. Raises RuntimeError when rows were asked for and the model has no delta for them."""
    if not ids:
        return
    deltas = [p for name, p in model.named_parameters() if "trainable_tokens_delta" in name]
    if not deltas:
        raise RuntimeError(f"template token rows {ids} were to be trained, but the model has no trainable tokens")
    for delta in deltas:
        delta.requires_grad_(True)


def rows_to_train_on_disk(model_path: Path | None, tokenizer) -> list[int] | None:
    """`rows_to_train` from a local model's safetensors files, without loading the model (for the dry run); None
    when its weights are not here or hold no `embed_tokens` / `lm_head` matrix."""
    if model_path is None:
        return None
    from safetensors import safe_open

    weights = []
    for path in sorted(Path(model_path).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as tensors:
            weights += [tensors.get_tensor(k) for k in tensors.keys() if k.endswith(("embed_tokens.weight",
                                                                                      "lm_head.weight"))]
    if not weights:
        return None
    return rows_to_train(tokenizer, weights, rows_before=weights[0].shape[0])


def expose_head_bias(model) -> None:
    """TRL's fused LM head reads `lm_head.weight` and `lm_head.bias`. PEFT's wrapper of a head with trainable
    tokens answers `.weight` with the trained rows merged in, but has no `.bias`: give it the head's own (None for
    the bias-free heads of causal LMs), so the loss sees the trained rows."""
    from peft.utils import TrainableTokensWrapper

    head = model.get_output_embeddings()
    if isinstance(head, TrainableTokensWrapper) and "bias" not in vars(head):
        base_bias = head.token_adapter.base_layer.bias
        if base_bias is not None:
            raise NotImplementedError("an output embedding with a bias cannot have trainable tokens under TRL")
        object.__setattr__(head, "bias", None)
