"""Small heads on frozen backbones, and loading their published weight files."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


class RewardHead(nn.Module):
    """The MLP head shared by the LAION aesthetic predictor v2 and ImageReward (same layer
    layout, so the published state dicts load as ``layers.{0,2,4,6,7}``)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).squeeze(-1)


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """Weights from ``.safetensors`` or a plain PyTorch state dict (``weights_only``: no code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
