"""What a sharded text-to-image run does, observed from inside one rank
(``tests/test_fsdp.py``): the timestep every UNet or flow transformer forward receives, the
reduce dtype of every trained FSDP unit, and how many all-gathers and reduce-scatters one
training step issues per network."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch import nn


def network(denoiser) -> nn.Module:
    """The UNet or flow transformer inside a denoiser."""
    return getattr(denoiser, "unet", None) or denoiser.transformer


def unets(world) -> dict[str, nn.Module]:
    """Each sharded network (UNet or transformer) of a world by the name the planner gives it
    (a LoRA assistant's is the reference's too: it is "assistant")."""
    nets = {"generator": network(world.generator.denoiser), "assistant": network(world.assistant)}
    if world.config.assistant != "lora":
        nets["reference"] = network(world._reference)
    return nets


@contextmanager
def recorded_timesteps(world, into: list[tuple[str, str, list[float]]]):
    """(network, dtype, values) of the timestep of every UNet forward inside the block, as the
    UNet receives it: after FSDP's own pre-forward hook, which is registered first."""

    def hook(name):
        def record(module, args, kwargs):
            t = args[1] if len(args) > 1 else kwargs["timestep"]
            t = torch.as_tensor(t)
            into.append((name, str(t.dtype), t.detach().double().flatten().tolist()))

        return record

    handles = [
        unet.register_forward_pre_hook(hook(name), with_kwargs=True)
        for name, unet in unets(world).items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def groups(unet: nn.Module) -> list:
    """The FSDP parameter groups of a sharded UNet (one per unit that holds parameters)."""
    from distar.runtime.sharding import fsdp_modules

    found = [m._get_fsdp_state()._fsdp_param_group for m in fsdp_modules(unet)]
    return [g for g in found if g is not None]


def reduce_dtypes(world) -> set[str]:
    """The dtype every FSDP unit that holds a trained parameter reduces its gradients in (FSDP
    stores None where that is the parameters' own: fp32 compute over fp32 masters)."""
    return {
        str(g._reduce_dtype or g._orig_dtype)
        for unet in unets(world).values()
        for g in groups(unet)
        if any(p.sharded_param.requires_grad for p in g.fsdp_params)
    }


@contextmanager
def counted_collectives(world, into: dict[str, tuple[float, float]]):
    """All-gathers and reduce-scatters issued inside the block per network, in whole-network
    equivalents: calls / the network's units that take part (all of them for a gather, those
    holding trained parameters for a reduce-scatter), the planner's unit."""
    import torch.distributed.fsdp._fully_shard._fsdp_param_group as fsdp_group

    owner = {id(p): name for name, unet in unets(world).items() for p in unet.parameters()}
    calls: dict[str, Counter] = {"gather": Counter(), "reduce": Counter()}
    originals = {"gather": fsdp_group.foreach_all_gather, "reduce": fsdp_group.foreach_reduce}

    def counting(kind):
        def call(fsdp_params, *args, **kwargs):
            calls[kind][owner[id(fsdp_params[0].sharded_param)]] += 1
            return originals[kind](fsdp_params, *args, **kwargs)

        return call

    fsdp_group.foreach_all_gather = counting("gather")
    fsdp_group.foreach_reduce = counting("reduce")
    try:
        yield
    finally:
        fsdp_group.foreach_all_gather = originals["gather"]
        fsdp_group.foreach_reduce = originals["reduce"]
    for name, unet in unets(world).items():
        units = groups(unet)
        trained = [g for g in units if any(p.sharded_param.requires_grad for p in g.fsdp_params)]
        reduces = calls["reduce"][name] / len(trained) if trained else 0.0
        into[name] = (calls["gather"][name] / len(units), reduces)


def bf16_exact(value: float) -> bool:
    """Whether ``value`` survives a round trip through bf16 (every value a bf16 cast made)."""
    return float(torch.tensor(value).bfloat16().double()) == value
