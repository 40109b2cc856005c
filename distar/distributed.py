"""Data parallelism over an initialised ``torch.distributed`` process group (gloo or NCCL).

Gradients are all-reduced and averaged explicitly after each backward, rather than through the
DDP wrapper: the DI* generator step back-propagates through a frozen assistant evaluated *inside*
the loss, and the assistant step runs the frozen generator, which DDP's one-forward-one-backward
bookkeeping does not fit. The result is the same synchronous data-parallel update DDP performs.
Without a process group every function here is a no-op, so single-process runs need no setup.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def broadcast_parameters(module: nn.Module) -> None:
    """Make every rank start from rank 0's weights."""
    if is_distributed():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(module: nn.Module) -> None:
    """All-reduce (sum) then divide every parameter gradient by the world size."""
    if not is_distributed():
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
