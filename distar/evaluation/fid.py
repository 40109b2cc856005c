"""COCO FID through torchmetrics' ``FrechetInceptionDistance``.

Inception weights come from a local file (torch-fidelity's ``pt_inception-2015-12-05``); the
reference statistics (feature sum, covariance sum, count: torchmetrics' own state) are computed
once from the user's image folder and cached under a key of the folder listing, the feature
extractor and the image size. Any ``nn.Module`` mapping images to features can stand in for
Inception (the tests use a tiny one).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from distar.rewards.clip_common import check_pixel_range

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_STATE = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
FAKE_STATE = ("fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples")


class FIDMetric:
    name = "fid"

    def __init__(
        self,
        feature: int | nn.Module = 2048,
        weights: Path | None = None,
        feature_id: str = "",
        device: str = "cpu",
    ) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.metric = FrechetInceptionDistance(
            feature=feature,
            reset_real_features=False,
            normalize=True,  # images arrive as floats in [0, 1]
            feature_extractor_weights_path=str(weights) if weights else None,
        ).to(device)
        self.feature_id = feature_id or f"{type(feature).__name__}-{feature}"
        self.device = device
        self.has_reference = False

    def reset(self) -> None:
        self.metric.reset()  # generated features only: reset_real_features=False

    def update(self, images: Tensor, prompts: Sequence[str] = ()) -> None:
        check_pixel_range(images)
        self.metric.update(images.to(self.device).float(), real=False)

    def compute(self) -> float:
        if not self.has_reference:
            raise RuntimeError("fid: no reference statistics; call reference_from_folder first")
        return float(self.metric.compute())

    def shard_state(self) -> dict[str, Tensor]:
        """The generated-image feature sums (mergeable across shards by addition)."""
        return {k: getattr(self.metric, k).detach().cpu() for k in FAKE_STATE}

    def merge_shard_states(self, states: list[dict[str, Tensor]]) -> None:
        """Replace the generated-image statistics by the sum of every shard's: exact, since
        FID needs only these sums."""
        for k in FAKE_STATE:
            total = sum(s[k].to(torch.float64) for s in states)
            current = getattr(self.metric, k)
            setattr(self.metric, k, total.to(current.dtype).to(current.device))

    def add_reference(self, images: Tensor) -> None:
        check_pixel_range(images)
        self.metric.update(images.to(self.device).float(), real=True)
        self.has_reference = True

    def reference_from_folder(
        self, folder: Path, cache_dir: Path | None, image_size: int = 299, batch_size: int = 64
    ) -> Path | None:
        """Feed the reference images (or their cached statistics) into the metric."""
        files = image_files(folder)
        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir) / f"fid-ref-{self.cache_key(files, image_size)}.safetensors"
            if cache.is_file():
                self._load_state(cache)
                return cache
        for batch in batched_images(files, image_size, batch_size):
            self.add_reference(batch)
        if cache is not None:
            self._save_state(cache)
        return cache

    def cache_key(self, files: list[Path], image_size: int) -> str:
        return listing_key(files, f"{self.feature_id}|{image_size}")

    def _save_state(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self.metric, k).detach().cpu().contiguous() for k in _STATE}
        tmp = path.with_suffix(".part")
        save_file(tensors, str(tmp))
        tmp.replace(path)

    def _load_state(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path))
        for key in _STATE:
            current = getattr(self.metric, key)
            setattr(self.metric, key, state[key].reshape(current.shape).to(current.device))
        self.has_reference = True


def listing_key(files: list[Path], salt: str) -> str:
    """A cache key of reference statistics: ``salt`` (how they were computed) and the folder
    listing (relative names, sizes, modification times)."""
    h = hashlib.sha256(salt.encode())
    root = files[0].parent if len(files) == 1 else Path(os.path.commonpath(files))
    for f in files:
        stat = f.stat()
        h.update(f"{f.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def image_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"fid reference folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"fid reference folder {folder}: {len(files)} images; need >= 2")
    return files


def batched_images(files: list[Path], size: int, batch_size: int) -> Iterator[Tensor]:
    """Shorter side resized to ``size``, centre-cropped: one batchable tensor per chunk. An
    unreadable image raises (no silent dropping)."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    for start in range(0, len(files), batch_size):
        batch = []
        for f in files[start : start + batch_size]:
            with Image.open(f) as img:
                img = TF.center_crop(TF.resize(img.convert("RGB"), size), size)
                batch.append(TF.to_tensor(img))
        yield torch.stack(batch)
