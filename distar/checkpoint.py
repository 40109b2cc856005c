"""Full-state checkpoints without pickled code: network weights as safetensors; optimiser
states, step and RNG states as tensors/primitives loaded with ``weights_only=True``; config as
YAML."""

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
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(path / f"{name}.safetensors"))
    torch.save({"step": step, **state}, path / "trainer.pt")
    (path / "config.yaml").write_text(config.to_yaml())
    (Path(root) / LATEST).write_text(path.name)
    return path


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
        module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
    return torch.load(path / "trainer.pt", weights_only=True)


def checkpoint_config(path: Path) -> Config:
    return Config.from_yaml((resolve_checkpoint(path) / "config.yaml").read_text())
