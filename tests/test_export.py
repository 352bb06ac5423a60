"""Loading an adapter (merged on full-precision bases only) and tc3-export on the tiny model: the merged model ends its
answers where the fine-tune does, keeps the dtype the adapter was trained in, and says how far it departs from the
adapter."""

from __future__ import annotations

import json
import shutil

import pytest
from tc3.errors import UserError
from tc3.generate import GenerationSettings, generate_batch, load_model

TITLES = ["Mog's Kittens", "Sunflower", "The Hobbit, or There and Back Again", "X"]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter over the tiny model with random (non-zero) weights, saved with its tokenizer as tc3-train
    saves it (the Llama-3 chat template set)."""
    from conftest import build_random_adapter

    targets = ["q_proj", "v_proj", "down_proj"]
    return build_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), targets, seed=1)


def test_merged_and_unmerged_adapter_answer_alike_on_a_full_precision_base(adapter):
    import torch

    settings = GenerationSettings(max_new_tokens=12)
    merged = load_model(str(adapter), device="cpu")
    unmerged = load_model(str(adapter), device="cpu", merge=False)
    assert merged.merged is True and unmerged.merged is False
    assert type(merged.model).__name__ == "LlamaForCausalLM" and type(unmerged.model).__name__.startswith("PeftModel")
    assert [g.description for g in generate_batch(merged, TITLES, settings)] == [
        g.description for g in generate_batch(unmerged, TITLES, settings)]
    ids = torch.tensor([merged.tokenizer("Mog's Kittens", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(merged.model(ids).logits, unmerged.model(ids).logits, atol=1e-4)


def test_adapter_over_a_quantized_base_stays_unmerged(adapter, tiny_model_dir, tmp_path, monkeypatch):
    import tc3.model_ref as model_ref
    import tc3.models as models

    config = json.loads((tiny_model_dir / "config.json").read_text())
    quantized = tmp_path / "q"
    quantized.mkdir()
    (quantized / "config.json").write_text(json.dumps(config | {"quantization_config": {"load_in_4bit": True}}))
    assert models.is_quantized(quantized) and not models.is_quantized(tiny_model_dir)

    # bitsandbytes needs CUDA: stand in for a 4-bit base with the tiny one, flagged as quantized
    monkeypatch.setattr(model_ref, "is_quantized", lambda model_or_config: True)
    loaded = load_model(str(adapter), device="cpu")
    assert loaded.merged is False and type(loaded.model).__name__.startswith("PeftModel")
    with pytest.raises(UserError, match="is quantized: merging"):
        load_model(str(adapter), device="cpu", merge=True)


def test_answer_end_token_of_llama3_and_chatml_templates(tiny_tokenizer):
    import copy

    from tc3.export import answer_end_token

    assert answer_end_token(tiny_tokenizer) == "<|eot_id|>"  # not the base's <|end_of_text|>
    chatml = copy.deepcopy(tiny_tokenizer)
    chatml.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]},
                              replace_extra_special_tokens=False)
    chatml.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert answer_end_token(chatml) == "<|im_end|>"


def test_tc3_export_names_the_answer_end_everywhere_keeps_fp32_and_measures_departure(adapter, tmp_path, capsys):
    from safetensors import safe_open
    from tc3.cli.export import main
    from transformers import AutoTokenizer

    out = tmp_path / "merged"
    assert main([str(adapter), str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "fp32 merged model against the adapter" in printed and "8 greedy answers agree" in printed
    tokenizer = AutoTokenizer.from_pretrained(out)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == eot
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"][0] == eot
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "<|eot_id|>"
    assert tokenizer.eos_token == "<|eot_id|>" and tokenizer.padding_side == "right"  # not the generation setup
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}  # the base's fp32, kept
    check = json.loads((out / "export_check.json").read_text())
    assert check["dtype"] == "fp32" and check["greedy_agree"] == len(check["titles"])
    assert check["max_logit_diff"] < 1e-3
    assert check["decisive_agree"] == check["decisive_positions"] > 0 and check["top1_agree"] == check["positions"]

    # transformers stops on the end token alone, with no tc3 code: greedy with an eot-only generation config
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generation_config.eos_token_id[0] == eot and model.config.eos_token_id == eot

    # rounded to bf16, the departure is measured and reported rather than hidden
    assert main([str(adapter), str(tmp_path / "bf16"), "--device", "cpu", "--dtype", "bf16"]) == 0
    rounded = json.loads((tmp_path / "bf16" / "export_check.json").read_text())
    assert rounded["dtype"] == "bf16" and rounded["max_logit_diff"] > check["max_logit_diff"]

    # an earlier tc3-export output is replaced whole; a folder the user put a file in is never written over
    assert main([str(adapter), str(out), "--device", "cpu", "--dtype", "bf16"]) == 0
    assert json.loads((out / "export_check.json").read_text())["dtype"] == "bf16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16", "merged"]  # no staging or old copy left behind
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main([str(adapter), str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tc3-export: error:") and "notes.txt" in err and err.count("\n") == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_export_merges_in_the_precision_the_run_was_trained_in(adapter, tmp_path):
    """Seen: a base stored in float32 and trained in bf16 on a GPU (precision auto) was merged in fp32: the export
    guessed the precision from the base. It reads the run's saved plan; a run saved before plans keeps the old
    guess (the base's fp32)."""
    from safetensors import safe_open
    from tc3.cli.export import main
    from tc3.config import TrainConfig
    from tc3.train.plan import TrainPlan

    run = tmp_path / "run"
    shutil.copytree(adapter, run)
    TrainConfig(precision="auto").save(run / "tc3_config.yaml")
    assert main([str(run), str(tmp_path / "old"), "--device", "cpu", "--no-check"]) == 0
    with safe_open(str(tmp_path / "old" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}  # no plan: the base's dtype
    TrainPlan(backend="unsloth", device="cuda", precision="bf16", optimizer="adamw_8bit", attention="SDPA",
              checkpointing=True, per_device_batch=8, gradient_accumulation=1, world_size=1,
              max_length=64).save(run / "tc3_plan.json")
    assert main([str(run), str(tmp_path / "merged"), "--device", "cpu"]) == 0
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    assert json.loads((tmp_path / "merged" / "export_check.json").read_text())["dtype"] == "bf16"
    assert json.loads((tmp_path / "merged" / "tc3_plan.json").read_text())["precision"] == "bf16"
    assert "Backend `unsloth` on cuda, bf16, optimizer `adamw_8bit`" in (tmp_path / "merged" / "README.md").read_text()
