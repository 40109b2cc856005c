"""The DI* losses as pure functions (Luo et al., "Diff-Instruct*"; see shared/ALGORITHM.md).

Conventions (EDM / VE form): ``x = x0 + sigma * eps``; a denoiser ``D(x, sigma, cond)``
approximates ``E[x0 | x]`` and its score is ``s = (D - x) / sigma**2``. Batched tensors carry the
sample on dim 0, ``sigma`` and ``cond`` are ``[B]``; every loss returns one value per sample.

What the distance acts on: ``Delta = D_psi - D_ref = sigma**2 (s_psi - s_ref)``. With
``distance_on="x0"`` it acts on ``Delta`` (the paper's pseudo-code); with ``"score"`` it
acts on the score difference ``y = Delta / sigma**2`` (the paper's equations), which makes a fixed
``c`` effectively sigma-dependent. Either way the generator loss below is, in gradient, the
divergence ``E_sigma w(sigma) E_{x ~ p_theta,sigma} d(Delta / scale)`` with
``scale = 1`` or ``sigma**2`` (Theorem 3.1), when ``D_psi`` is the generator's exact denoiser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from distar.config import choices
from distar.config.keys import K
from distar.config.tree import LossConfig
from distar.util.registry import Registry

Denoiser = Callable[[Tensor, Tensor, Any], Tensor]  # D(x, sigma, cond) -> x0 estimate
# (D(x; c), D(x; null)) in one call: worlds batch both branches through one network forward
PairDenoiser = Callable[[Tensor, Tensor, Any, Any], tuple[Tensor, Tensor]]


def two_calls(reference: Denoiser) -> PairDenoiser:
    """The unbatched pair: ``D(x; c)`` and ``D(x; null)`` as two calls of ``reference``."""

    def pair(x: Tensor, sigma: Tensor, cond: Any, null: Any) -> tuple[Tensor, Tensor]:
        return reference(x, sigma, cond), reference(x, sigma, null)

    return pair


def per_sample_sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


def per_sample_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def expand_like(v: Tensor, like: Tensor) -> Tensor:
    """A ``[B]`` tensor viewed as ``[B, 1, ..., 1]`` so it broadcasts against ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


# ---- distances d(y; c) and their derivatives d'(y; c) -------------------------------------------
@dataclass(frozen=True)
class Distance:
    value: Callable[[Tensor, Tensor], Tensor]  # d(y; c), per sample
    grad: Callable[[Tensor, Tensor], Tensor]  # d'(y; c), shaped like y


def pseudo_huber(y: Tensor, c: Tensor) -> Tensor:
    """Pseudo-Huber distance ``d(y) = sqrt(||y||^2 + c^2) - c`` (paper §3.4, eq. B.1)."""
    return torch.sqrt(per_sample_sum(y.square()) + c.square()) - c


def pseudo_huber_grad(y: Tensor, c: Tensor) -> Tensor:
    """``d'(y) = y / sqrt(||y||^2 + c^2)``, the norm taken per sample over all dimensions."""
    return y / expand_like(torch.sqrt(per_sample_sum(y.square()) + c.square()), y)


def squared_l2(y: Tensor, c: Tensor) -> Tensor:
    """Squared distance ``d(y) = ||y||^2`` (SiD / SIM-L2, paper §B.2); ``c`` is unused."""
    return per_sample_sum(y.square())


def squared_l2_grad(y: Tensor, c: Tensor) -> Tensor:
    """``d'(y) = 2 y``."""
    return 2.0 * y


DISTANCES: Registry[Distance] = Registry(K.loss.distance, choices.DISTANCES)
DISTANCES.add("pseudo_huber", Distance(pseudo_huber, pseudo_huber_grad))
DISTANCES.add("l2", Distance(squared_l2, squared_l2_grad))
DISTANCES.complete()


def distance_scale(sigma: Tensor, distance_on: str) -> Tensor:
    """``Delta / distance_scale`` is the argument of ``d``: 1 on x0, sigma^2 on the score."""
    return torch.ones_like(sigma) if distance_on == "x0" else sigma.square()


# ---- generator weightings w(sigma) --------------------------------------------------------------
def uniform_weight(sigma: Tensor, x0: Tensor, target: Callable[[], Tensor]) -> Tensor:
    """``w(sigma) = 1``, the paper's practical choice (§B.1)."""
    return torch.ones_like(sigma)


def dmd_normalised_weight(sigma: Tensor, x0: Tensor, target: Callable[[], Tensor]) -> Tensor:
    """DMD2 / SiD normalisation ``w = 1 / mean|x0 - D~(x)|`` per sample (stop-gradient).
    ``target`` computes ``D~(x)`` on demand, so weightings that do not need it cost nothing."""
    with torch.no_grad():
        return 1.0 / (x0.detach() - target()).abs().flatten(1).mean(1).clamp_min(1e-8)


GeneratorWeighting = Callable[[Tensor, Tensor, Callable[[], Tensor]], Tensor]
GENERATOR_WEIGHTINGS: Registry[GeneratorWeighting] = Registry(
    K.loss.weighting, choices.GENERATOR_WEIGHTINGS
)
GENERATOR_WEIGHTINGS.add("uniform", uniform_weight)
GENERATOR_WEIGHTINGS.add("dmd_normalised", dmd_normalised_weight)
GENERATOR_WEIGHTINGS.complete()


# ---- the terms ----------------------------------------------------------------------------------
def guided_denoiser(
    reference: Denoiser,
    x: Tensor,
    sigma: Tensor,
    cond: Any,
    null: Any,
    cfg_scale: float,
    pair: PairDenoiser | None = None,
) -> Tensor:
    """CFG-enhanced reference, guidance ``in`` (§3.3, Choice 2):
    ``D~ = D(x; c) + a_cfg (D(x; c) - D(x; null))``. On denoisers this equals CFG on scores,
    because the ``-x / sigma^2`` parts cancel. ``a_cfg`` is distar's convention: diffusers'
    ``guidance_scale`` w is ``1 + a_cfg``. ``cfg_scale = 0`` is the plain conditional (one
    call); otherwise both branches come from ``pair`` (one batched forward where the world
    provides it)."""
    if cfg_scale == 0.0:
        return reference(x, sigma, cond)
    d_cond, d_null = (pair or two_calls(reference))(x, sigma, cond, null)
    return d_cond + cfg_scale * (d_cond - d_null)


def assistant_loss(
    assistant: Denoiser, x0: Tensor, sigma: Tensor, noise: Tensor, cond: Tensor, weight: Tensor
) -> Tensor:
    """Assistant denoising loss (Alg. 1, step 1): ``lambda(sigma) ||D_psi(x0 + sigma eps) - x0||^2``
    on stop-gradient generator samples ``x0``."""
    x0 = x0.detach()
    x = x0 + expand_like(sigma, x0) * noise
    return weight * per_sample_sum((assistant(x, sigma, cond) - x0).square())


def score_regulariser(
    x0: Tensor,
    x: Tensor,
    sigma: Tensor,
    assistant_x: Callable[[Tensor], Tensor],
    target_x: Callable[[Tensor], Tensor],
    distance: Distance,
    c: Tensor,
    scale: Tensor,
    weight: Tensor,
    exact: bool = True,
) -> tuple[Tensor, Tensor]:
    """Score-divergence regulariser, eq. 3.4 / A.10 (Theorem 3.1):
    ``L_reg = w / scale * d'(Delta(x) / scale) . (x0 - D_psi(x))`` with ``Delta = D_psi - D~``.

    ``exact=True``: gradients flow from ``x`` (hence ``x0``, hence theta) through ``d'`` and
    ``D_psi`` -- the path Theorem 3.1 needs. ``exact=False`` evaluates the networks under no_grad,
    as the paper's printed pseudo-code does; kept only to show that it is a different estimator.
    Returns the per-sample loss and ``Delta``."""
    with torch.set_grad_enabled(exact and torch.is_grad_enabled()):
        d_psi = assistant_x(x)
        delta = d_psi - target_x(x)
        u = distance.grad(delta / expand_like(scale, delta), c)
    loss = expand_like(weight / scale, x0) * u * (x0 - d_psi)
    return per_sample_sum(loss), delta.detach()


def kl_regulariser(
    x: Tensor,
    sigma: Tensor,
    assistant_x: Callable[[Tensor], Tensor],
    target_x: Callable[[Tensor], Tensor],
    scale: Tensor,
    weight: Tensor,
) -> tuple[Tensor, Tensor]:
    """Integral-KL loss of Diff-Instruct (DI++ with a reward):
    ``L_KL = w / scale * sg[D_psi(x) - D~(x)] . x``; its gradient is
    ``E w sigma^2 / scale (s_theta - s_ref) dx/dtheta``, the IKL gradient. Networks under no_grad.
    Returns the per-sample loss and ``Delta``."""
    with torch.no_grad():
        delta = assistant_x(x) - target_x(x)
    return per_sample_sum(expand_like(weight / scale, x) * delta * x), delta


def cfg_reward_loss(
    x: Tensor,
    sigma: Tensor,
    pair: PairDenoiser,
    cond: Any,
    null: Any,
    cfg_scale: float,
    scale: Tensor,
    weight: Tensor,
) -> Tensor:
    """Implicit CFG reward, guidance ``out`` (eq. 3.5 / A.14, Theorem 3.2):
    ``L_cfg = -a_cfg w / scale * sg[D(x; c) - D(x; null)] . x``. Its gradient is
    ``-a_cfg grad_theta r_cfg`` with ``r_cfg = E w sigma^2 / scale log p(x|c) / p(x|null)``.
    (The printed pseudo-code adds ``+cfg_vector * x0``, which points the other way.)
    ``pair(x, sigma, cond, null)`` gives both reference branches."""
    with torch.no_grad():
        d_cond, d_null = pair(x, sigma, cond, null)
        direction = d_cond - d_null
    return -cfg_scale * per_sample_sum(expand_like(weight / scale, x) * direction * x)


def explicit_reward_loss(reward: Tensor, reward_scale: float) -> Tensor:
    """Explicit reward term ``L_rew = -a_rew r(x0, c)`` (eq. 3.4, first term)."""
    return -reward_scale * reward


@dataclass(frozen=True)
class NoisyBatch:
    """What every divergence sees of one generator batch: ``x0`` (with grad), ``x = x0 + sigma
    eps`` (not detached), the assistant and (guided) reference as functions of x, the distance scale
    and the weighting w(sigma)."""

    x0: Tensor
    x: Tensor
    sigma: Tensor
    assistant_x: Callable[[Tensor], Tensor]
    target_x: Callable[[Tensor], Tensor]
    scale: Tensor
    weight: Tensor


# Interchangeable divergences share one signature: (cfg, batch) -> (per-sample loss, Delta).
DIVERGENCES: Registry[Callable[[LossConfig, NoisyBatch], tuple[Tensor, Tensor]]] = Registry(
    K.loss.divergence, choices.DIVERGENCES
)


@DIVERGENCES.register("score")
def score_divergence(cfg: LossConfig, b: NoisyBatch) -> tuple[Tensor, Tensor]:
    """DI* / SIM: the score regulariser with the configured distance and gradient path."""
    c = torch.full_like(b.sigma, cfg.huber_c)
    distance = DISTANCES.get(cfg.distance)
    exact = cfg.gradient_path == "exact"
    return score_regulariser(
        b.x0, b.x, b.sigma, b.assistant_x, b.target_x, distance, c, b.scale, b.weight, exact
    )


@DIVERGENCES.register("kl")
def kl_divergence(cfg: LossConfig, b: NoisyBatch) -> tuple[Tensor, Tensor]:
    """Diff-Instruct / DI++: the integral-KL loss."""
    return kl_regulariser(b.x, b.sigma, b.assistant_x, b.target_x, b.scale, b.weight)


DIVERGENCES.complete()


# ---- the generator objective --------------------------------------------------------------------
@dataclass
class GeneratorLoss:
    per_sample: Tensor  # [B], what the optimiser descends (mean over the batch)
    terms: dict[str, Tensor]  # per-sample value of each term
    diagnostics: dict[str, Tensor | float] = field(default_factory=dict)  # batch means


@dataclass(frozen=True)
class GeneratorBatch:
    """One generator batch: ``x0 = g_theta(z, c)`` (with gradients), its noise levels and
    noise (``x = x0 + sigma * noise``), conditions and their unconditional counterparts."""

    x0: Tensor
    sigma: Tensor
    noise: Tensor
    cond: Any
    null: Any


@dataclass(frozen=True)
class Networks:
    """What the generator loss calls: the frozen reference and assistant denoisers, the explicit
    reward ``r(x0, c)`` (None: no reward), and the reference's CFG pair ``(D(x; c), D(x; null))``
    from one batched call (None: two calls of ``reference``)."""

    reference: Denoiser
    assistant: Denoiser
    reward: Callable[[Tensor, Any], Tensor] | None = None
    reference_pair: PairDenoiser | None = None


def generator_loss(
    cfg: LossConfig, batch: GeneratorBatch, nets: Networks, diagnose: bool = False
) -> GeneratorLoss:
    """``L_G = L_reg (score) or L_KL (kl) + L_cfg (guidance out) + L_rew`` for one batch.

    ``batch.x0`` must carry gradients; ``x = x0 + sigma * noise`` is *not* detached. Assistant
    and reference parameters must be frozen by the caller (requires_grad False). Diagnostics
    are tensors (no host sync); with ``diagnose`` they add the per-term gradient norms."""
    x0, sigma, noise, cond, null = batch.x0, batch.sigma, batch.noise, batch.cond, batch.null
    reference, assistant, reward_fn = nets.reference, nets.assistant, nets.reward
    x = x0 + expand_like(sigma, x0) * noise
    alpha = cfg.cfg_scale_distar
    guided_in = cfg.guidance == "in" and alpha > 0
    pair = nets.reference_pair or two_calls(reference)
    at_x: list[Tensor] = []  # D~(x), computed once: the weighting and the divergence share it

    def target_x(xx: Tensor) -> Tensor:
        if xx is x and at_x:
            return at_x[0]
        out = guided_denoiser(reference, xx, sigma, cond, null, alpha if guided_in else 0.0, pair)
        if xx is x:
            at_x.append(out)
        return out

    def target_for_weight() -> Tensor:
        # built with the graph the exact score path will reuse; the weighting detaches it
        exact = cfg.divergence == "score" and cfg.gradient_path == "exact"
        with torch.set_grad_enabled(exact and grad_on):
            return target_x(x).detach()

    def assistant_x(xx: Tensor) -> Tensor:
        return assistant(xx, sigma, cond)

    grad_on = torch.is_grad_enabled()
    scale = distance_scale(sigma, cfg.distance_on)
    weight = GENERATOR_WEIGHTINGS.get(cfg.weighting)(sigma, x0, target_for_weight)
    noisy = NoisyBatch(x0, x, sigma, assistant_x, target_x, scale, weight)
    terms: dict[str, Tensor] = {}
    terms["divergence"], delta = DIVERGENCES.get(cfg.divergence)(cfg, noisy)
    if cfg.guidance == "out" and alpha > 0:
        terms["cfg"] = cfg_reward_loss(x, sigma, pair, cond, null, alpha, scale, weight)
    reward = None
    if reward_fn is not None and (cfg.reward_scale > 0 or diagnose):
        reward = reward_fn(x0, cond)
        if cfg.reward_scale > 0:
            terms["reward"] = explicit_reward_loss(reward, cfg.reward_scale)
    total = torch.stack(list(terms.values())).sum(0)
    diagnostics: dict[str, Tensor | float] = {"delta_norm": per_sample_norm(delta).mean()}
    if reward is not None:
        diagnostics["reward"] = reward.detach().mean()
    if diagnose:
        diagnostics.update(term_gradient_norms(terms, x0))
    return GeneratorLoss(total, terms, diagnostics)


def term_gradient_norms(terms: dict[str, Tensor], x0: Tensor) -> dict[str, float]:
    """Mean per-sample norm of each term's gradient with respect to the generator output x0."""
    norms = {}
    for name, term in terms.items():
        (grad,) = torch.autograd.grad(term.sum(), x0, retain_graph=True, allow_unused=True)
        norms[f"grad_norm/{name}"] = 0.0 if grad is None else per_sample_norm(grad).mean().item()
    return norms
