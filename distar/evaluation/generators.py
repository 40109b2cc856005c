"""Generators the evaluation command can build by name. ``tiny``: a random-init one-step
text-to-image model (CLIP text encoder -> FiLM-conditioned conv decoder) that exercises the whole
pipeline on a CPU; real one-step generators plug in through the same ``(prompts, noise)`` call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distar.rewards.clip_common import clip_tokenizer
from distar.util.registry import Registry

GENERATORS: Registry[Callable[..., nn.Module]] = Registry("generator")


class TinyTextToImage(nn.Module):
    """Noise ``[4, 8, 8]`` + prompt -> image ``[3, 64, 64]`` in [0, 1]."""

    noise_shape = (4, 8, 8)

    def __init__(self, text_encoder, tokenizer, width: int = 32) -> None:
        super().__init__()
        self.text_encoder, self.tokenizer = text_encoder.eval(), tokenizer
        text_dim = text_encoder.config.hidden_size
        self.film = nn.Linear(text_dim, 2 * width)
        self.stem = nn.Conv2d(self.noise_shape[0], width, 3, padding=1)
        self.ups = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(3))
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def embed(self, prompts: Sequence[str]) -> Tensor:
        device = self.film.weight.device
        tokens = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=77, return_tensors="pt"
        ).to(device)
        return self.text_encoder(**tokens).pooler_output

    def forward(self, prompts: Sequence[str], noise: Tensor) -> Tensor:
        scale, shift = self.film(self.embed(prompts)).chunk(2, dim=-1)
        h = F.silu(self.stem(noise) * (1 + scale[..., None, None]) + shift[..., None, None])
        for conv in self.ups:
            h = F.silu(conv(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        return torch.sigmoid(self.head(h))


@GENERATORS.register("tiny")
def tiny_generator(clip_dir: str | Path, seed: int = 0) -> TinyTextToImage:
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    text = CLIPTextModel.from_pretrained(clip_dir)
    return TinyTextToImage(text, clip_tokenizer(clip_dir))
