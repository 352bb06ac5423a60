"""The GPU a process trains on, as tc3.train.speed reads it: its free memory (under any per-process cap), its name and
its measured bf16 matrix rate. None for each on a machine without CUDA."""

from __future__ import annotations

import statistics


def free_bytes() -> float | None:
    """Bytes this process may still allocate on its current GPU: the driver's free memory, lowered to the cap of
    `torch.cuda.set_per_process_memory_fraction` when one is set (what the benchmark's memory caps use). None
    without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(device)
    capped = torch.cuda.get_per_process_memory_fraction(device) * total - torch.cuda.memory_reserved(device)
    return float(min(free, capped))


def device_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def matmul_tflops(n: int = 8192, reps: int = 50) -> dict:
    """Median bf16 n x n x n matrix product rate (cuBLAS through torch) on the current GPU, random inputs, three
    input sets rotated: {"n", "median_s", "tflops", "device", "reps"}. Needs CUDA (3 x 2 x n^2 x 2 bytes free)."""
    import torch

    sets = [(torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
             torch.randn(n, n, device="cuda", dtype=torch.bfloat16)) for _ in range(3)]  # fmt: skip
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    for a, b in sets * 5:  # warm-up: cuBLAS picks its kernel, clocks rise
        torch.matmul(a, b, out=out)
    times = []
    for i in range(reps):
        a, b = sets[i % 3]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    median = statistics.median(times)
    return {"n": n, "median_s": median, "tflops": round(2 * n**3 / median / 1e12, 1),
            "device": torch.cuda.get_device_name(), "reps": reps}  # fmt: skip
