"""Automatic gradient checkpointing and batch (tc3.train.speed, issue 28): the memory model against the peaks measured
on H100/H200, the choice on cards of 80, 48, 24, 16 and 8 GB, explicit values, CPU, MFU two ways, the per-layer
checkpointing patch, and the fallback after an out-of-memory error at the first step."""

import json
from pathlib import Path

import pytest
import torch
from tc3.config import load_config
from tc3.train import speed

CONFIGS = Path(__file__).resolve().parents[1] / "python" / "tc3" / "configs"
LLAMA3_8B = speed.ModelShape(layers=32, hidden=4096, intermediate=14336, vocab=128256, kv_dim=1024)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STATIC_8B = speed.static_bytes(LLAMA3_8B, 32, PROJECTIONS, quantized=True)

# (setup, tokens a micro-batch, layers checkpointed, offloaded, unsloth, measured peak GB): the docstring's table
MEASURED = [
    ("unsloth offloaded b64", 12469, 32, True, True, 9.54),
    ("unsloth offloaded b128", 25584, 32, True, True, 11.55),
    ("unsloth offloaded b256", 51697, 32, True, True, 16.46),
    ("unsloth offloaded b8 (probe 11-24)", 1360, 32, True, True, 6.7),
    ("unsloth offloaded b96 (probe 11-24)", 16320, 32, True, True, 9.7),
    ("unsloth plain checkpointing b96 (probe 11-24)", 16320, 32, False, True, 13.5),
    ("unsloth no checkpointing b32", 6232, 0, False, True, 33.49),
    ("unsloth no checkpointing b64", 12473, 0, False, True, 55.04),
    ("hf padded b8 (max_length 799)", 8 * 799, 32, False, False, 14.1),
    ("hf padded b32 (max_length 799)", 32 * 799, 32, False, False, 33.22),
    ("hf padding-free b64", 11935, 32, False, False, 22.11),
]  # fmt: skip


def workload_8b(**changes) -> speed.Workload:
    values = {"shape": LLAMA3_8B, "static": STATIC_8B, "mean_length": 190.0, "max_length": 799, "padded": False,
              "unsloth": True, "tokens_per_step": 24000, "world_size": 1, **changes}  # fmt: skip
    return speed.Workload(**values)


@pytest.mark.parametrize("name,tokens,checkpointed,offloaded,unsloth,measured", MEASURED)
def test_the_memory_model_predicts_the_measured_peaks(name, tokens, checkpointed, offloaded, unsloth, measured):
    predicted = speed.peak_bytes(LLAMA3_8B, STATIC_8B, tokens, checkpointed, offloaded, unsloth) / speed.GB
    assert predicted == pytest.approx(measured, rel=0.15), name


def test_the_shape_and_static_part_of_llama3_8b():
    assert LLAMA3_8B.params() == 8_030_261_248  # the benchmark model's count (gpu_train.json)
    assert STATIC_8B / speed.GB == pytest.approx(7.34, abs=0.05)
    config = {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336, "vocab_size": 128256,
              "num_attention_heads": 32, "num_key_value_heads": 8}  # fmt: skip
    assert speed.ModelShape.from_config(config) == LLAMA3_8B


@pytest.mark.parametrize("free_gb,checkpointed,batch", [
    (84.5, 0, 63),  # 80 GB: nothing recomputed, 12k-token micro-batches, accumulated to the target
    (48, 0, 32),
    (24, 29, 126),  # most layers checkpointed (offloaded), a few kept, the whole target in one batch
    (16, 32, 126),  # every layer offloaded
    (10, 32, 32),  # a small card: every layer offloaded and a smaller batch
])  # fmt: skip
def test_the_choice_on_cards_of_each_size(free_gb, checkpointed, batch):
    order, reason = speed.choose(workload_8b(), free_gb * speed.GB, "auto", "auto", "auto")
    best = order[0]
    assert (best.checkpointed, best.per_device_batch) == (checkpointed, batch), reason
    assert best.per_device_batch * best.gradient_accumulation == pytest.approx(126, rel=0.05)
    assert best.predicted_peak_gb <= speed.HEADROOM * free_gb
    assert f"predicted peak {best.predicted_peak_gb:.1f} GB" in reason
    peaks = [o.predicted_peak_gb for o in order]
    assert all(b <= 0.9 * a for a, b in zip(peaks, peaks[1:])), order  # each fallback needs markedly less


def test_nothing_fits_gives_the_least_memory_and_says_so():
    order, reason = speed.choose(workload_8b(), 6 * speed.GB, "auto", "auto", "auto")
    assert len(order) == 1 and order[0].checkpointed == 32 and order[0].per_device_batch == 2
    assert reason.startswith("nothing is predicted to fit 5.4 GB usable")


def test_explicit_values_win():
    work = workload_8b()
    order, _ = speed.choose(work, 24 * speed.GB, False, 8, "auto")
    assert [(o.checkpointed, o.per_device_batch, o.gradient_accumulation) for o in order][0] == (0, 8, 16)
    order, _ = speed.choose(work, 84.5 * speed.GB, True, "auto", 1)
    assert (order[0].checkpointed, order[0].per_device_batch, order[0].gradient_accumulation) == (32, 126, 1)
    order, _ = speed.choose(work, 24 * speed.GB, "auto", 32, 4)
    assert (order[0].per_device_batch, order[0].gradient_accumulation) == (32, 4) and 0 < order[0].checkpointed < 32


def test_padded_batches_are_planned_at_max_length():
    padded, free = workload_8b(padded=True, unsloth=False), 80 * speed.GB
    assert padded.tokens(32) == 32 * 799
    assert speed.choose(padded, free, "auto", "auto", "auto")[0][0].predicted_peak_gb <= speed.HEADROOM * 80


def test_the_speed_model_matches_the_measured_mfu():
    """H200, default config rows: 51.7% (batch 128, offloaded) and 72.3% (batch 64, nothing recomputed)."""
    top = 0.723 / speed.relative_speed(12473, 0, 32)
    assert top * speed.relative_speed(25584, 32, 32) == pytest.approx(0.517, rel=0.1)
    assert top * speed.relative_speed(6232, 0, 32) == pytest.approx(0.642, rel=0.02)


@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835), ("NVIDIA H200", 989),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L40S", 362), ("NVIDIA L4", 121), ("NVIDIA A10", 125),
    ("NVIDIA GeForce RTX 4090", 165), ("Tesla T4", None),
])  # fmt: skip
def test_datasheet_peaks(name, tflops):
    assert speed.datasheet_tflops(name) == tflops


def test_mfu_two_ways():
    """The issue's row: 15,373 tokens/s on an H100 whose matmul ran at 718 TFLOP/s is 68.7% of that rate."""
    both = speed.mfu_both(LLAMA3_8B.params(), 15373, "NVIDIA H100 80GB HBM3", 718.0)
    assert both["mfu_measured_rate"] == pytest.approx(0.687, abs=0.001)
    assert both["mfu_datasheet"] == pytest.approx(0.4993, abs=0.001)
    assert speed.mfu_both(LLAMA3_8B.params(), 15373, "Tesla T4", None)["mfu_datasheet"] is None


def test_on_cpu_auto_means_no_checkpointing_and_the_target_batch():
    from tc3.train.plan import TrainPlan, speed_options

    config = load_config(CONFIGS / "llama3-8b-qlora.yaml", ["tokens_per_step=2000"])
    plan = TrainPlan(backend="hf", device="cpu", precision="fp32", optimizer="adamw_torch", attention="x",
                     world_size=1, max_length=512)  # fmt: skip
    options, reason = speed_options(config, plan, 100.0, LLAMA3_8B, None)
    assert [(o.checkpointed, o.per_device_batch, o.gradient_accumulation) for o in options] == [(0, 20, 1)]
    assert reason == "on CPU auto means no gradient checkpointing, batch 20 x 1"
    explicit = load_config(CONFIGS / "tiny-cpu.yaml")
    options, _ = speed_options(explicit, plan, 100.0, None, None)
    assert (options[0].per_device_batch, options[0].gradient_accumulation) == (explicit.per_device_batch_size, 1)


def test_a_kept_layer_stays_kept_when_checkpointing_is_enabled_again():
    """transformers: the Trainer enables checkpointing on every layer after the model is built; the layers kept must
    still run without it, and only the checkpointed ones call the checkpoint function."""
    from tc3.kernels import keep_unchecked_layers
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
    model.gradient_checkpointing_enable({"use_reentrant": False})
    assert keep_unchecked_layers(model, 1) == list(model.model.layers[1:])
    model.gradient_checkpointing_enable({"use_reentrant": False})
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, False, False]
    calls = []
    for layer in model.model.layers:
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, inner=inner, **k: calls.append(1) or inner(*a, **k)
    model.train()
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    assert len(calls) == 1
    assert keep_unchecked_layers(model, None) == [] and keep_unchecked_layers(model, 0) == []


def test_library_internals_keep_unchecked_layers_reads_are_there():
    """kernels.keep_unchecked_layers relies on GradientCheckpointingLayer.__call__ reading its own flag, and on
    unsloth calling such layers as they are and (re)setting the flag through plain attribute writes."""
    import importlib.util
    import inspect

    import transformers
    from tc3 import kernels
    from transformers.modeling_layers import GradientCheckpointingLayer

    assert transformers.__version__.startswith(kernels.TRANSFORMERS_WRITTEN_FOR + ".")
    assert "if self.gradient_checkpointing and self.training" in inspect.getsource(GradientCheckpointingLayer.__call__)
    spec = importlib.util.find_spec("unsloth")
    if spec is None:
        pytest.skip("unsloth is not installed here (read on the GPU host)")
    root = Path(spec.submodule_search_locations[0])  # read, not imported: importing unsloth may go online
    assert (root.parent / f"unsloth-{kernels.UNSLOTH_WRITTEN_FOR}").exists() or any(
        p.name.startswith(f"unsloth-{kernels.UNSLOTH_WRITTEN_FOR}") for p in root.parent.glob("unsloth-*.dist-info"))
    llama = (root / "models" / "llama.py").read_text()
    assert "if gradient_checkpointing and not isinstance(decoder_layer, GradientCheckpointingLayer):" in llama
    assert "set_module_gradient_checkpointing(m, use_gradient_checkpointing)" in llama
    assert "module.gradient_checkpointing = value" in (root / "models" / "_utils.py").read_text()


def test_out_of_memory_at_the_first_step_tries_the_next_option(tiny_model_dir, prep_dir, tmp_path, monkeypatch,
                                                               capsys):
    """The fallback, off GPU: a card of plenty of memory is pretended (so the memory model plans), the first
    attempt's first step raises torch.OutOfMemoryError; the run goes on with the next option, one line on the log."""
    from tc3.layout import RunDir
    from tc3.train import card, train
    from transformers import TrainerCallback

    class FailOnce(TrainerCallback):
        failed = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if not self.failed:
                FailOnce.failed = 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(card, "free_bytes", lambda: 1e12)
    monkeypatch.setattr(speed, "WORKSPACE", 0.0)  # a tiny model: the activations alone tell the options apart
    out = tmp_path / "run"
    config = load_config(CONFIGS / "tiny-cpu.yaml", [
        f"model={tiny_model_dir}", f"data={prep_dir}", f"output_dir={out}", "gradient_checkpointing=auto",
        "per_device_batch_size=auto", "gradient_accumulation_steps=auto", "tokens_per_step=4000", "max_steps=2",
        "train_samples=32", "eval_samples=4", "eval_steps=2", "save_steps=2", "max_length_cap=64"])  # fmt: skip
    metrics = train(config, callbacks=[FailOnce()])
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tc3-train: out of memory")]
    plan = RunDir(out).plan
    assert len(said) == 1 and said[0].startswith("tc3-train: out of memory at the first step with no gradient")
    assert plan.speed_choice.startswith("after out of memory at the first step: ")
    assert f"batch {plan.per_device_batch} x {plan.gradient_accumulation}" in said[0]
    assert metrics["global_step"] == 2 and metrics["predicted_peak_gb"] == plan.predicted_peak_gb
    assert json.loads((out / "metrics.json").read_text())["speed_choice"] == plan.speed_choice


def test_out_of_memory_without_an_option_left_is_one_line(tiny_model_dir, prep_dir, tmp_path, monkeypatch, capsys):
    import trl
    from tc3.cli.train import main

    def failing_train(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trl.SFTTrainer, "train", failing_train)
    argv = ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"model={tiny_model_dir}", f"data={prep_dir}",
            f"output_dir={tmp_path / 'out'}", "max_steps=2", "train_samples=16", "eval_samples=4",
            "max_length_cap=64"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "out of memory at step 1 with no gradient checkpointing, batch 4 x 1" in err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "out of memory" in line]) == 1


@pytest.mark.gpu
def test_the_plans_agree_on_the_loss_and_their_predicted_peaks(tiny_model_dir, prep_dir, tmp_path, monkeypatch):
    """CUDA, hf backend, a SmolLM2-135M-shaped random model (30 layers) in 4-bit: the same seeded run with nothing
    checkpointed, with some of the layers (auto, the card's memory pretended to be between the two), and with every
    layer. The loss curves agree within bf16 noise; the peaks fall in that order, and the activations the model
    predicts (none less every layer) are within 30% of those measured."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from tc3.prompts import load_tokenizer
    from tc3.train import card, train
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(str(tiny_model_dir))
    shape = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    model_dir = tmp_path / "smollm2-shape"
    LlamaForCausalLM(shape).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    def run(name, checkpointing):
        overrides = [f"model={model_dir}", f"data={prep_dir}", f"output_dir={tmp_path / name}", "backend=hf",
                     "load_in_4bit=true", "precision=bf16", "optimizer=adamw_8bit", "per_device_batch_size=32",
                     "gradient_accumulation_steps=1", f"gradient_checkpointing={checkpointing}", "max_steps=6",
                     "train_samples=192", "eval_samples=8", "logging_steps=1", "eval_steps=6", "save_steps=6",
                     "max_length_cap=512"]  # fmt: skip
        metrics = train(load_config(CONFIGS / "tiny-cpu.yaml", overrides))
        log = [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
        return metrics, [e["loss"] for e in log if "loss" in e]

    none, none_loss = run("none", "false")
    every, every_loss = run("every", "true")
    middle_gb = (none["predicted_peak_gb"] + every["predicted_peak_gb"]) / 2
    monkeypatch.setattr(card, "free_bytes", lambda: middle_gb * speed.GB / speed.HEADROOM)
    some, some_loss = run("some", "auto")
    assert 0 < some["checkpointed_layers"] < 30, some["speed_choice"]
    for losses in (every_loss, some_loss):
        assert losses == pytest.approx(none_loss, rel=2e-2, abs=2e-2)
    peaks = [m["peak_gb"] for m in (none, some, every)]
    predicted = [m["predicted_peak_gb"] for m in (none, some, every)]
    assert peaks[0] > peaks[1] > peaks[2], (peaks, predicted)
    assert predicted[0] - predicted[2] == pytest.approx(peaks[0] - peaks[2], rel=0.3), (peaks, predicted)
