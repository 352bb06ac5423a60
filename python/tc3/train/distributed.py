"""Several processes (torchrun / accelerate launch: one process a GPU, data parallel): their count, their shared
state, printing once, and checking that they agree."""

from __future__ import annotations

import os

from tc3.config import ConfigError


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun and accelerate launch set WORLD_SIZE); 1 when run alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_state(on_cuda: bool):
    """accelerate's process state, made before any data or model is loaded. Under a launcher it joins the process
    group (nccl on CUDA, gloo on CPU) and pins this process to its own GPU (LOCAL_RANK); alone it is one process."""
    from accelerate import PartialState

    return PartialState(cpu=not on_cuda)


def say(message: str) -> None:
    """Print once: on the main process only (every process runs the same code)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def check_processes_agree(state, facts: dict) -> None:
    """Every process must hold the same sample, in the same order, and the same max_length: the sampler gives each
    process its share of one index order, so processes holding different data would overlap or skip examples
    without any error. All processes raise together (no process is left waiting)."""
    if state.num_processes == 1:
        return
    from accelerate.utils import gather_object

    gathered = gather_object([facts])
    differing = sorted(k for k in facts if any(g[k] != gathered[0][k] for g in gathered))
    if differing:
        raise ConfigError(f"the {state.num_processes} processes disagree on {', '.join(differing)}: {gathered}")


def all_reduce(value, op: str):
    """`value` (a number or this process's tensor) summed, or averaged, over all processes; itself when alone."""
    import torch
    import torch.distributed as dist

    tensor = torch.as_tensor(value, dtype=torch.float64 if op == "mean" else torch.int64)
    if dist.is_available() and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        tensor = tensor.to(device).clone()  # all_reduce works in place: never on the running count itself
        dist.all_reduce(tensor)
        if op == "mean":
            tensor = tensor / dist.get_world_size()
    return tensor.item()
