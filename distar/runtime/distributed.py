"""Data parallelism over an initialised ``torch.distributed`` process group (gloo or NCCL).

Gradients are all-reduced and averaged explicitly after each backward, rather than through the
DDP wrapper: the DI* generator step back-propagates through a frozen assistant evaluated *inside*
the loss, and the assistant step runs the frozen generator, which DDP's one-forward-one-backward
bookkeeping does not fit. The result is the same synchronous data-parallel update DDP performs.
Without a process group every function here is a no-op, so single-process runs need no setup.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def backend(cuda: bool, offload: bool = False) -> str:
    """The process group's backend: NCCL on GPUs, gloo on CPUs. FSDP2 with CPU offload
    (``resources.cpu_offload``) keeps gradients on the host, where the gradient-norm reduction
    of the clip runs, so it needs a CPU backend beside NCCL (torchtitan does the same)."""
    if not cuda:
        return "gloo"
    return "cuda:nccl,cpu:gloo" if offload else "nccl"


def has_cpu_backend() -> bool:
    """Whether the default group can run collectives on host tensors."""
    return "cpu:" in dist.get_backend_config()


def init_from_launcher(offload: bool = False) -> None:
    """Join the process group a launcher describes (torchrun: ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``), on this rank's GPU when there are GPUs;
    nothing when there is none or a group already runs (Ray Train starts its own)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend(torch.cuda.is_available(), offload))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


BUCKET_BYTES = 64 * 2**20


def tensor_buckets(grads: list[torch.Tensor], bucket_bytes: int = BUCKET_BYTES):
    """Consecutive runs of same-dtype, same-device tensors of at most ``bucket_bytes`` (a
    larger tensor is a bucket of its own): collective traffic in large messages without a
    buffer the size of every tensor at once (~10 GB for one SDXL UNet in fp32)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        same = not bucket or (g.dtype == bucket[0].dtype and g.device == bucket[0].device)
        if bucket and (not same or size + nbytes > bucket_bytes):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += nbytes
    if bucket:
        yield bucket


def average_gradients(params: list[nn.Parameter], bucket_bytes: int = BUCKET_BYTES) -> None:
    """All-reduce (sum) then divide every gradient by the world size, bucket by bucket: the
    largest extra buffer is one bucket (or one gradient, when a single one is larger)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    n = dist.get_world_size()
    for bucket in tensor_buckets(grads, bucket_bytes):
        if len(bucket) == 1:
            dist.all_reduce(bucket[0])
            bucket[0].div_(n)
            continue
        flat = torch.cat([g.flatten() for g in bucket])
        dist.all_reduce(flat)
        flat.div_(n)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def all_gather_objects(obj):
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` alone."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each scalar averaged over the ranks (one all-reduce): the logged losses of a step are
    those of its global batch, whatever the number of ranks."""
    if not is_distributed() or not values:
        return values
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values.values()])
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(values, stacked, strict=True))


def broadcast_tensors(tensors: list[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Rank 0's values into ``tensors`` on every rank: one broadcast per bucket
    (:func:`tensor_buckets`), each tensor sent once; a rank's own values (uninitialised
    storage, for a network built on the meta device) are overwritten."""
    if not is_distributed():
        return
    with torch.no_grad():
        for bucket in tensor_buckets(tensors, bucket_bytes):
            if len(bucket) == 1 and bucket[0].is_contiguous():  # no copy of a large tensor
                dist.broadcast(bucket[0], src=0)
                continue
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.broadcast(flat, src=0)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


def broadcast_networks(networks: list[nn.Module]) -> None:
    """Every parameter and buffer (non-persistent ones too) of ``networks`` from rank 0, each
    tensor once however many networks hold it, in buckets: a world's start-up broadcast (the
    world owns it: :class:`distar.worlds.base.World`, ``placed``)."""
    seen: set[int] = set()
    tensors = []
    for network in networks:
        for t in [*network.parameters(), *network.buffers()]:
            if id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
    broadcast_tensors(tensors)
