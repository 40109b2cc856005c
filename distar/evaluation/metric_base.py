"""One signature for every metric, and the registry the harness picks them from (the built-in
metrics register themselves in :mod:`distar.evaluation.scorers`, which builds them by name).

A *sample* metric scores each (image, prompt) pair: ``score(images, prompts) -> [B]``. A *set*
metric compares the distribution of all images with a reference (FID): ``reset / update /
compute``. Images are always float ``[B, 3, H, W]`` in [0, 1] on the metric's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from distar.util.registry import Registry


class SampleMetric(Protocol):
    name: str

    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor: ...


class SetMetric(Protocol):
    name: str

    def reset(self) -> None: ...

    def update(self, images: Tensor, prompts: Sequence[str]) -> None: ...

    def compute(self) -> float: ...


def is_set_metric(metric: Any) -> bool:
    return hasattr(metric, "compute") and hasattr(metric, "update")


@dataclass(frozen=True)
class MetricOptions:
    """Where a metric's weights are (None: its environment variable) and where it runs."""

    paths: dict[str, str | Path] = field(default_factory=dict)
    device: str = "cpu"
    cache_dir: str | Path | None = None  # FID reference statistics
    fid_protocol: str = ""  # eval.fid_protocol: "" torchmetrics' FID, else a published protocol

    def path(self, key: str) -> str | Path | None:
        return self.paths.get(key)


MetricFactory = Callable[[MetricOptions], Any]
METRICS: Registry[MetricFactory] = Registry("metric")
