"""Full-state checkpoints without pickled code: the trained weights as safetensors; optimiser
states, step and RNG states as tensors/primitives loaded with ``weights_only=True``; config as
YAML. Only what a run trains is written (parameters that require grad): frozen weights the world
loads itself -- the reference a LoRA assistant shares -- are not copied into every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distar.config import Config

LATEST = "latest"


def save_checkpoint(
    root: Path, step: int, modules: dict[str, nn.Module], state: dict[str, Any], config: Config
) -> Path:
    """Write ``root/step_XXXXXXX/`` and point ``root/latest`` at it; returns the directory."""
    path = Path(root) / f"step_{step:07d}"
    path.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in trained_state(module).items()}
        save_file(tensors, str(path / f"{name}.safetensors"))
    torch.save({"step": step, **state}, path / "trainer.pt")
    (path / "config.yaml").write_text(config.to_yaml())
    (Path(root) / LATEST).write_text(path.name)
    return path


def trained_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p for k, p in module.named_parameters() if p.requires_grad}


def load_trained_state(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``tensors`` into the trained parameters of ``module``; the names must match exactly."""
    params = trained_state(module)
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {what}: does not match the trained parameters "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[k])


def resolve_checkpoint(path: Path) -> Path:
    """Accept a checkpoint directory or a root holding a ``latest`` pointer."""
    path = Path(path)
    if (path / LATEST).exists():
        path = path / (path / LATEST).read_text().strip()
    if not (path / "trainer.pt").exists():
        raise FileNotFoundError(f"no checkpoint at {path} (expected trainer.pt inside)")
    return path


def load_checkpoint(path: Path, modules: dict[str, nn.Module]) -> dict[str, Any]:
    """Load weights into ``modules`` in place and return the trainer state."""
    path = resolve_checkpoint(path)
    for name, module in modules.items():
        file = path / f"{name}.safetensors"
        load_trained_state(module, load_file(str(file)), str(file))
    return torch.load(path / "trainer.pt", weights_only=True)


def checkpoint_config(path: Path) -> Config:
    return Config.from_yaml((resolve_checkpoint(path) / "config.yaml").read_text())
