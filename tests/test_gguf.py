"""tc3-export --gguf on the tiny Llama: the GGUF holds the weights, the tokenizer, the chat template and the answer's
end token as EOS, the Modelfile gives Ollama the prompt tc3 trains on, and llama.cpp (llama-cpp-python, when
installed) tokenizes the prompts and answers greedily exactly as transformers does."""

from __future__ import annotations

import json
import sys

import pytest
from tc3.errors import UserError

gguf = pytest.importorskip("gguf")

TITLES = ["Mog's Kittens", "Girls Ballet Tutu Neon Pink", "Anker PowerCore 10000 Portable Charger"]
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter over the tiny model with random non-zero weights (the merge changes q/k/v and MLP weights)."""
    from conftest import build_random_adapter

    targets = ["q_proj", "k_proj", "v_proj", "down_proj"]
    return build_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), targets, seed=2)


@pytest.fixture(scope="module")
def exported(adapter, tmp_path_factory):
    """`tc3-export ADAPTER OUT --gguf` (f16) and `--gguf --quant q8_0`."""
    from tc3.cli.export import main

    outs = {}
    for quant in ("f16", "q8_0"):
        outs[quant] = tmp_path_factory.mktemp(f"export-{quant}") / "out"
        assert main([str(adapter), str(outs[quant]), "--no-check", "--device", "cpu", "--gguf",
                     "--quant", quant]) == 0
    return outs


def field(reader, key):
    return reader.get_field(key).contents()


def test_gguf_holds_tokenizer_chat_template_and_end_of_turn_eos(exported):
    from tc3.prompts import load_tokenizer

    out = exported["f16"]
    tokenizer = load_tokenizer(str(out))
    reader = gguf.GGUFReader(out / "model-f16.gguf")
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == "gpt-2"
    vocab = tokenizer.get_vocab()
    assert field(reader, "tokenizer.ggml.tokens") == sorted(vocab, key=vocab.get)
    eot = vocab["<|eot_id|>"]
    assert field(reader, "tokenizer.ggml.eos_token_id") == eot and field(reader, "tokenizer.ggml.eot_token_id") == eot
    assert field(reader, "tokenizer.ggml.bos_token_id") == tokenizer.bos_token_id
    assert field(reader, "tokenizer.chat_template") == tokenizer.chat_template
    assert len(field(reader, "tokenizer.ggml.merges")) > 100
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[eot] == gguf.TokenType.CONTROL and types[vocab["a"]] == gguf.TokenType.NORMAL


def test_gguf_weights_are_the_merged_models(exported):
    """Embeddings, norms and the (unpermuted) value projection read back as the merged safetensors; q8_0 quantizes
    the matrices and keeps the norms in f32."""
    import numpy as np
    from safetensors.numpy import load_file

    out = exported["f16"]
    weights = load_file(out / "model.safetensors")
    for quant, tolerance in (("f16", 2e-3), ("q8_0", 2e-2)):
        reader = gguf.GGUFReader(exported[quant] / f"model-{quant}.gguf")
        tensors = {t.name: t for t in reader.tensors}
        assert len(tensors) == 2 + 1 + 2 * 9  # embeddings, final norm, output; 9 a layer
        for name, hf in (("token_embd.weight", "model.embed_tokens.weight"), ("blk.1.attn_v.weight",
                         "model.layers.1.self_attn.v_proj.weight"), ("output_norm.weight", "model.norm.weight")):
            tensor = tensors[name]
            data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(weights[hf].shape)
            np.testing.assert_allclose(data, weights[hf], atol=tolerance * np.abs(weights[hf]).max())
        kind = gguf.GGMLQuantizationType.Q8_0 if quant == "q8_0" else gguf.GGMLQuantizationType.F16
        assert tensors["blk.0.ffn_down.weight"].tensor_type == kind
        assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_modelfile_gives_ollama_tc3s_prompt_and_stops(exported):
    from tc3.prompts import load_tokenizer, render_prompt

    out = exported["q8_0"]
    tokenizer = load_tokenizer(str(out))
    text = (out / "Modelfile").read_text()
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    prompt = render_prompt(tokenizer, TITLES[0], "en")
    assert template.replace("{{ .Prompt }}", TITLES[0]) == prompt.removeprefix(tokenizer.bos_token) + (
        "{{ .Response }}<|eot_id|>")
    assert 'PARAMETER stop "<|eot_id|>"' in text and "PARAMETER temperature 0" in text
    # llama.cpp's penalty counts the prompt and <|eot_id|>, tc3's does not: off, and the file says why
    assert "PARAMETER repeat_penalty 1\n" in text and "PARAMETER repeat_last_n 0\n" in text
    assert "repeat_penalty 1.15" not in text and "# tc3-generate's repetition penalty (1.15)" in text
    assert json.loads((out / ".tc3-output.json").read_text())["files"].count("Modelfile") == 1


def test_quant_without_gguf_is_a_usage_error(adapter, tmp_path, capsys):
    from tc3.cli.export import main

    with pytest.raises(SystemExit) as exit_:
        main([str(adapter), str(tmp_path / "out"), "--quant", "q8_0"])
    assert exit_.value.code == 2 and "--quant is for the GGUF: add --gguf" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unsupported_pre_tokenizer_and_architecture_are_user_errors():
    from types import SimpleNamespace

    from tc3.gguf import check_supported, pre_tokenizer_name

    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}) == "gpt-2"
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}]}}) == "smollm"
    with pytest.raises(UserError, match=r"pre-tokenizer \(Metaspace\) is not"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}})
    with pytest.raises(UserError, match="not 'gemma2'"):
        check_supported(SimpleNamespace(model_type="gemma2"))
    with pytest.raises(UserError, match="not 'llama3' scaling"):
        check_supported(SimpleNamespace(model_type="llama", rope_parameters={"rope_type": "llama3"}))


def test_q4_k_m_without_llama_cpp_is_a_user_error(monkeypatch, tmp_path):
    from tc3.gguf import _llama_quantize

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as when it is not installed
    with pytest.raises(UserError, match="pip install llama-cpp-python"):
        _llama_quantize(tmp_path / "a.gguf", tmp_path / "b.gguf")


def llama_greedy(llm, ids: list[int], n: int, end: int) -> list[int]:
    out = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if token == end or len(out) == n:
            break
        out.append(token)
    return out


def test_llama_cpp_tokenizes_and_answers_as_transformers(exported):
    """The f16 GGUF in llama.cpp: prompt tokens identical to transformers', greedy answers identical token for
    token."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import torch
    from tc3.prompts import prompt_ids, render_prompt
    from transformers import AutoModelForCausalLM

    out = exported["f16"]
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    from tc3.prompts import load_tokenizer

    tokenizer = load_tokenizer(str(out))
    llm = llama_cpp.Llama(str(out / "model-f16.gguf"), n_ctx=512, n_threads=1, verbose=False)
    end = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert llm.token_eos() == end
    for title in TITLES:
        ids = prompt_ids(tokenizer, title, "en")
        assert llm.tokenize(render_prompt(tokenizer, title, "en").encode(), add_bos=False, special=True) == ids
        with torch.inference_mode():
            theirs = hf.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=end, pad_token_id=end)[0, len(ids):].tolist()
        theirs = theirs[:theirs.index(end)] if end in theirs else theirs
        assert llama_greedy(llm, ids, NEW_TOKENS, end) == theirs


def test_embedding_rows_beyond_the_tokenizer_become_unused_tokens(tiny_model_dir, tmp_path):
    """A model whose embeddings were padded past its tokenizer (vocab rounded up) still has one token a row."""
    from tc3.gguf import write_gguf
    from tc3.prompts import load_tokenizer
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.eos_token = "<|eot_id|>"
    tokenizer.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer) + 13)
    reader = gguf.GGUFReader(write_gguf(model, tokenizer, tmp_path, "f16"))
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == model.config.vocab_size == len(tokenizer) + 13
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == gguf.TokenType.UNUSED


def test_modelfile_keeps_a_bos_the_tokenizer_does_not_add(tiny_tokenizer):
    """SmolLM2's BOS is <|im_start|>, which opens its template's first turn but is not added by tokenization:
    stripping it would leave Ollama a prompt without its first turn marker."""
    import copy

    from tc3.gguf import modelfile
    from tokenizers import processors

    plain = copy.deepcopy(tiny_tokenizer)
    plain.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    assert 'TEMPLATE """' + plain.bos_token in modelfile(plain, "m.gguf")
    assert 'TEMPLATE """' + tiny_tokenizer.bos_token not in modelfile(tiny_tokenizer, "m.gguf")


def test_q4_k_m_is_llama_cpps_quantization_and_leaves_no_f16_behind(adapter, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    from tc3.cli.export import main

    out = tmp_path / "out"
    assert main([str(adapter), str(out), "--no-check", "--device", "cpu", "--gguf", "--quant", "q4_k_m"]) == 0
    assert sorted(p.name for p in out.glob("*.gguf")) == ["model-q4_k_m.gguf"]
    reader = gguf.GGUFReader(out / "model-q4_k_m.gguf")
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert field(reader, "tokenizer.ggml.eos_token_id") == field(reader, "tokenizer.ggml.eot_token_id")
    llm = llama_cpp.Llama(str(out / "model-q4_k_m.gguf"), n_ctx=128, n_threads=1, verbose=False)
    assert llm.n_vocab() == len(field(reader, "tokenizer.ggml.tokens"))
