"""LoRA assistants that share their network (a UNet or a flow transformer) with the frozen
reference (peft adapters): adapters off *is* the reference, so one set of frozen weights serves
both networks."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

LORA_TARGETS = {
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
    # both streams of an MM-DiT's joint attention (diffusers' SD3 / FLUX LoRA training scripts)
    "joint_attention": [
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_add_out",
    ],
    # DMD2's list (sd-worlds.md §1.1)
    "dmd2": [
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "proj_in",
        "proj_out",
        "ff.net.0.proj",
        "ff.net.2",
        "conv1",
        "conv2",
        "conv_shortcut",
        "downsamplers.0.conv",
        "upsamplers.0.conv",
        "time_emb_proj",
    ],
}


def add_lora(network: nn.Module, rank: int, alpha: float, targets: str) -> None:
    """peft LoRA adapters on a frozen UNet or transformer (B = 0 at start: adapters on = the
    base exactly), trained in fp32 whatever the base's dtype."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    network.requires_grad_(False)
    network.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS[targets], init_lora_weights=True
        )
    )
    cast_training_params(network, dtype=torch.float32)


@contextmanager
def adapters_off(network: nn.Module):
    """The network without its adapters. peft's ``enable_adapters`` also sets ``requires_grad`` on
    the adapters; every flag is put back as it was, since a flag that changes between a forward
    and its backward breaks the recomputation of gradient checkpointing."""
    flags = [(p, p.requires_grad) for p in network.parameters()]
    network.disable_adapters()
    try:
        yield
    finally:
        network.enable_adapters()
        for p, flag in flags:
            p.requires_grad_(flag)


class _InScope(torch.autograd.Function):
    """``y = fn(x)`` run *and differentiated* inside ``scope``. Gradient checkpointing recomputes
    blocks during backward; when the reference (adapters off) and the LoRA assistant (adapters
    on) share one UNet in one graph, the recomputation must see the forward's adapter state."""

    @staticmethod
    def forward(ctx, x, fn, scope):
        with torch.enable_grad(), scope():
            inner = x.detach().requires_grad_(True)
            y = fn(inner)
        ctx.inner, ctx.y, ctx.scope = inner, y, scope
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        with ctx.scope():
            (gx,) = torch.autograd.grad(ctx.y, ctx.inner, grad, retain_graph=True)
        return gx, None, None


class SharedReference(nn.Module):
    """The reference as the LoRA assistant's denoiser with the adapters of its ``network`` (a
    UNet or a transformer) off; keyword arguments pass through to the denoiser."""

    def __init__(self, denoiser: nn.Module, network: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser
        self._network = [network]  # not a submodule: the denoiser holds it

    def forward(self, x: Tensor, sigma: Tensor, cond, **kwargs) -> Tensor:
        def fn(xx: Tensor) -> Tensor:
            return self.denoiser(xx, sigma, cond, **kwargs)

        def scope():
            return adapters_off(self._network[0])

        if torch.is_grad_enabled() and x.requires_grad:
            return _InScope.apply(x, fn, scope)
        with scope():
            return fn(x)
