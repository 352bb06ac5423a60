"""QLoRA throughput of tc3-train on a Llama-3-8B-shaped model (random weights), one setup per process.

    python benches/gpu/train_bench.py matmul                         # bf16 matrix rate of this GPU (TFLOP/s)
    python benches/gpu/train_bench.py build-model DIR --tokenizer TOK  # 8B-shaped random model in bf16
    python benches/gpu/train_bench.py setup NAME --model DIR --data PREP --out JSONL [--batch B] [--profile F]

Setups (each trains the same seeded sample of the same tc3-prep output through tc3.train.build_run):
  tc3     the shipped config llama3-8b-qlora as is (unsloth, padding-free, variable-length attention)
  course  the course notebook: unsloth, batch 2 x accumulation 4, max_seq_length 2048, padded (no padding-free,
          no packing), loss on the whole text
  hf      transformers + PEFT + bitsandbytes NF4 QLoRA as a user sets it up: same LoRA settings, no unsloth, padded
          batches, SDPA, gradient checkpointing (backend=hf varlen_attention=false), --batch B
  hf-tc3  tc3's hf backend: the same, with padding-free batches and variable-length attention (backend=hf)
Variants: --set key=value (repeatable) and --label NAME to tell the row apart; --memory-cap-gb G caps this process's
GPU memory at G GB (torch.cuda.set_per_process_memory_fraction) before anything loads, as a card of G GB would (the
auto settings plan for the cap). --batch auto (or none) leaves the batch to the config (auto in the shipped one).

Timing: a callback synchronizes the GPU at the end of every optimizer step; the first --warmup steps are dropped;
tokens are counted from the batches the Trainer feeds (attention_mask sum; the whole flattened row when
padding-free), so padding is excluded. One JSON line per setup is appended to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
CONFIG = ROOT / "python" / "tc3" / "configs" / "llama3-8b-qlora.yaml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "UNSLOTH_DISABLE_STATISTICS": "1"}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
def matmul_rate() -> dict:
    """Median bf16 8192-cube matrix product rate of this GPU (tc3.train.card.matmul_tflops)."""
    from tc3.train.card import matmul_tflops

    return matmul_tflops()


# ---------------------------------------------------------------------------------------------------------------------
def build_model(out_dir: Path, tokenizer_dir: Path) -> dict:
    """Meta-Llama-3-8B's shape (32 layers, 4096 hidden, 14336 MLP, 32/8 heads, vocab 128256), random weights, bf16,
    built on the GPU and saved with the benchmark tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        torch_dtype="bfloat16",
    )  # fmt: skip
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir, max_shard_size="5GB")
    tok.save_pretrained(out_dir)
    return {"params": params, "embedding_params": config.vocab_size * config.hidden_size,
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
SETUPS = {
    "tc3": [],
    "course": ["backend=unsloth", "padding_free=false", "per_device_batch_size=2", "gradient_accumulation_steps=4",
               "max_length=2048"],
    "hf": ["backend=hf", "varlen_attention=false"],
    "hf-tc3": ["backend=hf"],
}  # fmt: skip


def make_timer(trainer, warmup: int, profile_steps: int, profile_path: Path | None):
    import torch
    from transformers import TrainerCallback

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    micro = []  # (real tokens, padded positions) of every micro-batch, as tensors/ints (no sync here)
    original = trainer.training_step

    def counted(model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        labels = inputs.get("labels")
        loss_tokens = (labels != -100).sum() if labels is not None else 0
        micro.append(
            (mask.sum() if mask is not None else ids.numel(), ids.numel(), loss_tokens)
        )
        return original(model, inputs, *args, **kwargs)

    trainer.training_step = counted

    class Timer(TrainerCallback):
        def __init__(self):
            self.ends = []  # (time, micro-batches so far) at the end of each optimizer step
            self.prof = None
            self.profile_window = None

        def on_train_begin(self, args, state, control, **kw):
            sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            if profile_path and state.global_step == state.max_steps - profile_steps:
                sync()
                kind = (
                    "CUDA" if torch.cuda.is_available() else "CPU"
                )  # CPU: only to test this code off GPU
                self.prof = torch.profiler.profile(
                    activities=[getattr(torch.profiler.ProfilerActivity, kind)]
                )
                self.prof.start()
                self.profile_window = [time.perf_counter(), None]

        def on_step_end(self, args, state, control, **kw):
            sync()
            now = time.perf_counter()
            if self.prof is None:
                self.ends.append((now, len(micro)))
            if self.prof is not None and state.global_step == state.max_steps:
                self.prof.stop()
                self.profile_window[1] = now

    return Timer(), micro


def kernel_times(kernels, groups: dict) -> tuple[dict, dict, list]:
    """Device time (us) of `kernels` by group of `groups` (first match, else "other"), (time, count) by kernel name,
    and the (start, end) interval of each."""
    by_group = dict.fromkeys([*groups, "other"], 0.0)
    by_name: dict[str, list] = {}
    intervals = []
    for e in kernels:
        dur = e.time_range.end - e.time_range.start
        intervals.append((e.time_range.start, e.time_range.end))
        name = e.name.lower()
        for g, keys in groups.items():
            if any(k in name for k in keys):
                by_group[g] += dur
                break
        else:
            by_group["other"] += dur
        row = by_name.setdefault(e.name, [0.0, 0])
        row[0] += dur
        row[1] += 1
    return by_group, by_name, intervals


def busy_time(intervals: list) -> float:
    """The length of the union of (start, end) intervals (sorts them in place)."""
    intervals.sort()
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in intervals:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    return busy


def write_profile(path: Path, summary: dict, by_name: dict) -> None:
    """Writes the summary (JSON) and the 40 kernels and copies of most device time to `path`."""
    with path.open("w") as f:
        f.write(
            json.dumps(summary, indent=2)
            + "\n\n# top kernels and copies (device time over the profiled steps)\n"
        )
        for name, (dur, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[
            :40
        ]:
            f.write(f"{dur / 1e3:10.1f} ms  {count:7d}x  {name[:150]}\n")


def summarize_profile(prof, wall_s: float, steps: int, path: Path) -> dict:
    """Device time by kind of kernel over the profiled steps, and how busy the GPU was: the union of kernel and copy
    intervals over the wall time (a CUDA-only trace: kernels and copies, no CPU ops, so nothing is counted twice)."""
    from torch.autograd import DeviceType

    groups = {"matmul (gemm)": ("gemm", "cutlass", "nvjet", "xmma", "cublas", "sm90_xmma"),
              "attention (cuDNN SDPA)": ("sdpa", "flash", "fmha", "attention", "compute_dot_do_o"),
              "4-bit dequantize": ("dequant",),
              "copies device<->host (offloaded checkpoints)": ("memcpy dtoh", "memcpy htod"),
              "copies device<->device": ("memcpy dtod",),
              "fill (zeroing)": ("fillfunctor",),
              "copy / cast kernels": ("direct_copy", "copy_kernel", "catarraybatchedcopy"),
              "add / other elementwise": ("elementwise_kernel", "vectorized_elementwise", "unrolled_elementwise"),
              "unsloth triton kernels": ("lora_mlp", "_fg_kernel", "_dwf", "rms_layernorm", "rope", "cross_entropy",
                                         "_cce", "triton")}  # fmt: skip
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    by_group, by_name, intervals = kernel_times(kernels, groups)
    busy = busy_time(intervals)
    summary = {
        "profiled_steps": steps,
        "wall_s": round(wall_s, 3),
        "kernels_and_copies": len(kernels),
        "kernels_per_step": round(len(kernels) / steps),
        "device_time_sum_s": round(sum(by_group.values()) / 1e6, 3),
        "gpu_busy_s": round(busy / 1e6, 3),
        "gpu_busy_fraction": round(busy / 1e6 / wall_s, 3),
        "device_time_by_kind_s": {g: round(v / 1e6, 3) for g, v in by_group.items()},
    }
    write_profile(path, summary, by_name)
    return summary


def _whole_text_post_init(self):
    self.completion_only_loss = False
    super(WholeTextLoss, self).__post_init__()


def whole_text_config(base):
    """SFTConfig with completion_only_loss forced off, as a module-level class (the Trainer pickles its args)."""
    global WholeTextLoss
    WholeTextLoss = type(
        "WholeTextLoss",
        (base,),
        {"__post_init__": _whole_text_post_init, "__module__": __name__},
    )
    return WholeTextLoss


def describe_run(args, config, run, setup_s: float) -> dict:
    """The row's facts before its timings: the setup, and the plan tc3 resolved (auto settings filled)."""
    plan, trainer = run.plan, run.trainer
    return {"setup": args.name, "label": args.label or args.name, "attention": run.attention, "backend": run.backend,
            "batch": plan.per_device_batch, "accumulation": plan.gradient_accumulation,
            "max_length": run.config.max_length, "gradient_checkpointing": plan.checkpointing,
            "checkpointed_layers": plan.checkpointed_layers, "speed_choice": plan.speed_choice,
            "predicted_peak_gb": plan.predicted_peak_gb, "memory_cap_gb": args.memory_cap_gb,
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
            "padding_free": bool(trainer.args.padding_free) or (run.backend == "unsloth" and config.padding_free),
            "train_samples": len(trainer.train_dataset),
            "overrides": SETUPS[args.name] + ([f"per_device_batch_size={args.batch}"] if args.batch else []) + args.set,
            "token_lengths": run.lengths["stats"], "setup_s": round(setup_s, 1)}  # fmt: skip


def setup_environment(args) -> None:
    """Sets the offline environment; for the unsloth setups, imports unsloth first (padding-free off where asked)."""
    os.environ.update(OFFLINE)
    if not args.name.startswith("hf"):
        # read when unsloth is imported, which happens here, before tc3.train.model.prepare_environment could set it
        if args.name == "course" or "padding_free=false" in args.set:
            os.environ["UNSLOTH_DISABLE_AUTO_PADDING_FREE"] = "1"
        import unsloth  # noqa: F401  (first, as tc3.train does: it patches transformers and TRL)


def setup_overrides(args) -> list[str]:
    """The config overrides of this setup: data, model, step counts, the setup's own and --batch, --set."""
    name = args.name
    total_steps = args.warmup + args.steps + (args.profile_steps if args.profile else 0)
    overrides = [f"model={args.model}", f"data={args.data}", f"output_dir={args.workdir}/{name}-b{args.batch}-{os.getpid()}",
                 f"train_samples={args.train_samples}", f"eval_samples={args.eval_samples}",
                 f"max_steps={total_steps}", "logging_steps=1", "eval_steps=1000000", "save_steps=1000000",
                 *SETUPS[name]]  # fmt: skip
    if args.batch:
        overrides.append(f"per_device_batch_size={args.batch}")
    return overrides + args.set


def append_result(out: str, result: dict, rc: int) -> int:
    """Appends `result` as one JSON line to `out` and prints it; returns `rc`."""
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))
    return rc


def train_timed(args, config) -> dict:
    """Trains `config` through tc3's out-of-memory fallback, each attempt under its own step timer (and profiler).
    Returns {run, timer, micro, setup_s} of the attempt that trained; raises what fit_first_step raises, with the
    last attempt's {run, setup_s} in the exception's `timed` attribute."""
    from tc3.train import build_run
    from tc3.train.run import fit_first_step

    timed = {}

    def build(attempt, options):
        timed.clear()  # the last attempt's run goes before the next loads
        t0 = time.perf_counter()
        run = build_run(config, attempt=attempt, options=options)
        timed.update(setup_s=time.perf_counter() - t0, run=run)
        timed["timer"], timed["micro"] = make_timer(run.trainer, args.warmup, args.profile_steps,
                                                    Path(args.profile) if args.profile else None)
        run.trainer.add_callback(timed["timer"])
        return run

    try:
        fit_first_step(build)
    except Exception as e:
        e.timed = timed
        raise
    return timed


def step_timings(args, plan, timer, counts: list) -> dict:
    """The timed steps' fields: seconds per step, token and example rates, padding, peak GPU memory."""
    import torch

    ends = timer.ends
    # optimizer steps warmup+1 .. warmup+steps: from the end of step `warmup` to the end of the last timed one
    (t_a, m_a), (t_b, m_b) = ends[args.warmup - 1], ends[args.warmup + args.steps - 1]
    step_times = [ends[i][0] - ends[i - 1][0] for i in range(args.warmup, args.warmup + args.steps)]
    real = sum(c[0] for c in counts[m_a:m_b])
    padded = sum(c[1] for c in counts[m_a:m_b])
    examples = args.steps * plan.per_device_batch * plan.gradient_accumulation
    seconds = t_b - t_a
    return dict(
        timed_steps=args.steps, warmup_steps=args.warmup, timed_s=round(seconds, 3),
        s_per_step_median=round(statistics.median(step_times), 3), s_per_step_mean=round(seconds / args.steps, 3),
        s_per_step_min=round(min(step_times), 3), s_per_step_max=round(max(step_times), 3),
        tokens_per_s=round(real / seconds, 1), real_tokens=real, positions=padded,
        padding_fraction=round(1 - real / padded, 4),
        loss_token_fraction=round(sum(c[2] for c in counts[m_a:m_b]) / real, 4), tokens_per_step=round(real / args.steps, 1),
        examples_per_s=round(examples / seconds, 2), mean_tokens_per_example_timed=round(real / examples, 1),
        first_steps_s=[round(ends[0][0] - timer.t0, 2)] + [round(ends[i][0] - ends[i - 1][0], 2)
                                                           for i in range(1, args.warmup)],
        peak_allocated_gb=round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None,
        peak_reserved_gb=round(torch.cuda.max_memory_reserved() / 1e9, 2) if torch.cuda.is_available() else None,
    )  # fmt: skip


def run_setup(args) -> int:
    """Trains one setup under the step timer (and the profiler); appends its JSON line to --out and prints it.
    Returns 0, 3 on out of memory (past the first step, or no smaller plan left), 1 when the step callbacks did
    not fire as expected."""
    setup_environment(args)
    import torch
    import trl
    from tc3.config import ConfigError, load_config

    if args.name == "course":  # the notebook trained on the whole text: loss on prompt and answer
        trl.SFTConfig = whole_text_config(trl.SFTConfig)
    config = load_config(CONFIG, setup_overrides(args))
    if args.memory_cap_gb:
        torch.cuda.set_per_process_memory_fraction(args.memory_cap_gb * 1e9 / torch.cuda.mem_get_info()[1])
    try:
        timed = train_timed(args, config)
    except (torch.OutOfMemoryError, ConfigError) as e:
        result = describe_run(args, config, e.timed["run"], e.timed["setup_s"])
        result.update(oom=True, error=str(e).splitlines()[0][:300],
                      peak_gb=round(torch.cuda.max_memory_allocated() / 1e9, 2))  # fmt: skip
        return append_result(args.out, result, 3)
    run, timer = timed["run"], timed["timer"]
    result = describe_run(args, config, run, timed["setup_s"])
    counts = [(int(real), int(padded), int(loss)) for real, padded, loss in timed["micro"]]
    if len(timer.ends) < args.warmup + args.steps:  # the step callbacks did not fire as expected: keep what there is
        result.update(error=f"{len(timer.ends)} step ends seen, {len(counts)} micro-batches",
                      log_history=run.trainer.state.log_history[-5:])  # fmt: skip
        return append_result(args.out, result, 1)
    result.update(step_timings(args, run.plan, timer, counts))
    losses = [e["loss"] for e in run.trainer.state.log_history if "loss" in e]
    result["losses_first_last"] = [losses[0], losses[-1]] if losses else None
    if timer.prof is not None:
        lo, hi = timer.profile_window
        result["profile"] = summarize_profile(timer.prof, hi - lo, args.profile_steps, Path(args.profile))
    return append_result(args.out, result, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("matmul")
    b = sub.add_parser("build-model")
    b.add_argument("out_dir", type=Path)
    b.add_argument("--tokenizer", type=Path, required=True)
    s = sub.add_parser("setup")
    s.add_argument("name", choices=sorted(SETUPS))
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--workdir", default="/tmp/bench-runs")
    s.add_argument("--batch", type=lambda text: None if text in ("auto", "none") else int(text), default=None,
                   help="per-device batch (default, auto or none: the config's)")
    s.add_argument("--memory-cap-gb", type=float, default=None,
                   help="cap this process's GPU memory at this many GB, as a smaller card would")
    s.add_argument("--train-samples", type=int, default=2048)
    s.add_argument("--eval-samples", type=int, default=16)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument(
        "--profile",
        help="also profile --profile-steps more steps; write the summary here",
    )
    s.add_argument("--profile-steps", type=int, default=1)
    s.add_argument("--label", help="the row's name in the results (default: the setup's)")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        help="extra config override key=value (a variant)",
    )
    args = ap.parse_args(argv)
    if args.cmd == "matmul":
        print(json.dumps(matmul_rate()))
        return 0
    if args.cmd == "build-model":
        print(json.dumps(build_model(args.out_dir, args.tokenizer)))
        return 0
    return run_setup(args)


if __name__ == "__main__":
    sys.exit(main())
