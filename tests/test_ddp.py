"""Data-parallel training on CPU: `torchrun --nproc_per_node 2 -m tc3.cli.train` (gloo, hf backend) on the tiny model.

TC3_TRACE_DIR makes every process write what it trained on (a digest of each sequence, padding left out) and the
digest of its final LoRA weights (tc3.train.write_trace). The two-process run is checked against a one-process run
with the same global batch (2 processes x 2 sequences = 1 process x 4).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import child_env

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "python" / "tc3" / "configs" / "tiny-cpu.yaml"
# test_train.py's TINY_RUN without the batch size: global batch 4, 32 steps, checkpoints at 16 and 32. Every kind
# (kinds=null): 32 steps x 4 must stay within one epoch of the examples the 128-token cap leaves (grounded ones
# that do not fit are dropped), which the descriptive kinds alone, fewer and longer, do not leave.
RUN = [
    "max_steps=32", "max_length_cap=128", "train_samples=160", "kinds=null", "eval_samples=16", "learning_rate=5e-3",
    "logging_steps=4", "eval_steps=16", "save_steps=16", "save_total_limit=2",
]  # fmt: skip


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def steps(trained, per_step):
    """A process's trained sequence digests, cut into its optimizer steps."""
    return [trained[i : i + per_step] for i in range(0, len(trained), per_step)]


@pytest.fixture(scope="module")
def ddp_run(tiny_model_dir, prep_dir, tmp_path_factory):
    """One run of 2 processes x per_device_batch_size 2 under torchrun (gloo): (output dir, traces by rank, stdout)."""
    work = tmp_path_factory.mktemp("ddp")
    out, trace = work / "out", work / "trace"
    env = {
        **child_env(),
        "TC3_TRACE_DIR": str(trace),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU even on a GPU machine
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "tc3.cli.train", "--config", str(CONFIG),
        f"model={tiny_model_dir}", f"data={prep_dir}", f"output_dir={out}", "per_device_batch_size=2", *RUN,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    traces = {int(p.stem[4:]): json.loads(p.read_text()) for p in trace.glob("rank*.json")}
    return out, traces, done.stdout


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, prep_dir, tmp_path_factory):
    """The same run in one process with per_device_batch_size 4 (same global batch): (output dir, trace)."""
    from tc3.config import load_config
    from tc3.train import train

    work = tmp_path_factory.mktemp("single")
    os.environ["TC3_TRACE_DIR"] = str(work / "trace")
    try:
        overrides = [f"model={tiny_model_dir}", f"data={prep_dir}", f"output_dir={work / 'out'}",
                     "per_device_batch_size=4", *RUN]  # fmt: skip
        train(load_config(CONFIG, overrides))
    finally:
        del os.environ["TC3_TRACE_DIR"]
    return work / "out", json.loads((work / "trace" / "rank0.json").read_text())


def test_ranks_train_disjoint_shards_of_one_sample(ddp_run):
    out, traces, stdout = ddp_run
    assert sorted(traces) == [0, 1] and all(t["world_size"] == 2 for t in traces.values())
    rank0, rank1 = traces[0], traces[1]
    assert rank0["train_set"] == rank1["train_set"]  # the same sample, in the same order, tokenized alike
    assert len(rank0["trained"]) == len(rank1["trained"]) == 32 * 2  # 32 steps x per-device batch 2
    assert not set(rank0["trained"]) & set(rank1["trained"])  # disjoint shards
    assert set(rank0["trained"]) | set(rank1["trained"]) <= set(rank0["train_set"])
    assert "2 process(es); global batch 4 sequences" in stdout and stdout.count("tc3-train: done") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 4


def test_ranks_end_with_the_adapter_rank0_saved(ddp_run):
    from safetensors.torch import load_file
    from tc3.train import lora_digest

    out, traces, _ = ddp_run
    saved = lora_digest(load_file(out / "adapter_model.safetensors"))
    assert traces[0]["lora_digest"] == traces[1]["lora_digest"] == saved
    # written once, by rank 0: complete outputs, one log, checkpoints marked after both ranks saved their state
    for name in ("adapter_config.json", "tokenizer.json", "tc3_config.yaml", "README.md", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / ".final.partial").exists()
    steps_logged = [e["step"] for e in read_log(out) if "loss" in e]
    assert steps_logged == [4, 8, 12, 16, 20, 24, 28, 32]  # one writer: no line twice
    for checkpoint in ("checkpoint-16", "checkpoint-32"):
        assert {p.name for p in (out / checkpoint).glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
        marker = json.loads((out / checkpoint / "tc3_checkpoint_complete").read_text())
        # and the run's totals there, of both processes: as the log (a loss record every 4 steps) counts them
        step = int(checkpoint.split("-")[1])
        logged = [e for e in read_log(out) if "loss" in e and e["step"] <= step]
        assert marker["world_size"] == 2 and marker["tokens"] == logged[-1]["tokens"]
        assert marker["loss_sum"] == pytest.approx(sum(4 * e["loss"] for e in logged), rel=1e-5)


def test_two_processes_retrace_one_process_with_the_same_global_batch(ddp_run, one_process_run):
    """Step k of the two-process run trains on exactly the 4 sequences of step k of the one-process run, from the
    same seeded LoRA start, so losses and gradient norms agree to rounding. The eval loss only nearly: the Trainer
    averages the losses of eval batches, and a process's eval batch is 2 sequences here, not 4."""
    out, traces, _ = ddp_run
    single_out, single = one_process_run
    by_step = [sorted(a + b) for a, b in zip(steps(traces[0]["trained"], 2), steps(traces[1]["trained"], 2))]
    assert by_step == [sorted(s) for s in steps(single["trained"], 4)]

    log, single_log = read_log(out), read_log(single_out)
    losses = [e["loss"] for e in log if "loss" in e]
    eval_losses = [e["eval_loss"] for e in log if "eval_loss" in e]
    assert losses[-1] < losses[0] - 0.3 and eval_losses[-1] < eval_losses[0]  # test_train's loss_falls, as expected
    assert losses == pytest.approx([e["loss"] for e in single_log if "loss" in e], abs=1e-3)
    grad_norms = [e["grad_norm"] for e in log if "grad_norm" in e]
    assert grad_norms == pytest.approx([e["grad_norm"] for e in single_log if "grad_norm" in e], rel=1e-3)
    assert eval_losses == pytest.approx([e["eval_loss"] for e in single_log if "eval_loss" in e], abs=0.05)
    # the same sequences: the same real tokens at every log, and the same mean train loss of the run
    assert [e["tokens"] for e in log if "tokens" in e] == [e["tokens"] for e in single_log if "tokens" in e]
    metrics, single_metrics = (json.loads((o / "metrics.json").read_text()) for o in (out, single_out))
    assert metrics["trained_tokens"] == single_metrics["trained_tokens"]
    assert metrics["train_loss"] == pytest.approx(single_metrics["train_loss"], abs=1e-3)


def test_resume_refuses_another_number_of_processes(tmp_path, monkeypatch):
    """Batches and data order depend on the number of processes: a checkpoint of 2 resumes only with 2."""
    from tc3.config import ConfigError, TrainConfig
    from tc3.outputs import claim_dir
    from tc3.train import COMPLETE_MARKER, check_output_dir

    claim_dir(tmp_path, "tc3-train")  # a run dir is tc3-train's own
    checkpoint = tmp_path / "checkpoint-16"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 16, "max_steps": 32}))
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps({"world_size": 2}))
    config = TrainConfig(output_dir=str(tmp_path), max_steps=32)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="written by 2 process.*this run has 1"):
        check_output_dir(config, resume=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert check_output_dir(config, resume=True) == checkpoint
    (checkpoint / COMPLETE_MARKER).write_text("")  # a marker from before world_size was recorded: one process
    with pytest.raises(ConfigError, match="written by 1 process.*this run has 2"):
        check_output_dir(config, resume=True)
