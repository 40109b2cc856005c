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

from distar.config.sections import ConfigError
from distar.runtime.distributed import backend, broadcast_tensors, has_cpu_backend

# reshard_after_forward per network, remembered for gathered() to restore
_RESHARD: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def ensure_process_group(device: torch.device, offload: bool = False) -> None:
    """FSDP2 needs a process group even on one rank (``--fsdp`` benchmarks at world size 1):
    start a single-rank one in memory when none is running. With ``offload`` the group must
    reach host tensors: refuse one that cannot, in one line, before the first clip fails."""
    if not dist.is_initialized():
        dist.init_process_group(
            backend(device.type == "cuda", offload),
            store=dist.HashStore(),
            rank=0,
            world_size=1,
            timeout=timedelta(minutes=30),
        )
    if offload and not has_cpu_backend():
        raise ConfigError(
            f"resources.cpu_offload: got true in a process group of {dist.get_backend_config()}"
            "; allowed: true only in a group with a CPU backend (start it with backend "
            f"{backend(True, True)!r}: distar.runtime.distributed.backend)"
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
    loss lies between). A frozen network is not resharded after its forward: the backward
    through its *input* that the generator loss needs follows, and a chunked generator step
    holds it gathered for all its chunks (:func:`gathered`: one all-gather per step whatever
    the chunking; the unsharded bf16 copy, 5.1 GB on SDXL, is held from a forward to its
    backward anyway, and let go before the generator's backward). ``offload``: trained
    shards, their gradients and Adam states live on the host and the optimizer steps there
    (CPUOffloadPolicy; on a CPU run the same code path with nothing to save)."""
    _fully_shard(network, blocks, device, compute_dtype, trained, offload)
    initialise_now(network)


def shard_from_rank0(
    network: nn.Module,
    blocks: list[nn.Module],
    device: torch.device,
    compute_dtype: torch.dtype,
    trained: bool,
    offload: bool = False,
) -> None:
    """:func:`shard_network` for a network that is not on the device yet: rank 0 holds its
    weights on the host, the other ranks built it on the meta device. Sharding moves one unit at
    a time to the device (``fully_shard`` does), the other ranks allocate their shards, and rank
    0's weights reach every rank's shards tensor by tensor (``set_model_state_dict`` with
    ``broadcast_from_rank0``, torchtitan's recipe); buffers, which FSDP replicates, are
    broadcast whole. While it starts, a GPU holds no more than one unit unsharded: what lets a
    12 B transformer start on 80 GB cards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = network.state_dict() if dist.get_rank() == 0 else {}  # rank 0's host tensors
    _fully_shard(network, blocks, device, compute_dtype, trained, offload)
    if any(t.is_meta for t in [*network.parameters(), *network.buffers()]):
        host_shards = offload and trained  # CPUOffloadPolicy keeps the shards on the host
        network.to_empty(device="cpu" if host_shards else device)
        for module in network.modules():  # buffers live on the device either way
            for name, buffer in module.named_buffers(recurse=False):
                module._buffers[name] = buffer.to(device)  # noqa: SLF001
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(network, state, options=options)
    del state
    broadcast_tensors(list(network.buffers()))
    initialise_now(network)


def _fully_shard(
    network: nn.Module,
    blocks: list[nn.Module],
    device: torch.device,
    compute_dtype: torch.dtype,
    trained: bool,
    offload: bool,
) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # cast_forward_inputs=False: FSDP would cast every float input to bf16, the UNet's
    # timestep too (399 -> 400, 999 -> 1000, multiples of 4 above 512); autocast already
    # governs compute, as in NVlabs/FastGen ("so we can control t precision")
    policy = MixedPrecisionPolicy(
        param_dtype=compute_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False
    )
    kwargs = {"mesh": mesh, "mp_policy": policy, "reshard_after_forward": trained}
    if offload and trained:  # pinned host memory exists only beside a GPU
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(network, **kwargs)
    _RESHARD[network] = trained
    for block in blocks:
        _RESHARD[block] = trained


def initialise_now(network: nn.Module) -> None:
    """FSDP2's lazy initialisation, run now while every parameter has the ``requires_grad`` it
    trains with. Left to the first forward, it would fix each unit's reduce dtype from the flags
    of that moment: a LoRA UNet first run as the reference (adapters off, so no trainable
    parameter) in a unit mixing bf16 base and fp32 adapters gets no fp32 reduce dtype, and its
    first backward fails assigning bf16 gradients to fp32 shards. torch has no public call for
    it (``FSDPModule.unshard`` initialises the module's own groups, not the root's dtypes)."""
    state = network._get_fsdp_state()  # noqa: SLF001
    state._lazy_init()  # noqa: SLF001


def fsdp_modules(module: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(*modules: nn.Module):
    """Every sharded part of ``modules`` gathered for the block (collective on entry and exit,
    every rank must enter) and kept so through forwards *and backwards*: forwards inside need
    no collective, so ranks may run different numbers of them -- uneven evaluation shards, a
    plot on rank 0 alone -- and a frozen network used by several chunks of one step is gathered
    once. Costs one unsharded copy in the compute dtype. A no-op on unsharded modules. Enter it
    with the ``requires_grad`` flags the modules train with (or frozen for good): ``unshard``
    re-derives each unit's dtypes from the flags of that moment."""
    parts = [part for module in modules for part in fsdp_modules(module)]
    for part in parts:
        part.set_reshard_after_forward(False, recurse=False)
        part.set_reshard_after_backward(False, recurse=False)
        part.unshard()
    try:
        yield
    finally:
        for part in parts:
            part.reshard()
            part.set_reshard_after_forward(_RESHARD.get(part, True), recurse=False)
            part.set_reshard_after_backward(True, recurse=False)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (a sharded gradient norm); other tensors unchanged."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value
