"""An image grid PNG of a batch of generated images (for the run's plots)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import Tensor


def save_grid(images: Tensor, path: Path, pad: int = 2) -> Path:
    """``images`` [B, 3, H, W] in [0, 1] -> one PNG, rows of up to ceil(sqrt(B))."""
    from PIL import Image

    arr = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round()
    b, h, w, _ = arr.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(arr.astype(np.uint8)):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = img
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path
