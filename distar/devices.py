"""The training device, and moving host tensors to it without making the host wait."""

from __future__ import annotations

import torch
from torch import Tensor

from distar.config_base import ConfigError


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor onto ``device``: through pinned memory and a non-blocking copy on CUDA, so a
    training step makes no host sync for it."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def resolve_device(name: str) -> torch.device:
    """``train.device``: "auto" is CUDA when torch sees it, else the CPU. CUDA is this process's
    current device (a launcher's rank sets it: torchrun through
    :func:`distar.distributed.init_from_launcher`, Ray Train itself)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: got 'cuda' but torch sees no CUDA device; allowed: "
                          "'cpu' or 'auto' here")  # fmt: skip
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)
