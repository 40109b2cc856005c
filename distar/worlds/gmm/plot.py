"""Samples drawn over the reference density, one panel per prompt (first two coordinates)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure  # not pyplot: no global figure state, and lighter to import
from torch import Tensor

from distar.worlds.gmm.mixture import ConditionalGMM


def plot_samples(
    mixture: ConditionalGMM, x: Tensor, cond: Tensor, path: Path, max_points: int = 1500
) -> Path:
    # The marginal of an isotropic mixture on two coordinates is the mixture of the marginals.
    plane = ConditionalGMM(
        mixture.means[:, :2].cpu(), mixture.stds.cpu(), mixture.log_weights.cpu()
    )
    lim = 2.0 * plane.means.norm(dim=1).max().item()  # room to see reward hacking
    grid = torch.linspace(-lim, lim, 200)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    n = mixture.n_prompts
    fig = Figure(figsize=(3.2 * n, 3.4))
    axes = fig.subplots(1, n, squeeze=False)
    x, cond = x.detach().cpu(), cond.cpu()
    for p, ax in enumerate(axes[0]):
        cond_grid = torch.full((len(points),), p)
        logp = plane.log_prob(points, torch.zeros(len(points)), cond_grid).reshape(gx.shape)
        ax.contourf(gx, gy, logp.clamp_min(logp.max() - 12), levels=20, cmap="Blues")
        mine = x[cond == p][:max_points]
        ax.scatter(mine[:, 0], mine[:, 1], s=2, c="tab:red", alpha=0.5)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=f"prompt {p}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)  # Agg, chosen by the .png suffix
    return path
