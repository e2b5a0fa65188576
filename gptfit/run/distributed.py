"""Data-parallel runs under `torchrun` or `accelerate launch`: one run directory, rank 0 writes.

The launcher sets WORLD_SIZE, RANK and the rendezvous variables; gptfit joins the process group
before the Trainer does (Accelerate reuses it), so that rank 0 can hand its run directory to the other
ranks: Hydra names a directory per process (`${now:}` differs), and only rank 0's is kept.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from gptfit.errors import UserError
from gptfit.run.folder import discard_unused_run_dir


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> None:
    """Join the process group of a multi-process launch (gloo on CPU, NCCL on CUDA)."""
    if world_size() == 1 or dist.is_initialized():
        return
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timedelta(minutes=30))


def share(value):
    """Rank 0's value, on every rank."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _tensor(values: list) -> torch.Tensor:
    on_gpu = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    return torch.tensor(values, dtype=torch.float64, device="cuda" if on_gpu else "cpu")


def mean(value: float) -> float:
    """The mean of a number over all ranks (every rank must call it at the same point)."""
    if not dist.is_initialized():
        return value
    t = _tensor([value])
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def reduce_tensor(t: torch.Tensor, op: str) -> None:
    """Sum ("sum") or maximum ("max") of a CPU tensor over all ranks, in place."""
    if not dist.is_initialized():
        return
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        on_gpu = t.cuda()
        dist.all_reduce(on_gpu, op=reduce_op)
        t.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(t, op=reduce_op)


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every rank when it is true on any (every rank must call it at the same point)."""
    if not dist.is_initialized():
        return flags
    t = _tensor([float(f) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def follow_main_run_dir(run_dir: str) -> str:
    """The run directory every rank writes to: rank 0's. The others remove the one Hydra made for them."""
    if world_size() == 1:
        return run_dir
    shared = share(run_dir)
    if not is_main() and shared != run_dir:
        discard_unused_run_dir(run_dir)
    return shared


def rank0_first(load):
    """`load()` on rank 0 first (it fills the caches), then on the other ranks; rank 0's error stops all."""
    if world_size() == 1:
        return load()
    if is_main():
        try:
            result = load()
        except UserError as e:
            share(str(e))
            raise
        share(None)
        return result
    error = share(None)
    if error:
        raise UserError(error)
    return load()
