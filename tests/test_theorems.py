"""The losses held to the paper's theorems in closed form (Gaussian generator x0 = A z + b,
Gaussian-mixture or Gaussian reference: every score is exact)."""

from __future__ import annotations

import pytest
import torch
from closed_form import (
    A0,
    B0,
    DTYPE,
    GaussianGenerator,
    batch,
    draws,
    flat_grad,
    gaussian_kl,
    gaussian_reference,
    reference_mixture,
    relative_error,
)

from distar.config.tree import LossConfig
from distar.method.losses import (
    DISTANCES,
    cfg_reward_loss,
    distance_scale,
    generator_loss,
    guided_denoiser,
    kl_regulariser,
    score_regulariser,
    two_calls,
)
from distar.method.losses import GeneratorBatch as B
from distar.method.losses import Networks as N

MC_TOLERANCE = 0.03


def true_divergence_grad(gen, ref, distance, distance_on, sigma, c, cfg_scale=0.0, seed=0):
    """Autograd gradient of ``E_{x ~ sg[p_theta]} d(sigma^2 (s_theta - s~_ref)(x) / scale)``."""
    z, eps = draws(seed=seed)
    sig, cond, null = batch(sigma)
    x = (gen.sample(z) + sigma * eps).detach()
    s_ref = ref.score(x, sig, cond)
    s_ref = s_ref + cfg_scale * (s_ref - ref.score(x, sig, null))
    delta = sigma**2 * (gen.score(x, sigma) - s_ref)
    scaled = delta / distance_scale(sig, distance_on)[:, None]
    value = distance.value(scaled, torch.full_like(sig, c))
    return flat_grad(value.mean(), gen.params)


def score_loss_grad(gen, ref, distance, distance_on, sigma, c, exact=True):
    z, eps = draws()
    sig, cond, _ = batch(sigma)
    x0 = gen.sample(z)
    loss, _ = score_regulariser(
        x0,
        x0 + sigma * eps,
        sig,
        lambda x: gen.denoiser(sigma)(x, sig, cond),
        lambda x: ref.denoise(x, sig, cond),
        DISTANCES.get(distance),
        torch.full_like(sig, c),
        distance_scale(sig, distance_on),
        torch.ones_like(sig),
        exact=exact,
    )
    return flat_grad(loss.mean(), gen.params)


CASES = [("pseudo_huber", "x0", 0.3), ("l2", "x0", 0.3), ("pseudo_huber", "score", 0.3)]


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("distance,distance_on,c", CASES)
def test_theorem_3_1_exact_path_matches_divergence_gradient(distance, distance_on, c, sigma):
    gen, ref = GaussianGenerator(A0, B0), reference_mixture()
    want = true_divergence_grad(gen, ref, DISTANCES.get(distance), distance_on, sigma, c)
    got = score_loss_grad(gen, ref, distance, distance_on, sigma, c, exact=True)
    assert relative_error(got, want) < MC_TOLERANCE


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("distance,distance_on,c", CASES[:2])
def test_theorem_3_1_detached_path_is_a_different_estimator(distance, distance_on, c, sigma):
    gen, ref = GaussianGenerator(A0, B0), reference_mixture()
    want = true_divergence_grad(gen, ref, DISTANCES.get(distance), distance_on, sigma, c)
    got = score_loss_grad(gen, ref, distance, distance_on, sigma, c, exact=False)
    assert relative_error(got, want) > 5 * MC_TOLERANCE


@pytest.mark.parametrize("weighting", ["uniform"])
def test_generator_loss_with_cfg_in_matches_guided_divergence(weighting):
    """The composed loss (guidance ``in``) descends the divergence to the CFG-guided score."""
    gen, ref, sigma, alpha = GaussianGenerator(A0, B0), reference_mixture(), 0.8, 2.0
    cfg = LossConfig(
        divergence="score",
        distance="pseudo_huber",
        huber_c=0.3,
        guidance="in",
        cfg_scale=alpha,
        weighting=weighting,
    )
    want = true_divergence_grad(gen, ref, DISTANCES.get("pseudo_huber"), "x0", sigma, 0.3, alpha)
    z, eps = draws()
    sig, cond, null = batch(sigma)
    draw = B(gen.sample(z), sig, eps, cond, null)
    out = generator_loss(cfg, draw, N(ref.denoise, gen.denoiser(sigma)))
    assert relative_error(flat_grad(out.per_sample.mean(), gen.params), want) < MC_TOLERANCE


@pytest.mark.parametrize("sigma", [0.5, 2.0])
@pytest.mark.parametrize("distance_on", ["x0", "score"])
def test_kl_loss_gradient_is_the_integral_kl_gradient(sigma, distance_on):
    """Diff-Instruct: grad L_KL = sigma^2 / scale * grad KL(p_theta,sigma || p_ref,sigma)."""
    gen, mean, std = GaussianGenerator(A0, B0), torch.tensor([-1.0, 0.5], dtype=DTYPE), 0.8
    ref = gaussian_reference(mean, std)
    kl = gaussian_kl(
        gen.b, gen.covariance(sigma), mean, (std**2 + sigma**2) * torch.eye(2, dtype=DTYPE)
    )
    scale = 1.0 if distance_on == "x0" else sigma**2
    want = flat_grad(kl, gen.params) * sigma**2 / scale
    z, eps = draws()
    sig, cond, _ = batch(sigma)
    x0 = gen.sample(z)
    loss, _ = kl_regulariser(
        x0 + sigma * eps,
        sig,
        lambda x: gen.denoiser(sigma)(x, sig, cond),
        lambda x: ref.denoise(x, sig, cond),
        distance_scale(sig, distance_on),
        torch.ones_like(sig),
    )
    assert relative_error(flat_grad(loss.mean(), gen.params), want) < MC_TOLERANCE


def implicit_cfg_reward(gen, ref, sigma, distance_on, z, eps):
    """Eq. 3.6 at one sigma: ``r = E w sigma^2 / scale (log p(x|c) - log p(x|null))``, w = 1."""
    sig, cond, null = batch(sigma, len(z))
    x = gen.sample(z) + sigma * eps
    ratio = ref.log_prob(x, sig, cond) - ref.log_prob(x, sig, null)
    return (sigma**2 / distance_scale(sig, distance_on) * ratio).mean()


@pytest.mark.parametrize("distance_on", ["x0", "score"])
@pytest.mark.parametrize("sigma", [0.3, 1.5])
def test_theorem_3_2_cfg_out_gradient_is_minus_implicit_reward_gradient(sigma, distance_on):
    gen, ref, alpha = GaussianGenerator(A0, B0), reference_mixture(), 4.5
    z, eps = draws(4096)
    sig, cond, null = batch(sigma, len(z))
    loss = cfg_reward_loss(
        gen.sample(z) + sigma * eps,
        sig,
        two_calls(ref.denoise),
        cond,
        null,
        alpha,
        distance_scale(sig, distance_on),
        torch.ones_like(sig),
    )
    reward = implicit_cfg_reward(gen, ref, sigma, distance_on, z, eps)
    want = -alpha * flat_grad(reward, gen.params)
    assert relative_error(flat_grad(loss.mean(), gen.params), want) < 1e-9


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0, 7.5])
def test_cfg_in_on_denoisers_equals_cfg_on_scores(alpha):
    ref, sigma = reference_mixture(), 0.7
    z, _ = draws(512)
    sig, cond, null = batch(sigma, 512)
    x = (2 * z).requires_grad_(True)
    s_c = torch.autograd.grad(ref.log_prob(x, sig, cond).sum(), x)[0]
    s_null = torch.autograd.grad(ref.log_prob(x, sig, null).sum(), x)[0]
    guided = guided_denoiser(ref.denoise, x.detach(), sig, cond, null, alpha)
    torch.testing.assert_close((guided - x.detach()) / sigma**2, s_c + alpha * (s_c - s_null))


def test_cfg_in_tells_the_scales_apart_and_batched_pair_equals_two_calls():
    """alpha = 0, 1 and 2 give three different targets (a scale ignored or clamped fails), each
    exactly D_c + alpha (D_c - D_null); a batched pair gives the same as two calls."""
    ref, sigma = reference_mixture(), 0.7
    z, _ = draws(256)
    sig, cond, null = batch(sigma, 256)
    x = 2 * z
    d_c, d_null = ref.denoise(x, sig, cond), ref.denoise(x, sig, null)
    assert (d_c - d_null).abs().max() > 1e-3

    def batched(xx, ss, c, n):
        both = ref.denoise(torch.cat([xx, xx]), torch.cat([ss, ss]), torch.cat([c, n]))
        return both[: len(xx)], both[len(xx) :]

    outs = {}
    for alpha in (0.0, 1.0, 2.0):
        outs[alpha] = guided_denoiser(ref.denoise, x, sig, cond, null, alpha, batched)
        torch.testing.assert_close(outs[alpha], d_c + alpha * (d_c - d_null))
        torch.testing.assert_close(
            outs[alpha], guided_denoiser(ref.denoise, x, sig, cond, null, alpha)
        )
    for a, b in ((0.0, 1.0), (1.0, 2.0), (0.0, 2.0)):
        assert (outs[a] - outs[b]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["pseudo_huber", "l2"])
def test_distance_derivative_is_the_gradient_of_the_distance(name):
    y = torch.randn(64, 3, 4, dtype=DTYPE, requires_grad=True)
    c = torch.full((64,), 0.5, dtype=DTYPE)
    d = DISTANCES.get(name)
    auto = torch.autograd.grad(d.value(y, c).sum(), y)[0]
    torch.testing.assert_close(d.grad(y.detach(), c), auto)
