"""One small gradient step on each term moves the generator the way the theory says."""

from __future__ import annotations

import torch
from closed_form import (
    A0,
    B0,
    DTYPE,
    GaussianGenerator,
    batch,
    draws,
    gaussian_kl,
    gaussian_reference,
    reference_mixture,
)

from distar.config.tree import LossConfig
from distar.method.losses import DISTANCES, distance_scale, generator_loss
from distar.method.losses import GeneratorBatch as B
from distar.method.losses import Networks as N
from distar.worlds.gmm.rewards import directional_reward

STEP = 0.02


def step_on_term(
    gen: GaussianGenerator, cfg: LossConfig, term: str, ref, sigma: float, reward_fn=None
) -> GaussianGenerator:
    """A copy of ``gen`` moved by one gradient-descent step on ``out.terms[term]``."""
    z, eps = draws(50_000, seed=3)
    sig, cond, null = batch(sigma, len(z))
    out = generator_loss(
        cfg, B(gen.sample(z), sig, eps, cond, null), N(ref.denoise, gen.denoiser(sigma), reward_fn)
    )
    grads = torch.autograd.grad(out.terms[term].mean(), gen.params)
    moved = [
        (p - STEP * g / torch.cat([h.flatten() for h in grads]).norm()).detach()
        for p, g in zip(gen.params, grads, strict=True)
    ]
    return GaussianGenerator(*moved)


def score_divergence(gen: GaussianGenerator, ref, sigma: float) -> float:
    """``E_{x ~ p_theta,sigma} d(sigma^2 (s_theta - s_ref))``, pseudo-Huber, common randomness."""
    z, eps = draws(200_000, seed=5)
    sig, cond, _ = batch(sigma, len(z))
    x = gen.sample(z) + sigma * eps
    delta = sigma**2 * (gen.score(x, sigma) - ref.score(x, sig, cond))
    huber = DISTANCES.get("pseudo_huber")
    return huber.value(delta, torch.full_like(sig, 0.3)).mean().item()


def test_score_step_reduces_the_score_divergence():
    gen, ref, sigma = GaussianGenerator(A0, B0), reference_mixture(), 1.0
    cfg = LossConfig(divergence="score", huber_c=0.3)
    moved = step_on_term(gen, cfg, "divergence", ref, sigma)
    assert score_divergence(moved, ref, sigma) < score_divergence(gen, ref, sigma) - 1e-4


def test_kl_step_reduces_kl_and_moves_toward_the_reference():
    mean, std, sigma = torch.tensor([-1.0, 0.5], dtype=DTYPE), 0.8, 1.0
    gen, ref = GaussianGenerator(A0, B0), gaussian_reference(mean, std)
    moved = step_on_term(gen, LossConfig(divergence="kl"), "divergence", ref, sigma)

    def kl(g: GaussianGenerator) -> float:
        cov_ref = (std**2 + sigma**2) * torch.eye(2, dtype=DTYPE)
        return gaussian_kl(g.b.detach(), g.covariance(sigma, detach=True), mean, cov_ref).item()

    assert kl(moved) < kl(gen) - 1e-4
    assert (moved.b - mean).norm() < (gen.b - mean).norm()


def test_cfg_out_step_raises_conditional_over_unconditional_likelihood():
    gen, ref, sigma = GaussianGenerator(A0, B0), reference_mixture(), 0.5
    cfg = LossConfig(divergence="kl", guidance="out", cfg_scale=3.0)
    moved = step_on_term(gen, cfg, "cfg", ref, sigma)

    def log_ratio(g: GaussianGenerator) -> float:
        z, eps = draws(100_000, seed=7)
        sig, cond, null = batch(sigma, len(z))
        x = (g.sample(z) + sigma * eps).detach()
        return (ref.log_prob(x, sig, cond) - ref.log_prob(x, sig, null)).mean().item()

    assert log_ratio(moved) > log_ratio(gen) + 1e-4


def test_reward_step_raises_the_reward():
    gen, ref = GaussianGenerator(A0, B0), reference_mixture()
    reward = directional_reward(ref, 1.0)
    moved = step_on_term(
        gen, LossConfig(divergence="kl", reward_scale=10.0), "reward", ref, 1.0, reward
    )

    def mean_reward(g: GaussianGenerator) -> float:
        z, _ = draws(100_000, seed=9)
        return reward(g.sample(z).detach(), torch.zeros(len(z), dtype=torch.long)).mean().item()

    assert mean_reward(moved) > mean_reward(gen) + 1e-4


def test_distance_scale_is_one_or_sigma_squared():
    sigma = torch.tensor([0.5, 2.0])
    torch.testing.assert_close(distance_scale(sigma, "x0"), torch.ones(2))
    torch.testing.assert_close(distance_scale(sigma, "score"), sigma.square())
