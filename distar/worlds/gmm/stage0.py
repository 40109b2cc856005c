"""Stage 0 of the embedded world, computed once per world config and cached by content hash.

- The assistant starts as a copy of the reference. With ``assistant_init="copy"`` (default) it is
  the exact reference plus a zero-initialised residual MLP, so nothing is fitted; with "fitted" it
  is a standalone EDM MLP regressed onto the exact reference denoiser (kept to study how much an
  imperfect copy biases training).
- The generator starts from a one-step model distilled with no reward (the role DMD2-SDXL plays in
  the paper): regression of ``g(z, c)`` onto the exact probability-flow ODE map ``z -> x0``
  (knowledge distillation, Luhman & Luhman 2021).
Trials of a sweep share the cache; a file lock keeps concurrent trials from fitting it twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from distar.config.gmm import GMMWorldConfig
from distar.method.sigmas import edm_weight
from distar.worlds.gmm.mixture import ConditionalGMM, probability_flow

STAGE0_VERSION = "2"  # bump when the fitting procedure changes, so old caches are not reused
BATCH = 1024
ODE_PAIRS = 65536


def cache_dir(cfg: GMMWorldConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("DISTAR_CACHE") or Path.home() / ".cache/distar")


def content_hash(cfg: GMMWorldConfig) -> str:
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"}
    blob = json.dumps({"config": fields, "version": STAGE0_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _adam_cosine(module: nn.Module, steps: int, lr: float = 1e-3):
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr / 100)
    return opt, sched


def fit_assistant(
    assistant: nn.Module,
    mixture: ConditionalGMM,
    steps: int,
    rng: torch.Generator,
    desc: str = "stage 0: fit assistant to reference",
) -> None:
    """Regress ``D_psi(x; sigma, c)`` onto the exact ``E[x0 | x, c]`` over all prompts incl. null,
    ``sigma`` log-uniform on [0.002, 80], with EDM's weighting."""
    opt, sched = _adam_cosine(assistant, steps)
    device = mixture.means.device
    for _ in tqdm(range(steps), desc=desc, leave=False):
        cond = torch.randint(0, mixture.null + 1, (BATCH,), generator=rng).to(device)
        x0 = mixture.sample(cond, rng)
        sigma = torch.exp(torch.empty(BATCH).uniform_(-6.2, 4.4, generator=rng)).to(device)
        x = x0 + sigma[:, None] * torch.randn(x0.shape, generator=rng).to(device)
        target = mixture.denoise(x, sigma, cond)
        loss = (
            (
                edm_weight(sigma, assistant.sigma_data)[:, None]
                * (assistant(x, sigma, cond) - target).square()
            )
            .sum(1)
            .mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def fit_generator(
    generator: nn.Module, mixture: ConditionalGMM, steps: int, ode_steps: int, rng: torch.Generator
) -> None:
    """Distil the exact probability-flow ODE into ``g``: regress ``g(z, c)`` onto ODE(z, c)."""
    device = mixture.means.device
    cond = torch.randint(0, mixture.n_prompts, (ODE_PAIRS,), generator=rng).to(device)
    z = torch.randn(ODE_PAIRS, mixture.dim, generator=rng).to(device)
    target = probability_flow(mixture.denoise, z, cond, ode_steps)
    opt, sched = _adam_cosine(generator, steps)
    for _ in tqdm(range(steps), desc="stage 0: distil generator from the ODE", leave=False):
        idx = torch.randint(0, ODE_PAIRS, (BATCH,), generator=rng).to(device)
        loss = (generator(z[idx], cond[idx]) - target[idx]).square().sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def reinitialise(module: nn.Module, seed: int) -> None:
    """Every layer's own initialisation, drawn from ``seed`` (the global RNG left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def load_or_fit(
    cfg: GMMWorldConfig, mixture: ConditionalGMM, generator: nn.Module, assistant: nn.Module
) -> Path:
    """Fill ``generator`` and ``assistant`` with the cached stage-0 weights, fitting them first
    if this world config has none yet. Returns the cache file."""
    path = cache_dir(cfg) / f"gmm-stage0-{content_hash(cfg)}.safetensors"
    fits_assistant = cfg.assistant_init == "fitted"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            rng = torch.Generator().manual_seed(cfg.geometry_seed)
            # the cache is keyed by the world config alone: its networks start from that config's
            # seed, not from the global RNG of whichever run happens to fit it first
            for module in (generator, assistant) if fits_assistant else (generator,):
                reinitialise(module, cfg.geometry_seed)
            if fits_assistant:
                fit_assistant(assistant, mixture, cfg.assistant_fit_steps, rng)
            fit_generator(generator, mixture, cfg.stage0_steps, cfg.ode_steps, rng)
            tensors = {f"generator.{k}": v for k, v in generator.state_dict().items()}
            if fits_assistant:
                tensors.update({f"assistant.{k}": v for k, v in assistant.state_dict().items()})
            tmp = path.with_suffix(".tmp")
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                str(tmp),
                metadata={"world_config": json.dumps(dataclasses.asdict(cfg))},
            )
            os.replace(tmp, path)  # atomic: readers never see a half-written file
    tensors = load_file(str(path))
    modules = (("generator.", generator), ("assistant.", assistant))
    for prefix, module in modules[: 2 if fits_assistant else 1]:
        module.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
    return path
