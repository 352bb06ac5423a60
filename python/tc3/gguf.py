"""A merged Llama-family model as one GGUF file for llama.cpp, LM Studio and Ollama, and an Ollama ``Modelfile``.

The file is written with the ``gguf`` package (llama.cpp's own ``gguf-py``): its writer, its Hugging Face to GGUF
tensor-name map, its reader of special tokens, merges and chat template, and its Q8_0 quantizer. What it does not
ship, and what this module therefore does, is llama.cpp's converter logic for Llama: the hyperparameter keys, the
vocabulary with token types, the pre-tokenizer name and the rotary permutation of the q/k projections.
``q4_k_m`` needs llama.cpp's k-quant quantizer, which comes with ``llama-cpp-python`` (optional).

Inside the GGUF: the tokenizer (byte-level BPE: tokens, types, merges), the chat template, and the token that ends
an answer (Llama-3 ``<|eot_id|>``, SmolLM2 ``<|im_end|>``) as EOS and EOT, so llama.cpp stops where tc3 does.

Supported: ``model_type`` llama (Llama-2/3, SmolLM2 ...) with default RoPE and a byte-level BPE tokenizer whose
pre-tokenizer llama.cpp knows (GPT-2, Llama-3, SmolLM). Anything else is a UserError naming what is not supported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tc3.errors import UserError

QUANTS = ("f16", "q8_0", "q4_k_m")
MODELFILE = "Modelfile"
# Llama-3's pre-tokenizer split (tokenizer.json), which llama.cpp calls "llama-bpe".
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def gguf_name(quant: str) -> str:
    """The GGUF's file name in an export dir: ``model-<quant>.gguf``."""
    return f"model-{quant}.gguf"


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for the pre-tokenizer of a tokenizer.json dict; UserError for one
    llama.cpp would split differently."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if (kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT
            and not steps[1].get("use_regex", True)):
        return "llama-bpe"
    raise UserError(f"GGUF export: the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not "
                    "one llama.cpp reproduces (GPT-2, Llama-3 or SmolLM byte-level BPE)")


def check_supported(config) -> None:
    """UserError unless llama.cpp's ``llama`` architecture runs this transformers config as transformers does."""
    if config.model_type != "llama":
        raise UserError(f"GGUF export supports Llama-family models (model_type llama), not {config.model_type!r}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"GGUF export supports default RoPE, not {rope.get('rope_type', rope.get('type'))!r} scaling")


def _permute(weights, n_head: int):
    """HF's q/k rows (rotary halves) in llama.cpp's order (interleaved pairs), as its converter does."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensors(model, quant: str):
    """(GGUF name, array, raw GGML type or None) for each weight of a transformers Llama model."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp uses the token embeddings when there is no output matrix
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"GGUF export: no GGUF name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        if data.ndim == 1:  # norms stay f32, as in llama.cpp's own conversions
            yield name, data, None
        elif quant == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
            yield name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
        else:
            yield name, data.astype("float16"), None


def _vocab(writer, tokenizer, folder: Path, rows: int) -> None:
    """Tokens, their types and the pre-tokenizer; merges, special ids and chat template from the saved files.
    ``rows``: the embedding's rows; ids the tokenizer lacks become unused ``[PADn]`` tokens, as llama.cpp needs one
    token a row."""
    import gguf

    pre = pre_tokenizer_name(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = {i: token for i, token in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(max(rows, max(by_id) + 1)):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)  # the answer's end token (tc3.export.name_end_token)
    special.special_token_ids.update(eos=end, eot=end)
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def write_gguf(model, tokenizer, folder: str | os.PathLike[str], quant: str = "f16") -> Path:
    """Write ``folder/model-<quant>.gguf`` from a transformers Llama ``model`` and its ``tokenizer``, whose files
    (tokenizer.json, tokenizer_config.json) are already saved in ``folder`` with EOS set to the answer's end token.
    ``quant``: f16, q8_0 (2-D weights in 8-bit blocks of 32) or q4_k_m (llama.cpp's quantizer; needs
    llama-cpp-python). Returns the GGUF path. Raises UserError for an unsupported model, tokenizer or quant."""
    import gguf

    if quant not in QUANTS:
        raise UserError(f"--quant must be one of {', '.join(QUANTS)}, got {quant!r}")
    check_supported(model.config)
    folder = Path(folder)
    out = folder / gguf_name(quant)
    if quant == "q4_k_m":
        f16 = write_gguf(model, tokenizer, folder, "f16")
        try:
            _llama_quantize(f16, out)
        finally:
            f16.unlink()
        return out

    config = model.config
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    rope = getattr(config, "rope_parameters", None) or {}
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(Path(getattr(config, "_name_or_path", "") or folder.name).name or "tc3")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _vocab(writer, tokenizer, folder, config.vocab_size)
    for name, data, raw_dtype in _tensors(model, quant):
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _llama_quantize(source: Path, dest: Path) -> None:
    """llama.cpp's Q4_K_M quantization of the f16 GGUF ``source`` into ``dest`` (through llama-cpp-python)."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError("--quant q4_k_m needs llama.cpp's quantizer: pip install llama-cpp-python "
                        "(or export f16 / q8_0)") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    if llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to Q4_K_M")


def adds_bos(tokenizer) -> bool:
    """Whether plain tokenization starts with BOS (the GGUF's ``add_bos_token``; SmolLM2's does not, although its
    BOS, ``<|im_start|>``, opens every turn)."""
    if tokenizer.bos_token_id is None:
        return False
    return tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id] != tokenizer("a", add_special_tokens=False)[
        "input_ids"][:1]


# tc3's repetition penalty counts only the tokens the model generated and never an end token; llama.cpp's counts the
# last repeat_last_n tokens, prompt (title, template markers, <|eot_id|>) included, so the end token loses its lead.
# Not expressible in a Modelfile: the penalty is turned off there, and said so in the Modelfile itself.
MODELFILE_PENALTY_NOTE = (
    "# tc3-generate's repetition penalty ({penalty}) counts only generated tokens and never an end token;\n"
    "# llama.cpp's would also count the prompt and <|eot_id|> and make answers end later, so it is off here\n"
    "# (repeat_penalty 1, repeat_last_n 0): greedy answers here may repeat where tc3-generate's do not."
)


def modelfile(tokenizer, gguf_file: str, settings=None) -> str:
    """An Ollama Modelfile for ``gguf_file`` (a path relative to the Modelfile): the prompt tc3 generates from,
    rendered by the chat template with Ollama's ``{{ .Prompt }}`` standing for the title, the end tokens as stops,
    tc3's greedy decoding and answer length as parameters, and the repetition penalty off
    (``MODELFILE_PENALTY_NOTE`` says why, in the file)."""
    from tc3.generate import GenerationSettings
    from tc3.prompts import end_token_ids, render_prompt

    settings = settings or GenerationSettings()
    prompt = render_prompt(tokenizer, "{{ .Prompt }}", settings.instruction)
    if adds_bos(tokenizer) and prompt.startswith(tokenizer.bos_token):
        prompt = prompt[len(tokenizer.bos_token):]  # llama.cpp adds it itself, as the tokenizer (and GGUF) says
    end = tokenizer.eos_token
    stops = [end, *(tokenizer.convert_ids_to_tokens(i) for i in end_token_ids(tokenizer))]
    lines = [f"FROM ./{gguf_file}", f'TEMPLATE """{prompt}{{{{ .Response }}}}{end}"""']
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in dict.fromkeys(stops)]
    lines += ["PARAMETER temperature 0", MODELFILE_PENALTY_NOTE.format(penalty=settings.repetition_penalty),
              "PARAMETER repeat_penalty 1", "PARAMETER repeat_last_n 0",
              f"PARAMETER num_predict {settings.max_new_tokens}"]
    return "\n".join(lines) + "\n"
