"""Rectified flow seen as EDM (``distar.method.rectified_flow``), held to closed forms on the
embedded world's kind of reference: the mixture's and a Gaussian generator's exact velocities
are derived in flow coordinates (``tests/closed_form.py``), independently of the conversion
under test.

- The maps invert and match the forward process sample by sample.
- The mixture's exact velocity, turned into a denoiser, is the mixture's exact EDM denoiser.
- The DI* generator step computed from velocity networks equals the EDM-view step: losses and
  gradients, score and KL divergences, CFG in and out, with and without a time shift.
- Theorem 3.1 holds through the flow view (the Monte Carlo tolerance of tests/test_theorems.py).
- SD3's time shift is diffusers' and multiplies EDM's sigma by the shift; the sd35 / flux
  presets' lognormal sigma draws are the shifted logit-normal times, draw for draw.
- The ``velocity`` assistant weighting is velocity matching in flow coordinates.

Tolerances: everything is float64 and the two views differ only by rounding of a few dozen
operations on O(1..20) values, so 1e-9 relative (a sign, scale or time-map error is O(1) off).
``bash scripts/flow_mutations.sh`` breaks each map and shows a test failing."""

from __future__ import annotations

import math

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
    gaussian_velocity,
    mixture_velocity,
    reference_mixture,
    relative_error,
)
from test_theorems import MC_TOLERANCE, true_divergence_grad

from distar.config.tree import LossConfig
from distar.method.losses import (
    DISTANCES,
    GeneratorBatch,
    Networks,
    generator_loss,
    score_regulariser,
)
from distar.method.rectified_flow import (
    flow_denoiser,
    flow_input,
    shift_time,
    sigma_of_time,
    time_of_sigma,
    velocity_from_x0,
    x0_from_velocity,
)

EXACT = 1e-9
SIGMAS = [0.05, 0.3, 1.0, 3.0, 20.0]


def test_the_maps_invert_and_match_the_forward_process():
    g = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(500, 2, generator=g, dtype=DTYPE),
        torch.randn(500, 2, generator=g, dtype=DTYPE),
    )
    t = torch.rand(500, generator=g, dtype=DTYPE) * 0.98 + 0.01
    sigma = sigma_of_time(t)
    x_t, t_back = flow_input(x0 + sigma[:, None] * eps, sigma)
    torch.testing.assert_close(
        x_t, (1 - t)[:, None] * x0 + t[:, None] * eps, rtol=EXACT, atol=EXACT
    )
    torch.testing.assert_close(t_back, t, rtol=EXACT, atol=EXACT)
    torch.testing.assert_close(time_of_sigma(sigma), t, rtol=EXACT, atol=EXACT)
    torch.testing.assert_close(x0_from_velocity(x_t, t, eps - x0), x0, rtol=EXACT, atol=EXACT)
    torch.testing.assert_close(velocity_from_x0(x_t, t, x0), eps - x0, rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_mixtures_exact_velocity_is_its_exact_denoiser(sigma):
    mix = reference_mixture()
    denoise = flow_denoiser(mixture_velocity(mix))
    z, eps = draws(3000)
    x = 2.0 * z + sigma * eps
    for prompt in (0, 1, 2):  # 2: the null prompt
        sig, cond, _ = batch(sigma, 3000, prompt)
        got, want = denoise(x, sig, cond), mix.denoise(x, sig, cond)
        torch.testing.assert_close(got, want, rtol=EXACT, atol=EXACT)


def views(gen: GaussianGenerator, sigma: float):
    mix = reference_mixture()
    edm = Networks(mix.denoise, gen.denoiser(sigma))
    flow = Networks(flow_denoiser(mixture_velocity(mix)), flow_denoiser(gaussian_velocity(gen)))
    return edm, flow


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("t", [0.2, 0.5, 0.9])
@pytest.mark.parametrize(
    "divergence,guidance", [("score", "in"), ("score", "out"), ("kl", "in"), ("kl", "out")]
)
def test_the_di_star_step_is_the_same_in_both_views(divergence, guidance, t, shift):
    """The generator loss and its gradient, the sigma drawn as a flow teacher draws its time
    (``t``, shifted): identical from EDM denoisers and from velocity networks."""
    sigma = sigma_of_time(shift_time(torch.tensor(t, dtype=DTYPE), shift)).item()
    gen = GaussianGenerator(A0, B0)
    cfg = LossConfig(divergence=divergence, guidance=guidance, cfg_scale=2.0, huber_c=0.3)
    z, eps = draws(4000)
    sig, cond, null = batch(sigma, 4000)
    results = []
    for nets in views(gen, sigma):
        out = generator_loss(cfg, GeneratorBatch(gen.sample(z), sig, eps, cond, null), nets)
        results.append((out.per_sample.mean(), flat_grad(out.per_sample.mean(), gen.params)))
    (loss_edm, grad_edm), (loss_flow, grad_flow) = results
    assert grad_edm.norm() > 1e-3  # a step that moves the generator
    torch.testing.assert_close(loss_flow, loss_edm, rtol=EXACT, atol=EXACT)
    torch.testing.assert_close(grad_flow, grad_edm, rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("t", [0.3, 0.5, 0.75])
def test_theorem_3_1_holds_through_the_flow_view(t):
    """The exact-path score loss built from velocity networks has the divergence's gradient."""
    sigma = sigma_of_time(torch.tensor(t, dtype=DTYPE)).item()
    gen = GaussianGenerator(A0, B0)
    edm, flow = views(gen, sigma)
    distance = DISTANCES.get("pseudo_huber")
    want = true_divergence_grad(gen, reference_mixture(), distance, "x0", sigma, 0.3)
    z, eps = draws()
    sig, cond, _ = batch(sigma)
    x0 = gen.sample(z)
    loss, _ = score_regulariser(
        x0,
        x0 + sigma * eps,
        sig,
        lambda x: flow.assistant(x, sig, cond),
        lambda x: flow.reference(x, sig, cond),
        distance,
        torch.full_like(sig, 0.3),
        torch.ones_like(sig),
        torch.ones_like(sig),
        exact=True,
    )
    assert relative_error(flat_grad(loss.mean(), gen.params), want) < MC_TOLERANCE


def test_a_time_shift_is_diffusers_and_multiplies_sigma():
    """diffusers' ``FlowMatchEulerDiscreteScheduler(shift=3)`` trains on the shifted times of
    the unshifted scheduler's (SD3's 1000-step table)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    shift = 3.0
    t = FlowMatchEulerDiscreteScheduler(shift=1.0).sigmas.to(DTYPE)  # 1 .. 1/1000
    want = FlowMatchEulerDiscreteScheduler(shift=shift).sigmas.to(DTYPE)
    torch.testing.assert_close(shift_time(t, shift), want, rtol=1e-6, atol=1e-6)
    inner = t[1:]  # t = 1 is sigma = inf
    got = sigma_of_time(shift_time(inner, shift))
    torch.testing.assert_close(got, shift * sigma_of_time(inner), rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("preset, shift", [("sd35", 3.0), ("flux", math.exp(1.15))])
def test_a_shifted_logit_normal_time_is_the_presets_lognormal_sigma(preset, shift):
    """SD3's logit-normal time draw, shifted by the sampler's shift (SD3: 3; FLUX at 1024 px:
    e^1.15), is exactly the preset's ``lognormal`` sigma draw: ``log sigma = logit t``, and the
    shift adds ``log S``. Draw for draw from one normal sample, so a wrong ``p_mean`` (or a
    wrong identity) is off by O(1), not by noise."""
    from distar.config.tree import Config
    from distar.method.sigmas import sample_sigma

    noise = Config.for_world(preset).noise
    for sigma_cfg in (noise.generator, noise.assistant):
        n = 10_000
        got = sample_sigma(sigma_cfg, n, torch.Generator().manual_seed(0)).to(DTYPE)
        z = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(DTYPE)
        t = torch.sigmoid(sigma_cfg.p_std * z)  # SD3's logit-normal(0, s) time ...
        want = sigma_of_time(shift_time(t, shift))  # ... shifted by the sampler's shift
        want = want.clamp(sigma_cfg.sigma_min, sigma_cfg.sigma_max)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_the_velocity_weighting_is_velocity_matching():
    """The ``velocity`` assistant weighting times EDM's denoising error is the flow teachers'
    loss ``||v_hat - v||^2`` computed in flow coordinates, with ``v = eps - x0`` and
    ``v_hat`` the network's velocity (here the Gaussian generator's exact one, at any time)."""
    from distar.method.losses import assistant_loss
    from distar.method.sigmas import ASSISTANT_WEIGHTINGS

    gen = GaussianGenerator(A0 * 0.7, B0 + 0.3)
    velocity = gaussian_velocity(gen)
    x0 = gen.sample(draws(64)[0]).detach()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    for s in SIGMAS:
        sigma = torch.full((len(x0),), s, dtype=DTYPE)
        weight = ASSISTANT_WEIGHTINGS.get("velocity")(sigma, 1.0)
        got = assistant_loss(flow_denoiser(velocity), x0, sigma, noise, None, weight)
        t = time_of_sigma(sigma)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * noise
        want = (velocity(x_t, t, None) - (noise - x0)).square().sum(-1)
        assert relative_error(got, want) < EXACT
