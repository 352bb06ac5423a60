"""The attention path of a training run (tc3/attention.py): the plan by versions, unsloth's variable-length gate and
its enable_gqa adapter, the hf backend's variable-length attention function, and the token count of the log."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tc3 import attention
from tc3.attention import AttentionPlan

CONFIGS = Path(__file__).resolve().parents[1] / "python" / "tc3" / "configs"

# torch 2.11's varlen_attn: window_size, no enable_gqa (2.12 adds it)
TORCH_2_11 = {"query", "key", "value", "cu_seq_q", "cu_seq_k", "max_q", "max_k", "return_aux", "scale", "window_size"}
TORCH_2_12 = TORCH_2_11 | {"enable_gqa"}


@pytest.mark.parametrize(
    "backend, padding_free, varlen, params, release, expected, adapter, hf_impl",
    [
        ("unsloth", True, True, TORCH_2_11, "2026.10.9", attention.UNSLOTH_ADAPTED, True, None),
        ("unsloth", True, False, TORCH_2_11, "2026.10.9", "varlen_attention is false", False, None),
        ("unsloth", True, True, TORCH_2_12, "2026.10.9", attention.UNSLOTH_VARLEN, False, None),
        ("unsloth", True, True, TORCH_2_11, "2026.11.2", "no adapter for unsloth 2026.11.2", False, None),
        ("unsloth", True, True, None, "2026.10.9", "no usable varlen_attn", False, None),
        ("unsloth", True, True, TORCH_2_11 - {"window_size"}, "2026.10.9", "no usable varlen_attn", False, None),
        ("unsloth", False, True, TORCH_2_11, "2026.10.9", "padding_free is false", False, None),
        ("hf", True, True, TORCH_2_11, None, attention.HF_VARLEN_PATH, False, attention.HF_VARLEN),
        ("hf", True, True, None, None, "needs CUDA", False, None),
        ("hf", True, False, TORCH_2_12, None, "varlen_attention is false", False, None),
    ],
)
def test_plan_follows_versions_and_config(
    monkeypatch, backend, padding_free, varlen, params, release, expected, adapter, hf_impl
):
    monkeypatch.setattr(attention, "torch_varlen_params", lambda: params)
    monkeypatch.setattr(attention, "_installed", lambda package: release)
    chosen = attention.plan(backend, padding_free, varlen)
    assert expected in chosen.path
    assert chosen.unsloth_adapter is adapter and chosen.hf_implementation == hf_impl


def test_hf_plan_of_an_fp32_run_is_padded_and_a_16_bit_one_names_its_dtype(monkeypatch):
    """FlashAttention kernels compute in bf16 or fp16 only: an fp32 run attends over padded batches."""
    monkeypatch.setattr(attention, "torch_varlen_params", lambda: TORCH_2_11)
    assert attention.plan("hf", True, True, "fp32").hf_implementation is None
    assert "the run is fp32" in attention.plan("hf", True, True, "fp32").path
    assert attention.plan("hf", True, True, "fp16").compute_dtype == "fp16"


def test_hf_varlen_attention_computes_fp32_inputs_in_the_runs_16_bit_dtype(monkeypatch):
    """A 4-bit base prepared for training keeps its norms, so its activations, in fp32: the kernels (which take only
    bf16 and fp16) get the run's 16-bit dtype and the layer gets its own dtype back."""
    import torch.nn.attention.varlen as varlen

    seen = []

    def kernel(q, k, v, *args, **kwargs):
        seen.append({x.dtype for x in (q, k, v)})
        assert all(x.dtype in (torch.bfloat16, torch.float16) for x in (q, k, v))
        return per_sequence_varlen(q, k, v, *args, **kwargs)

    monkeypatch.setattr(varlen, "varlen_attn", kernel)
    query, key, value = (torch.randn(1, h, 7, 16) for h in (4, 2, 2))
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    out, _ = attention.hf_varlen_attention(None, query, key, value, None, position_ids=position_ids,
                                           compute_dtype=torch.bfloat16)
    assert seen == [{torch.bfloat16}] and out.dtype == torch.float32
    cu, longest = attention.sequence_bounds(position_ids)
    q, k, v = (x.squeeze(0).transpose(0, 1) for x in (query, key, value))
    reference = per_sequence_varlen(q, k, v, cu, cu, longest, longest, window_size=(-1, 0))
    torch.testing.assert_close(out[0], reference, atol=3e-2, rtol=3e-2)  # bf16


def test_unsloth_switch_off_by_its_own_variable(monkeypatch):
    monkeypatch.setattr(attention, "torch_varlen_params", lambda: TORCH_2_11)
    monkeypatch.setattr(attention, "_installed", lambda package: "2026.10.9")
    monkeypatch.setenv("UNSLOTH_TORCH_VARLEN", "0")
    assert not attention.plan("unsloth", True, True).unsloth_adapter


@pytest.fixture
def fake_unsloth_dispatch(monkeypatch):
    """unsloth.utils.attention_dispatch as 2026.10.9 leaves it on torch 2.11 (its gate closed), and a varlen_attn
    that records how it was called."""
    import torch.nn.attention.varlen as varlen

    calls = []

    def recording_varlen_attn(*args, **kwargs):
        calls.append((args, kwargs))
        return "out"

    dispatch = types.ModuleType("unsloth.utils.attention_dispatch")
    dispatch._TORCH_VARLEN_ATTN = None
    utils = types.ModuleType("unsloth.utils")
    utils.attention_dispatch = dispatch
    package = types.ModuleType("unsloth")
    package.utils = utils
    for name, module in (("unsloth", package), ("unsloth.utils", utils), ("unsloth.utils.attention_dispatch", dispatch)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(varlen, "varlen_attn", recording_varlen_attn)
    return dispatch, calls


def test_adapter_opens_unsloths_gate_and_drops_enable_gqa(fake_unsloth_dispatch):
    dispatch, calls = fake_unsloth_dispatch
    path = attention.apply(AttentionPlan(attention.UNSLOTH_ADAPTED, unsloth_adapter=True))
    assert path == attention.UNSLOTH_ADAPTED and dispatch._TORCH_VARLEN_ATTN is not None
    # as unsloth's _varlen_attn_call calls it
    out = dispatch._TORCH_VARLEN_ATTN("q", "k", "v", "cu", "cu", 7, 7, scale=0.5, window_size=(-1, 0), enable_gqa=True)
    assert out == "out"
    assert calls == [(("q", "k", "v", "cu", "cu", 7, 7), {"scale": 0.5, "window_size": (-1, 0)})]


def test_adapter_leaves_a_dispatch_it_does_not_know(fake_unsloth_dispatch):
    dispatch, _ = fake_unsloth_dispatch
    native = object()
    dispatch._TORCH_VARLEN_ATTN = native  # already open: some other release or torch
    path = attention.apply(AttentionPlan(attention.UNSLOTH_ADAPTED, unsloth_adapter=True))
    assert dispatch._TORCH_VARLEN_ATTN is native and "not the one" in path
    attention.apply(AttentionPlan("SDPA", unsloth_adapter=False))
    assert dispatch._TORCH_VARLEN_ATTN is native


def test_sequence_bounds_from_position_ids():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    cu, longest = attention.sequence_bounds(position_ids)
    assert cu.tolist() == [0, 3, 5, 9] and cu.dtype == torch.int32 and longest == 4


def per_sequence_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
    """torch's varlen_attn computed the plain way (CPU): causal SDPA over each sequence, grouped-query heads."""
    assert tuple(window_size) == (-1, 0) and torch.equal(cu_q, cu_k)
    bounds = cu_q.tolist()
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))  # (H, L, D)
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=True))
    return torch.cat([o.transpose(0, 1) for o in outs])


def test_hf_varlen_attention_equals_attention_one_sequence_at_a_time(tiny_model_dir, monkeypatch):
    """A padding-free row through the registered attention function gives each sequence the logits it has alone:
    the sequence bounds come from the position ids, nothing attends across them, grouped-query heads line up."""
    import torch.nn.attention.varlen as varlen
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(varlen, "varlen_attn", per_sequence_varlen)
    attention.register_hf_varlen()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    flat = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention.HF_VARLEN).eval()
    assert plain.config.num_key_value_heads < plain.config.num_attention_heads  # grouped-query, as Llama-3
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(10, 500, (n,), generator=generator) for n in (5, 9, 3)]
    with torch.no_grad():
        alone = torch.cat([plain(input_ids=s[None]).logits[0] for s in sequences])
        row = torch.cat(sequences)[None]
        position_ids = torch.cat([torch.arange(len(s)) for s in sequences])[None]
        together = flat(input_ids=row, position_ids=position_ids).logits[0]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_training_log_counts_every_real_token_once(tiny_model_dir, prep_dir, tmp_path):
    """One epoch over 16 examples: the log's token count is the sum of their lengths (padding left out), whatever
    the batching, and tokens/s and seconds a step come with every training log."""
    from tc3.config import load_config
    from tc3.train import train
    from transformers import TrainerCallback

    lengths = []

    class DatasetLengths(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            lengths.extend(len(ids) for ids in train_dataloader.dataset["input_ids"])

    out = tmp_path / "run"
    config = load_config(
        CONFIGS / "tiny-cpu.yaml",
        [f"model={tiny_model_dir}", f"data={prep_dir}", f"output_dir={out}", "train_samples=16", "eval_samples=4",
         "epochs=1", "max_steps=null", "per_device_batch_size=4", "max_length=4096", "logging_steps=2",
         "eval_steps=100", "save_steps=100"],
    )  # fmt: skip
    metrics = train(config, callbacks=[DatasetLengths()])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in log if "loss" in e]
    assert [e["step"] for e in steps] == [2, 4] and len(lengths) == 16
    assert steps[-1]["tokens"] == metrics["trained_tokens"] == sum(lengths)
    assert steps[0]["tokens"] < steps[-1]["tokens"]
    assert all(e["tokens_per_s"] > 0 and e["s_per_step"] > 0 for e in steps)
    assert metrics["tokens_per_s"] > 0 and "SDPA over padded batches" in metrics["attention"]


# ---------------------------------------------------------------------------------------------------------------------
# On the GPU: the same step with and without the fast path (each in its own process: the gate is a module global)

ONE_STEP = r"""
import json, os, sys
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", UNSLOTH_DISABLE_STATISTICS="1")
import unsloth  # noqa: F401
import torch
from torch.autograd import DeviceType
from tc3.config import load_config
from tc3.train import build_run

model, data, out, varlen = sys.argv[1:5]
config = load_config(None, [f"model={model}", f"data={data}", f"output_dir={out}", "backend=unsloth",
    "load_in_4bit=false", "precision=bf16", "max_steps=1", "per_device_batch_size=16", "train_samples=64",
    "eval_samples=4", "max_length=512", "optimizer=adamw_torch", "logging_steps=1", "eval_steps=100",
    "save_steps=100", "lora_r=8", "lora_alpha=16", f"varlen_attention={varlen}", "seed=7"])
run = build_run(config)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    run.trainer.train()
names = [e.name.lower() for e in prof.events() if e.device_type == DeviceType.CUDA]
attention_kernels = sum(any(k in n for k in ("flash", "fmha", "attention", "sdpa", "cudnn")) for n in names)
loss = next(e["loss"] for e in run.trainer.state.log_history if "loss" in e)
print("RESULT " + json.dumps({"loss": loss, "attention_kernels": attention_kernels, "path": run.attention}))
"""


def one_step(model, data, out, varlen: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", ONE_STEP, str(model), str(data), str(out), str(varlen).lower()],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


@pytest.mark.gpu
def test_fast_path_same_loss_one_attention_call_a_layer(tiny_model_dir, prep_dir, tmp_path):
    pytest.importorskip("unsloth")
    fast = one_step(tiny_model_dir, prep_dir, tmp_path / "fast", True)
    slow = one_step(tiny_model_dir, prep_dir, tmp_path / "slow", False)
    assert fast["path"] == attention.UNSLOTH_ADAPTED or fast["path"] == attention.UNSLOTH_VARLEN, fast
    assert "SDPA, one call a sequence" in slow["path"], slow
    assert fast["loss"] == pytest.approx(slow["loss"], rel=2e-2)  # bf16
    # The tiny model's 2 layers; a batch of 16 sequences. Per layer: forward, checkpoint recompute and a backward of
    # a few kernels, once a layer on the fast path and once a sequence on the slow one.
    layers, sequences = 2, 16
    assert fast["attention_kernels"] <= 6 * layers, fast
    assert slow["attention_kernels"] >= sequences * layers, slow
