"""Image grids of generated batches: run plots and MLflow image artifacts."""

from __future__ import annotations

from torch import Tensor


def image_grid(images: Tensor, columns: int = 8):
    """[N, 3, H, W] in [0, 1] -> one PIL image, ``columns`` images a row."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    return to_pil_image(
        make_grid(images.detach().float().cpu().clamp(0, 1), nrow=columns, padding=2)
    )
