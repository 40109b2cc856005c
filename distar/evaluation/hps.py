"""HPSv2.1: an open_clip ViT-H-14 fine-tuned on human preferences (Wu et al., 2023).

As in the ``hpsv2`` package: build the architecture, load ``checkpoint["state_dict"]`` from
``HPS_v2.1_compressed.pt``, score = <image features, text features> of the L2-normalised
embeddings. We report it x100 (the paper's tables print 27-33); ``hps/<style>`` means are the
benchmark's per-style numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distar.rewards.clip_common import (
    CLIP_MEAN,
    CLIP_STD,
    check_pixel_range,
    clip_pixels,
    normalised,
)
from distar.rewards.heads import load_state_dict


def longest_side_padded(images: Tensor, size: int) -> Tensor:
    """hpsv2's ``ResizeMaxSize(size, fill=0)`` (hpsv2 1.2.0, ``hpsv2/src/open_clip/transform.py``):
    the longer side resized to ``size`` (bicubic), then zero padding to a centred square, before
    normalisation. A square image is a plain resize; stretching a 48 x 40 one instead moved its
    score by 0.075."""
    h, w = images.shape[-2:]
    if h == w:
        return images
    scale = size / max(h, w)
    new_h, new_w = round(h * scale), round(w * scale)
    resized = F.interpolate(images, (new_h, new_w), mode="bicubic", antialias=True)
    pad_h, pad_w = size - new_h, size - new_w
    return F.pad(resized, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class HPSv2Scorer(nn.Module):
    name = "hpsv21"

    def __init__(self, model, tokenizer) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        size = model.visual.image_size
        self.image_size = size[0] if isinstance(size, tuple | list) else size
        cfg = getattr(model.visual, "preprocess_cfg", {})
        self.mean = tuple(cfg.get("mean", CLIP_MEAN))
        self.std = tuple(cfg.get("std", CLIP_STD))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def differentiable(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        pixels = clip_pixels(
            longest_side_padded(images, self.image_size), self.image_size, self.mean, self.std
        )
        image_emb = normalised(self.model.encode_image(pixels))
        text_emb = normalised(self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)))
        return 100.0 * (image_emb * text_emb).sum(-1)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        check_pixel_range(images)
        return self.differentiable(images, prompts)

    @classmethod
    def load(cls, checkpoint: Path, arch: str = "ViT-H-14") -> HPSv2Scorer:
        """Accepted layouts: the dict hpsv2's ``save_ckpt`` writes (``state_dict`` read, its
        ``iterations`` / ``name`` / ``optimizer`` ignored), or a bare open_clip state dict; a
        ``module.`` prefix (a DDP-wrapped save) is stripped. Loaded strictly, as hpsv2 does."""
        import open_clip

        model = open_clip.create_model(arch, pretrained=None)  # the checkpoint holds every weight
        state = load_state_dict(checkpoint)
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        return cls(model, open_clip.get_tokenizer(arch))
