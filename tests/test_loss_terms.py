"""Each term of the generator and assistant losses held to its formula, so that a broken variant
fails: the reward scale ignored, lambda(sigma) dropped from the assistant loss, guidance ``out``
also guiding the target, the ``dmd_normalised`` weight not stop-gradient, the CFG convention."""

from __future__ import annotations

import pytest
import torch
from closed_form import batch, draws, reference_mixture

from distar.config.tree import LossConfig
from distar.method.losses import GeneratorBatch as B
from distar.method.losses import Networks as N
from distar.method.losses import assistant_loss, generator_loss, per_sample_sum


def setup(n: int = 256, sigma: float = 0.8):
    ref = reference_mixture()
    z, eps = draws(n, seed=3)
    sig, cond, null = batch(sigma, n)
    x0 = (1.5 * z + 0.3).requires_grad_(True)

    def assistant(x, s, c):  # a denoiser that differs from the reference
        return 0.9 * ref.denoise(x, s, c) + 0.05 * x

    return ref, x0, sig, eps, cond, null, assistant


def loss_of(cfg: LossConfig, reward_fn=None):
    ref, x0, sig, eps, cond, null, assistant = setup()
    out = generator_loss(cfg, B(x0, sig, eps, cond, null), N(ref.denoise, assistant, reward_fn))
    return out, x0


def reward_fn(x0, cond):
    return torch.tanh(x0[:, 0]) + 0.1 * x0[:, 1] ** 2


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_reward_term_is_minus_scale_times_reward_in_value_and_gradient(scale):
    base, x0 = loss_of(LossConfig(reward_scale=0.0), reward_fn)
    (g_base,) = torch.autograd.grad(base.per_sample.sum(), x0)
    out, x0 = loss_of(LossConfig(reward_scale=scale), reward_fn)
    torch.testing.assert_close(out.terms["reward"], -scale * reward_fn(x0, None))
    (g,) = torch.autograd.grad(out.per_sample.sum(), x0)
    (g_reward,) = torch.autograd.grad(reward_fn(x0, None).sum(), x0)
    torch.testing.assert_close(g, g_base - scale * g_reward)


def test_assistant_loss_carries_lambda_sigma_per_sample():
    ref, x0, sig, eps, cond, _, assistant = setup(64)
    sigma = torch.linspace(0.1, 5.0, 64, dtype=x0.dtype)
    weight = (sigma**2 + 0.25) / (0.5 * sigma) ** 2  # EDM's lambda, far from constant
    loss = assistant_loss(assistant, x0, sigma, eps, cond, weight)
    x = x0.detach() + sigma[:, None] * eps
    want = weight * per_sample_sum((assistant(x, sigma, cond) - x0.detach()).square())
    torch.testing.assert_close(loss, want)
    assert not loss.requires_grad  # x0 is detached inside: it never reaches the generator


def test_guidance_out_leaves_the_divergence_target_unguided():
    """Guidance ``out`` adds the implicit CFG reward; the score divergence keeps the plain
    conditional reference as its target (guiding it too would count CFG twice)."""
    out, _ = loss_of(LossConfig(guidance="out", cfg_scale=2.0))
    plain, _ = loss_of(LossConfig(guidance="in", cfg_scale=0.0))
    guided_in, _ = loss_of(LossConfig(guidance="in", cfg_scale=2.0))
    torch.testing.assert_close(out.terms["divergence"], plain.terms["divergence"])
    assert (guided_in.terms["divergence"] - plain.terms["divergence"]).abs().max() > 1e-4
    assert "cfg" in out.terms and "cfg" not in guided_in.terms


@pytest.mark.parametrize("divergence", ["score", "kl"])
def test_dmd_normalised_weight_is_a_constant_in_the_gradient(divergence):
    """The per-sample weight 1 / mean|x0 - D~(x)| scales each sample's gradient and contributes
    none of its own (stop-gradient, as DMD2 / SiD)."""
    ref, x0, sig, eps, cond, null, assistant = setup()
    cfg = LossConfig(divergence=divergence, weighting="dmd_normalised", cfg_scale=1.0)
    out = generator_loss(cfg, B(x0, sig, eps, cond, null), N(ref.denoise, assistant))
    (g,) = torch.autograd.grad(out.per_sample.sum(), x0)
    uniform = generator_loss(
        LossConfig(divergence=divergence, weighting="uniform", cfg_scale=1.0),
        B(x0, sig, eps, cond, null),
        N(ref.denoise, assistant),
    )
    with torch.no_grad():
        x = x0 + sig[:, None] * eps
        guided = 2 * ref.denoise(x, sig, cond) - ref.denoise(x, sig, null)
        w = 1 / (x0 - guided).abs().mean(1)
    torch.testing.assert_close(out.per_sample, w * uniform.per_sample)
    (g_want,) = torch.autograd.grad((w * uniform.per_sample).sum(), x0)
    torch.testing.assert_close(g, g_want)


def test_diffusers_cfg_convention_is_guidance_one_plus_alpha():
    assert LossConfig(cfg_scale=7.5).cfg_scale_distar == 7.5
    assert LossConfig(cfg_scale=7.5, cfg_convention="diffusers").cfg_scale_distar == 6.5
    assert LossConfig(cfg_scale=0.0, cfg_convention="diffusers").cfg_scale_distar == 0.0
    ours, _ = loss_of(LossConfig(cfg_scale=1.5))
    theirs, _ = loss_of(LossConfig(cfg_scale=2.5, cfg_convention="diffusers"))
    torch.testing.assert_close(ours.per_sample, theirs.per_sample)
    with pytest.raises(ValueError, match="loss.cfg_scale"):
        LossConfig(cfg_scale=0.5, cfg_convention="diffusers")
