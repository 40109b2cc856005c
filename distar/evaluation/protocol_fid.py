"""COCO FID as a published protocol measured it (``eval.fid_protocol``; the protocols are in
:data:`distar.config.benchmarks.FID_PROTOCOLS`).

DMD2's evaluator (``main/coco_eval/coco_evaluator.py``), step by step, for generated and
reference images alike:

1. uint8 pixels (generated images in [0, 1] are truncated, as DMD2's ``(x + 1) * 127.5`` cast);
2. centre crop to a square (``CenterCropLongEdge``), PIL LANCZOS to the protocol's resolution;
3. clean-fid's "clean" resize: per channel, float32 PIL bicubic to 299 x 299, no re-quantising;
4. clean-fid's Inception-v3 TorchScript (``inception-2015-12-05.pt``) on [0, 255];
5. mean and covariance (``np.cov``: n - 1) in float64, clean-fid's ``frechet_distance``.

Steps 3-5 are clean-fid's own functions. torchmetrics' FID (:mod:`distar.evaluation.fid`)
resizes with a bilinear interpolation on quantised tensors instead: a different number.
Feature sums are kept in float64 so shards (ranks, Ray actors) merge exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from distar.config.benchmarks import FIDProtocol
from distar.evaluation.fid import image_files, listing_key
from distar.rewards.clip_common import check_pixel_range

CLEAN_SIZE = 299


def protocol_pixels(image: np.ndarray, resolution: int) -> np.ndarray:
    """Steps 2-3 on one uint8 HWC image: float32 HWC, 299 x 299, values in [0, 255]."""
    from cleanfid.resize import make_resizer
    from PIL import Image
    from torchvision.transforms import functional as TF

    pil = Image.fromarray(image)
    pil = TF.center_crop(pil, min(pil.size)).resize((resolution, resolution), Image.LANCZOS)
    clean = make_resizer("PIL", False, "bicubic", (CLEAN_SIZE, CLEAN_SIZE))
    return clean(np.asarray(pil))


def to_uint8(images: Tensor) -> np.ndarray:
    """Step 1: float [B, 3, H, W] in [0, 1] (refused outside) -> uint8 [B, H, W, 3], truncated
    as DMD2 casts."""
    check_pixel_range(images)
    scaled = images.detach().float().cpu() * 255.0
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class FeatureSums:
    """Sum, sum of outer products and count of feature vectors, in float64: mergeable."""

    total: np.ndarray | None = None
    outer: np.ndarray | None = None
    count: int = 0

    def add(self, feats: np.ndarray) -> None:
        if self.total is None:
            self.total, self.outer = np.zeros(feats.shape[1]), np.zeros((feats.shape[1],) * 2)
        self.total += feats.sum(0)
        self.outer += feats.T @ feats
        self.count += len(feats)

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance, as ``np.cov(feats, rowvar=False)``."""
        if self.count < 2:
            raise RuntimeError(f"fid: {self.count} images; need >= 2")
        mu = self.total / self.count
        return mu, (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)


class ProtocolFID:
    """A set metric (``reset / update / compute``) whose shards merge exactly."""

    name = "fid"

    def __init__(
        self, protocol: FIDProtocol, features: nn.Module, feature_id: str, device: str = "cpu"
    ) -> None:
        self.protocol, self.device = protocol, device
        self.features = features.to(device).eval()
        self.feature_id = feature_id
        self.reference: tuple[np.ndarray, np.ndarray] | None = None
        self.reference_count = 0
        self.generated = FeatureSums()

    def reset(self) -> None:
        self.generated = FeatureSums()

    @torch.no_grad()
    def embed(self, uint8_images: Sequence[np.ndarray]) -> np.ndarray:
        pixels = [protocol_pixels(img, self.protocol.resolution) for img in uint8_images]
        batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).to(self.device)
        return self.features(batch).double().cpu().numpy()

    def update(self, images: Tensor, prompts: Sequence[str] = ()) -> None:
        self.generated.add(self.embed(to_uint8(images)))

    def compute(self) -> float:
        from cleanfid.fid import frechet_distance

        if self.reference is None:
            raise RuntimeError("fid: no reference statistics; call reference_from_folder first")
        return float(frechet_distance(*self.generated.moments(), *self.reference))

    def shard_state(self) -> dict[str, Tensor]:
        g = self.generated
        if g.total is None:  # a shard that drew no image
            return {}
        return {
            "sum": torch.from_numpy(g.total),
            "outer": torch.from_numpy(g.outer),
            "count": torch.tensor(g.count),
        }

    def merge_shard_states(self, states: list[dict[str, Tensor]]) -> None:
        """Replace the generated-image sums by the sum of every shard's: exact."""
        self.reset()
        for state in filter(None, states):
            if self.generated.total is None:
                dim = state["sum"].shape[0]
                self.generated.total, self.generated.outer = np.zeros(dim), np.zeros((dim, dim))
            self.generated.total += state["sum"].double().numpy()
            self.generated.outer += state["outer"].double().numpy()
            self.generated.count += int(state["count"])

    def reference_from_folder(
        self, folder: Path, cache_dir: Path | None, batch_size: int = 64
    ) -> Path | None:
        """The reference images' moments under the same protocol (cached by folder listing,
        protocol and feature network)."""
        files = image_files(folder)
        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir) / f"fid-{self.protocol.name}-{self.cache_key(files)}.npz"
            if cache.is_file():
                with np.load(cache, allow_pickle=False) as data:
                    self.reference = (data["mu"], data["sigma"])
                    self.reference_count = int(data["count"])
                return cache
        sums = FeatureSums()
        for batch in read_uint8(files, batch_size):
            sums.add(self.embed(batch))
        self.reference, self.reference_count = sums.moments(), sums.count
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".part.npz")
            np.savez(tmp, mu=self.reference[0], sigma=self.reference[1], count=sums.count)
            tmp.replace(cache)
        return cache

    def cache_key(self, files: list[Path]) -> str:
        return listing_key(files, f"{self.protocol}|{self.feature_id}")


def read_uint8(files: list[Path], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Reference images as clean-fid's folder reader reads them: RGB uint8, one batch a list
    (sizes differ until the protocol resize). An unreadable image raises."""
    from PIL import Image

    for start in range(0, len(files), batch_size):
        batch = []
        for f in files[start : start + batch_size]:
            with Image.open(f) as img:
                batch.append(np.asarray(img.convert("RGB")))
        yield batch


def load_inception_torchscript(path: Path) -> nn.Module:
    """clean-fid's Inception-v3 wrapper around ``inception-2015-12-05.pt`` (the file name it
    requires; never downloaded here)."""
    from cleanfid.inception_torchscript import InceptionV3W

    if path.name != "inception-2015-12-05.pt":
        raise FileNotFoundError(f"{path}: clean-fid loads a file named inception-2015-12-05.pt")
    return InceptionV3W(str(path.parent), download=False)
