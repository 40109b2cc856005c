"""Scorers on a transformers ``CLIPModel``: PickScore, CLIP score, LAION aesthetic v2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from distar.rewards.clip_common import (
    check_pixel_range,
    clip_pixels,
    clip_tokenizer,
    from_pretrained_exactly,
    normalised,
    pooled,
)
from distar.rewards.heads import RewardHead, load_state_dict
from distar.runtime.devices import to_device


class ClipPairScorer(nn.Module):
    """``scale * cos(image embedding, text embedding)`` of a CLIP model (frozen).

    ``differentiable`` takes images in [0, 1] and passes gradients to the pixels (in-torch
    resize + normalisation); ``score`` is the evaluation path: the model's own image processor
    when there is one (as the published scorers do), no gradients.
    """

    def __init__(self, name, model, tokenizer, processor=None, scale=None, floor=None) -> None:
        super().__init__()
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.processor = processor
        self.fixed_scale = scale  # None: the model's learnt logit scale (PickScore)
        self.floor = floor
        self.image_size = model.config.vision_config.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def scale(self) -> Tensor:
        """The logit scale, in fp32 (see :meth:`cast`)."""
        if self.fixed_scale is None:
            return self.model.logit_scale.float().exp()
        return torch.tensor(self.fixed_scale, device=self.device)

    def cast(self, dtype: torch.dtype) -> ClipPairScorer:
        """The towers in ``dtype``, the learnt logit scale kept in fp32: bf16(ln 100) gives
        exp = 98.86, a score ~1 % low -- more than the paper's whole DMD2 -> DI* gain."""
        logit_scale = self.model.logit_scale.detach().float().clone()
        self.model.to(dtype)
        self.model.logit_scale.data = logit_scale
        return self

    def text_embeddings(self, prompts: Sequence[str]) -> Tensor:
        tokens = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=77, return_tensors="pt"
        )
        # input ids only: CLIP's text tower is causal and pools at the first end token, so the
        # padding mask changes nothing -- and checking it costs a host sync per call
        ids = to_device(tokens["input_ids"], self.device)
        return normalised(pooled(self.model.get_text_features(input_ids=ids)))

    def image_embeddings(self, pixel_values: Tensor) -> Tensor:
        return normalised(pooled(self.model.get_image_features(pixel_values=pixel_values)))

    def from_embeddings(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        score = self.scale() * (image_emb * text_emb).sum(-1)
        return score.clamp(min=self.floor) if self.floor is not None else score

    def differentiable(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        pixels = clip_pixels(images, self.image_size)
        return self.from_embeddings(self.image_embeddings(pixels), self.text_embeddings(prompts))

    @torch.no_grad()
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        check_pixel_range(images)
        if self.processor is None:
            return self.differentiable(images, prompts)
        arrays = list(images.detach().float().permute(0, 2, 3, 1).cpu().numpy())
        pixels = self.processor(images=arrays, do_rescale=False, return_tensors="pt")
        pixels = pixels["pixel_values"].to(self.device)
        return self.from_embeddings(self.image_embeddings(pixels), self.text_embeddings(prompts))


def load_clip(model_dir: Path, processor_dir: Path | None = None, empty: bool = False):
    """A transformers CLIP model, its tokenizer and (when the directory has one) its processor.
    ``empty``: the model built from its config on the meta device, its weights read by no one
    (they arrive from another rank)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per model load buries the run's own console
    if empty:
        with torch.device("meta"):
            model = CLIPModel(CLIPConfig.from_pretrained(model_dir))
    else:
        model = from_pretrained_exactly(CLIPModel, model_dir)
    processor_dir = processor_dir or model_dir
    tokenizer = clip_tokenizer(processor_dir)
    processor = None
    if (processor_dir / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(processor_dir)
    return model, tokenizer, processor


class AestheticScorer(nn.Module):
    """LAION aesthetic predictor v2: the MLP on the L2-normalised CLIP ViT-L/14 image embedding."""

    name = "aesthetic"

    def __init__(self, clip_model, head: RewardHead) -> None:
        super().__init__()
        self.clip = clip_model.eval().requires_grad_(False)
        self.head = head.eval().requires_grad_(False)
        self.image_size = clip_model.config.vision_config.image_size

    def differentiable(self, images: Tensor, prompts: Sequence[str] = ()) -> Tensor:
        pixels = clip_pixels(images, self.image_size)
        emb = normalised(pooled(self.clip.get_image_features(pixel_values=pixels)))
        return self.head(emb)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: Sequence[str] = ()) -> Tensor:
        check_pixel_range(images)
        return self.differentiable(images, prompts)

    @classmethod
    def load(cls, clip_dir: Path, head_file: Path) -> AestheticScorer:
        """Accepted layouts: a transformers CLIP folder (exactly: :func:`from_pretrained_exactly`)
        and LAION's head as its MLP class saves it (``layers.{0,2,4,6,7}.*``, ``torch.save`` or
        safetensors), loaded strictly."""
        from transformers import CLIPModel

        clip = from_pretrained_exactly(CLIPModel, clip_dir)
        head = RewardHead(clip.config.projection_dim)
        head.load_state_dict(load_state_dict(head_file))
        return cls(clip, head)
