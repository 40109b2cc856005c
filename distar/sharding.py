"""FSDP2 sharding of a run's networks (``resources.strategy=fsdp``).

Each network is sharded unit by unit and then as a whole (``fully_shard`` on every unit a world
names, then on the network; NVlabs/FastGen shards per UNet block, the SD worlds a step finer), so
a forward gathers one unit's weights at a time. What is trained keeps fp32 master shards;
forwards gather them in the world's compute dtype and gradients are reduce-scattered in fp32
(``MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=fp32)``). Activation checkpointing is
enabled by the world *before* sharding, as FSDP2 expects. Worlds call :func:`shard_network`
from their ``shard`` method; nothing here knows a world.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

# reshard_after_forward per network, remembered for gathered() to restore
_RESHARD: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def ensure_process_group(device: torch.device) -> None:
    """FSDP2 needs a process group even on one rank (``--fsdp`` benchmarks at world size 1):
    start a single-rank one in memory when none is running."""
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timedelta(minutes=30)
    )


def shard_network(
    network: nn.Module,
    blocks: list[nn.Module],
    device: torch.device,
    compute_dtype: torch.dtype,
    trained: bool,
    offload: bool = False,
) -> None:
    """``fully_shard`` every module of ``blocks``, then ``network``, in place.

    ``reshard_after_forward``: a trained network frees its gathered weights after each forward
    and gathers them again for its backward (ZeRO-3): it holds most memory (fp32 masters, two Adam
    moments, gradients) and the generator's forward comes long before its backward (the whole DI*
    loss lies between). The frozen reference keeps its gathered bf16 weights from the forward to
    the backward through its *input* that the generator loss needs (one all-gather per step
    instead of two, at the cost of one unsharded bf16 copy: 5.1 GB on SDXL).
    ``offload``: trained shards, their gradients and Adam states live on the host and the
    optimizer steps there (CPUOffloadPolicy; CUDA only)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    kwargs = {"mesh": mesh, "mp_policy": policy, "reshard_after_forward": trained}
    if offload and trained:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(network, **kwargs)
    _RESHARD[network] = trained
    for block in blocks:
        _RESHARD[block] = trained


def fsdp_modules(module: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(module: nn.Module):
    """Every sharded part of ``module`` gathered for the block (collective on entry and exit,
    every rank must enter): forwards inside need no collective, so ranks may run different
    numbers of them -- uneven evaluation shards, a plot on rank 0 alone. Costs one unsharded
    copy in the compute dtype. A no-op on an unsharded module."""
    parts = fsdp_modules(module)
    for part in parts:
        part.set_reshard_after_forward(False, recurse=False)
        part.unshard()
    try:
        yield
    finally:
        for part in parts:
            part.reshard()
            part.set_reshard_after_forward(_RESHARD.get(part, True), recurse=False)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (a sharded gradient norm); other tensors unchanged."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value
