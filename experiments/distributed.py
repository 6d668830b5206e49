"""Data-parallel training over several processes: the same entry point, launched by torchrun.

    torchrun --standalone --nproc_per_node 2 -m experiments.train scale=smoke method=lora     # 2 processes, one machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-endpoint HOST:29500 -m experiments.train ...   # several machines

Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op and a run is what it always was.

Under torchrun each process (rank) builds the same model from the same seed, and DDP averages gradients in
backward. Every global micro-batch (train.batch_size rows of loop.Order) is cut into contiguous per-rank slices;
each rank's mean loss is weighted by its share of the batch (rows, or target tokens for generation), so the
optimizer sees the gradient of the global batch, as one process would, up to float reduction order. Dropout draws
from a stream per rank (rank 0's is the single-process one), else every rank's slice would get the same masks;
checkpoints keep every rank's RNG state, so a resume under the same number of processes is exact.

Backends: gloo for CPU tensors; on a machine with CUDA, each rank takes GPU LOCAL_RANK (`device`, train.device=auto)
and CUDA tensors go through NCCL. The GPU path has not been run on a GPU yet.

Rank 0 owns the run directory: lock, checkpoints, metrics.jsonl, evaluations, final.json, adapter, wandb. The other
ranks write nothing (not even Hydra's .hydra/ and train.log: `worker_hydra_overrides`; Hydra does make the run's
folder on every rank); they wait for rank 0 in the next collective while it evaluates, and leave once training
is done. A resume reads rank 0's checkpoint on every rank, so the run directory must be on a file system all ranks
share.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

SEED_STRIDE = 1_000_003  # rank r's dropout seed: seed + r * SEED_STRIDE (rank 0: the single-process seed)


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def worker_hydra_overrides() -> list[str]:
    """Overrides that keep Hydra on ranks > 0 from writing .hydra/ and train.log into rank 0's run directory."""
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout"] if rank() > 0 else []


def init() -> None:
    """Join torchrun's process group, once per process (the jobs of a multirun share it)."""
    if world() == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # the other ranks wait in a collective while rank 0 evaluates: allow for long evaluations
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
                            timeout=timedelta(hours=2))


def device(requested: str = "auto") -> torch.device:
    """Where this process trains: `auto` = its local rank's GPU when CUDA is visible, else the CPU."""
    if requested == "auto":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() \
            else torch.device("cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={requested} but torch sees no CUDA device (torch {torch.__version__}, "
                         f"CUDA build: {torch.version.cuda}); use train.device=cpu, or auto")
    return dev


def to_device(batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A collated batch (built on the CPU) on the device of `model`'s parameters."""
    dev = next(model.parameters()).device
    return batch if dev.type == "cpu" else {k: v.to(dev, non_blocking=True) for k, v in batch.items()}


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a picklable object)."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def shard(rows: list[int]) -> list[int]:
    """This rank's contiguous slice of a global micro-batch; sizes differ by at most one (empty when the batch has
    fewer rows than there are ranks)."""
    n, w, r = len(rows), world(), rank()
    return rows[r * n // w:(r + 1) * n // w]


def wrap(model: nn.Module) -> nn.Module:
    """`model` in DistributedDataParallel under torchrun, else `model` itself. Train through the wrapper; evaluate
    and save the module inside it (rank 0 alone runs those, and a DDP forward is a collective)."""
    if world() == 1:
        return model
    device = next(model.parameters()).device
    # find_unused_parameters stays off: DDP skips frozen (requires_grad=False) base weights, and every method's
    # trainable parameters take part in every forward (checked for each method at smoke scale; one that breaks
    # this gets DDP's own error at the second step, not a silent difference)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce on the micro-batches before the last one of a step (they add up locally)."""
    return model.no_sync() if not sync and isinstance(model, nn.parallel.DistributedDataParallel) else nullcontext()


def global_loss(loss: torch.Tensor, units: int) -> tuple[torch.Tensor | float, float]:
    """(mean loss of the global micro-batch, factor for this rank's loss before backward).

    `loss` is this rank's mean over its `units` (rows, or target tokens); DDP divides the summed gradients by the
    number of ranks, hence the factor world * units / (units of the whole batch). Every rank gets the same mean,
    so a diverged loss stops all of them at the same step. One process: the loss as an fp64 tensor on its device
    (no host sync); several: a float, all-reduced."""
    if world() == 1:
        return loss.detach().double(), 1.0
    t = torch.tensor([loss.item() * units if units else 0.0, float(units)], dtype=torch.float64)
    dist.all_reduce(t)
    total, n = t.tolist()
    if not n:  # no target in the whole batch: the loss is undefined, as it is in one process
        return float("nan"), 0.0
    return total / n, world() * units / n


class NoTracker:
    """What ranks > 0 log to: rank 0 keeps the record."""

    def log(self, row: dict) -> None:
        pass

    def finish(self, final: dict) -> None:
        pass
