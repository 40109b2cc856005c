"""The training device, and moving host tensors to it without making the host wait."""

from __future__ import annotations

import torch
from torch import Tensor

from distar.config.keys import K
from distar.config.sections import ConfigError


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor onto ``device``: through pinned memory and a non-blocking copy on CUDA, so a
    training step makes no host sync for it."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def check_cuda(name: str, field: str, allowed: str) -> None:
    """A CUDA device (``cuda``, ``cuda:1``) asked for where torch sees none: refused naming
    the field or flag."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"{field}: got {name!r} but torch sees no CUDA device; allowed: {allowed} here"
        )


def resolve_device(name: str) -> torch.device:
    """``train.device``: "auto" is CUDA when torch sees it, else the CPU. CUDA is this process's
    current device (a launcher's rank sets it: torchrun through
    :func:`distar.runtime.distributed.init_from_launcher`, Ray Train itself)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    check_cuda(name, K.train.device, "'cpu' or 'auto'")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)
