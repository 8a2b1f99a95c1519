"""torchrun / DDP: process-group setup and teardown, exact evaluation shards, cross-rank agreement.

``torchrun --nproc_per_node=N -m lossbench train CONFIG`` starts N processes
with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous address)
in their environment; :func:`session` joins them into one process group:
NCCL with one GPU per process when CUDA is used, gloo on the CPU. Without
those variables (a plain ``lossbench train``) it is a one-process session
and nothing is initialized.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from lossbench.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Whether this process reports: rank 0 of a torchrun launch, or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def resolve_device(name: str, key: str = "device:") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a named CUDA device must exist (``key`` names the setting)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{key} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key} {name!r} asked for but no CUDA GPU is available; use auto or cpu")
    return device


@contextmanager
def session(device_name: str) -> Iterator[DistContext]:
    """Join the torchrun process group for the block (if launched by torchrun), and leave it after.

    Under torchrun each process uses ``cuda:LOCAL_RANK`` and NCCL when the
    configured device is CUDA (or ``auto`` with GPUs present), otherwise the
    CPU and gloo. Nested sessions (the CLI holds one around several
    experiments) reuse the group and leave it to the outermost.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size <= 1:
        yield DistContext(0, 1, 0, device)
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node; "
                            "set torchrun --nproc_per_node to at most the GPU count")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    ctx = DistContext(rank, world_size, local_rank, device)
    if dist.is_initialized():
        yield ctx
        return
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def run_on_main(ctx: DistContext, fn: Callable[[], Any]) -> None:
    """Run ``fn`` on rank 0 only; a UserError it raises is raised on every rank, so none waits forever."""
    error = None
    if ctx.is_main:
        try:
            fn()
        except UserError as exc:
            error = str(exc)
    if ctx.distributed:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise UserError(error)


def all_true(ctx: DistContext, flag: bool) -> bool:
    """True when ``flag`` is true on every rank (one all-reduce when distributed)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_across_ranks(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


def broadcast_buffers(ctx: DistContext, module: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics).

    DDP broadcasts buffers at the start of each training forward, so after the
    last one every rank holds statistics of its own last batch; evaluating and
    checkpointing need the same model on all ranks.
    """
    if ctx.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: each sample on exactly one rank, none repeated.

    ``DistributedSampler`` pads the set to a multiple of the world size by
    repeating samples, which would count them twice in validation metrics;
    this sampler gives ranks shards that differ in length by at most one.
    """

    def __init__(self, length: int, world_size: int, rank: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def exact_eval_loader(loader: DataLoader, ctx: DistContext) -> DataLoader:
    """``loader`` re-made over this rank's :class:`ShardSampler` shard (itself when not distributed)."""
    if not ctx.distributed:
        return loader
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=ShardSampler(len(loader.dataset), ctx.world_size,
                                                                            ctx.rank),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers,
    )
