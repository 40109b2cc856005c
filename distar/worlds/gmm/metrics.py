"""Exact metrics of the embedded world. Each takes an :class:`EvalSet` and returns named floats.

The reference is known in closed form, so likelihoods, supports and moments are exact; only the
two-sample MMD uses samples of the reference (exact samples, drawn with the same prompts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import torch
from scipy.special import chdtri  # not scipy.stats: ~1 s to import in every trial's worker
from torch import Tensor

from distar.util.registry import Registry
from distar.worlds.gmm.mixture import ConditionalGMM

SUPPORT_QUANTILE = 0.999  # a sample is "on the support" inside this quantile ball of some mode
COVERED_SHARE = 0.5  # a mode is covered when it gets >= this share of its reference weight


@dataclass
class EvalSet:
    x: Tensor  # [N, d] samples to judge
    cond: Tensor  # [N] their prompts (never the null prompt)
    reference_x: Tensor  # [N, d] exact reference samples for the same prompts
    mixture: ConditionalGMM
    reward_fn: Callable[[Tensor, Tensor], Tensor]

    @cached_property
    def mahalanobis2(self) -> Tensor:
        """``[N, K]`` squared distance to each mode in units of its std."""
        m = self.mixture
        return (self.x[:, None, :] - m.means[None]).square().sum(-1) / m.stds.square()[None]

    @cached_property
    def nearest_mode(self) -> Tensor:
        return self.mahalanobis2.argmin(1)

    @cached_property
    def on_support(self) -> Tensor:
        # chi2's inverse survival function: chi2.ppf(q, dim) = chdtri(dim, 1 - q)
        radius2 = float(chdtri(self.mixture.dim, 1.0 - SUPPORT_QUANTILE))
        return self.mahalanobis2.min(1).values <= radius2


GMM_METRICS: Registry[Callable[[EvalSet], dict[str, float]]] = Registry("gmm metric")


def sample_reward(e: EvalSet) -> Tensor:
    return e.reward_fn(e.x, e.cond)


def sample_loglik(e: EvalSet) -> Tensor:
    """Exact ``log p_ref(x | c)`` of each sample."""
    zero = torch.zeros(len(e.x), dtype=e.x.dtype, device=e.x.device)
    return e.mixture.log_prob(e.x, zero, e.cond)


def sample_precision(e: EvalSet) -> Tensor:
    """1 where a sample is inside the reference's support (the 0.999 ball of some mode)."""
    return e.on_support.float()


def sample_adherence(e: EvalSet) -> Tensor:
    """1 where a sample's nearest mode belongs to its own prompt."""
    return (e.mixture.owners()[e.nearest_mode] == e.cond).float()


# The metrics that are means over samples: their per-sample values are the items two runs'
# evaluations pair on (sample j of prompt i has the same noise in every run at one eval seed).
PER_SAMPLE: dict[str, Callable[[EvalSet], Tensor]] = {
    "reward": sample_reward,
    "loglik": sample_loglik,
    "precision": sample_precision,
    "adherence": sample_adherence,
}


def _mean_of(name: str) -> Callable[[EvalSet], dict[str, float]]:
    def metric(e: EvalSet) -> dict[str, float]:
        return {name: PER_SAMPLE[name](e).mean().item()}

    metric.__doc__ = f"The mean of :func:`{PER_SAMPLE[name].__name__}`."
    return metric


for _name in PER_SAMPLE:
    GMM_METRICS.register(_name)(_mean_of(_name))


def item_rows(e: EvalSet, seed: int) -> pd.DataFrame:
    """One row per sample, keyed like a benchmark's (prompt, group, index = prompt id,
    replica = the sample's number within its prompt, seed = the evaluation seed), with the
    per-sample values of :data:`PER_SAMPLE`; their means are :func:`evaluate_samples`'."""
    cond = e.cond.cpu().numpy()
    replica = pd.Series(cond).groupby(cond).cumcount().to_numpy()
    names = [f"prompt {c}" for c in cond]
    rows = {"prompt": names, "group": names, "index": cond, "replica": replica, "seed": seed}
    values = {k: f(e).double().cpu().numpy() for k, f in PER_SAMPLE.items()}
    return pd.DataFrame({**rows, **values})


@GMM_METRICS.register("coverage")
def mode_coverage(e: EvalSet) -> dict[str, float]:
    """Per prompt, the fraction of its modes receiving at least ``COVERED_SHARE`` of their
    reference weight among the prompt's on-support samples; ``coverage`` is the mean."""
    out, m = {}, e.mixture
    for p in range(m.n_prompts):
        mine = e.cond == p
        weights = torch.softmax(m.log_weights[p], 0)
        owned = torch.nonzero(torch.isfinite(m.log_weights[p])).flatten()
        hits = torch.bincount(e.nearest_mode[mine & e.on_support], minlength=len(weights))
        share = hits.float() / max(int(mine.sum()), 1)
        out[f"coverage/p{p}"] = (
            (share[owned] >= COVERED_SHARE * weights[owned]).float().mean().item()
        )
    out["coverage"] = sum(out.values()) / m.n_prompts
    return out


def kernel_sum(d2: Tensor, bandwidths: tuple[float, ...]) -> Tensor:
    """``sum_h sum_ij exp(-d2_ij / 2h^2)``: only the sum is needed, never the kernel matrix (this
    is almost all of an embedded-world evaluation's time)."""
    return sum(torch.exp(d2 * (-0.5 / (h * h))).sum() for h in bandwidths)


def within_mean(x: Tensor, bandwidths: tuple[float, ...]) -> Tensor:
    """Mean kernel over the pairs i != j of one sample: each unordered pair once (``pdist``),
    half the work of the full matrix."""
    n = len(x)
    return 2 * kernel_sum(torch.pdist(x).square(), bandwidths) / (n * (n - 1))


_REFERENCE_TERMS: dict[tuple, Tensor] = {}  # reference samples repeat at every evaluation


def reference_mean(y: Tensor, bandwidths: tuple[float, ...]) -> Tensor:
    """:func:`within_mean` of reference samples, remembered by their content: an evaluation draws
    the same reference samples (same seed) every time."""
    key = (hashlib.sha1(y.detach().cpu().numpy().tobytes()).hexdigest(), y.shape, bandwidths)
    if key not in _REFERENCE_TERMS:
        if len(_REFERENCE_TERMS) >= 256:
            _REFERENCE_TERMS.clear()
        _REFERENCE_TERMS[key] = within_mean(y, bandwidths)
    return _REFERENCE_TERMS[key]


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidths: tuple[float, ...]) -> Tensor:
    """Unbiased squared MMD with a sum of Gaussian kernels (Gretton et al. 2012, eq. 3)."""
    xy = kernel_sum(torch.cdist(x, y).square(), bandwidths) / (len(x) * len(y))
    return within_mean(x, bandwidths) + reference_mean(y, bandwidths) - 2 * xy


@GMM_METRICS.register("mmd")
def mmd(e: EvalSet) -> dict[str, float]:
    """Per-prompt unbiased MMD^2 to exact reference samples, averaged (0 for the reference up to
    sampling noise; kernels at the mode scale, the layout scale and in between)."""
    m = e.mixture
    radius = m.means.norm(dim=1).max().item()
    bandwidths = (m.stds.max().item(), radius / 4, radius)
    per = [
        mmd2_unbiased(e.x[e.cond == p], e.reference_x[e.cond == p], bandwidths)
        for p in range(m.n_prompts)
    ]
    return {"mmd": torch.stack(per).mean().item()}


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)`` via symmetric eigensolves."""
    vals, vecs = torch.linalg.eigh(cov1)
    root1 = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    middle = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * middle


@GMM_METRICS.register("frechet")
def frechet(e: EvalSet) -> dict[str, float]:
    """Per-prompt Frechet distance between the samples' moments and the reference's exact ones."""
    per = []
    for p in range(e.mixture.n_prompts):
        x = e.x[e.cond == p].double()
        mu_ref, cov_ref = e.mixture.moments(p)
        per.append(
            frechet_distance(
                x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1), mu_ref.double(), cov_ref.double()
            )
        )
    return {"frechet": torch.stack(per).mean().item()}


def evaluate_samples(e: EvalSet, names: tuple[str, ...] | None = None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in names or GMM_METRICS.names():
        metrics.update(GMM_METRICS.get(name)(e))
    return metrics
