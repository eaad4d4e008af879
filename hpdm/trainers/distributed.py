"""Process groups from torchrun, and DDP / FSDP2 wrapping chosen by a gin mixin (Table 8).

The paper trains the class-conditional models with DDP and the text-to-video ones with FSDP
(Table 8, "Parallelization strategy"). Select one with ``gin/mixins/ddp.gin`` or
``gin/mixins/fsdp.gin`` (``wrap_model.strategy``); a single process ignores the strategy.
The backend is NCCL when CUDA is available and gloo otherwise, so both modes run on CPU.

Single node, 8 GPUs::

    torchrun --nproc_per_node=8 -m hpdm.cli.train --gin_file=gin/quickstart.gin \\
        --gin_file=gin/mixins/fsdp.gin --workdir=runs/x

Several nodes (run the same command on every node; torchrun's c10d rendezvous elects the ranks)::

    torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_id=hpdm-x \\
        --rdzv_endpoint=HOST_OF_NODE0:29500 -m hpdm.cli.train ... --workdir=shared/runs/x

The workdir must be on a file system every node sees: rank 0 writes the checkpoints, and every rank
reads them back when resuming.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import gin
import torch
import torch.distributed as dist
from absl import logging
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group torchrun describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **({"device_id": device} if device.type == "cuda" else {}),
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


@gin.configurable(denylist=["device"])
def set_matmul_precision(device: torch.device, tf32: bool = True) -> str:
    """Allow TF32 for float32 matmuls and convolutions on CUDA, or forbid it; logs and returns what runs.

    The paper trains in float32 (Appendix D, item 7: mixed precision converged worse). TF32 keeps
    float32's range and accumulation and rounds only the multiplied inputs to a 10-bit mantissa, for
    several times the float32 matmul throughput on Ampere and later GPUs; PyTorch leaves it off for
    matmuls by default, which silently runs the paper's float32 recipe at a fraction of the speed.
    ``hpdm-train`` and ``hpdm-sample`` call this at start-up; ``set_matmul_precision.tf32 = False``
    gives exact float32. The flags are process-wide and harmless on a CPU, which never uses TF32.
    """
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    device = torch.device(device)
    if device.type == "cuda":
        precision = "tf32 (CUDA)" if tf32 else "float32 (CUDA, TF32 off: set_matmul_precision.tf32 = False)"
    else:
        precision = f"float32 ({device.type.upper()})"
    logging.info("matmul precision: %s", precision)
    return precision


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@gin.configurable
def wrap_model(model: nn.Module, info: DistInfo, strategy: str = "ddp") -> nn.Module:
    """Wrap ``model`` for data parallelism; returns the module the training step calls.

    ``strategy``: ``"ddp"`` (DistributedDataParallel) or ``"fsdp"`` (FSDP2 ``fully_shard``: each
    RIN block in ``model.blocks`` is its own unit, then the root). FSDP2 shards the module in
    place, so ``model`` itself is returned and parameter names stay those of the plain module.
    A single process returns ``model`` unchanged.
    """
    if not info.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for block in getattr(model, "blocks", []):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"wrap_model: unknown strategy {strategy!r} (use 'ddp' or 'fsdp')")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind a DDP wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model


class ModelHandle:
    """What the loss sees: calls go through the (DDP) wrapper, attributes come from the plain model.

    ``diffusion_loss`` reads ``model.schedule`` and calls ``model(...)``; a DDP wrapper has no
    ``schedule``, and calling the plain module would bypass DDP's gradient hooks.
    """

    def __init__(self, wrapped: nn.Module, plain: nn.Module):
        self._wrapped, self._plain = wrapped, plain

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._plain, name)


def gradient_sync(wrapped: nn.Module, enabled: bool):
    """A context for one backward pass that synchronises gradients over ranks only when ``enabled``
    (the last micro-batch of an accumulated step): DDP's ``no_sync`` otherwise, and FSDP2's switch."""
    if hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(enabled)
    if not enabled and isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped.no_sync()
    return contextlib.nullcontext()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def sum_over_ranks(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of ``t`` over ranks, on the CPU (``t`` itself in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone().to(device)
        dist.all_reduce(t)
        return t.cpu()
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (so every rank takes the same branch)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
    return flag


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest ``value`` of all ranks (every rank gets the same answer, e.g. to agree on a stop)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([int(value)], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())
    return int(value)


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (in rank order); ``[obj]`` in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
