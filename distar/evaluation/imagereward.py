"""ImageReward (Xu et al., 2023) rebuilt from transformers' BLIP modules.

The ``image-reward`` PyPI package pins transformers 4.x-era internals (``med.py``) and does not
import beside transformers 5, so we rebuild its published architecture from kept parts:
BLIP ViT-L/16 image encoder (``BlipVisionModel``) -> BERT text encoder with cross-attention to the
image tokens (``BlipTextModel``, the port of BLIP's ``med.py``) -> the [CLS] state -> MLP head ->
``(r - 0.16717362830052426) / 1.0333394966054072``. Weights: the original ``ImageReward.pt``
state dict (keys ``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``mlp.layers.*``), renamed
to transformers' names below. The publisher's module writes a few tensors the score never uses
(:data:`UNUSED_KEYS`): those are skipped by name; any other key left unmatched is an error, and
a missing one fails the strict loads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from distar.rewards.clip_common import check_pixel_range, clip_pixels
from distar.rewards.heads import RewardHead, load_state_dict

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TOKENS = 35
# What ImageReward.pt holds that the score never reads, by name: the state dict of the
# publisher's ``ImageReward`` module (image-reward 1.5, loaded there with strict=False) includes
# BLIP_Pretrain's contrastive projections (``ImageReward/models/BLIP/blip_pretrain.py``:
# ``self.vision_proj`` / ``self.text_proj``, Linear(width, 256)) and the text embeddings'
# persistent ``position_ids`` buffer (``ImageReward/models/BLIP/med.py``, BertEmbeddings)
UNUSED_KEYS = (
    "blip.vision_proj.weight",
    "blip.vision_proj.bias",
    "blip.text_proj.weight",
    "blip.text_proj.bias",
    "blip.text_encoder.embeddings.position_ids",
)
PROJECTION_WIDTH = 256  # BLIP_Pretrain's embed_dim

# BLIP's VisionTransformer names <-> transformers' BlipVisionModel names, both ways (loading a
# checkpoint; writing a tiny one in the original layout). A name ending in "." renames a prefix;
# "{i}" is a block index.
VISION_NAMES = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.", "embeddings.patch_embedding."),
    ("blocks.{i}.norm1.", "encoder.layers.{i}.layer_norm1."),
    ("blocks.{i}.norm2.", "encoder.layers.{i}.layer_norm2."),
    ("blocks.{i}.attn.qkv.", "encoder.layers.{i}.self_attn.qkv."),
    ("blocks.{i}.attn.proj.", "encoder.layers.{i}.self_attn.projection."),
    ("blocks.{i}.mlp.", "encoder.layers.{i}.mlp."),
    ("norm.", "post_layernorm."),
)


def rename_vision_key(key: str, to_original: bool = False) -> str:
    """A vision key in transformers' names (or, ``to_original``, back in BLIP's)."""
    for blip, ours in VISION_NAMES:
        source, target = (ours, blip) if to_original else (blip, ours)
        pattern = "^" + re.escape(source).replace(r"\{i\}", r"(\d+)")
        new, n = re.subn(
            pattern + ("" if source.endswith(".") else "$"), target.replace("{i}", r"\1"), key
        )
        if n:
            return new
    raise KeyError(f"ImageReward checkpoint: no BlipVisionModel name for visual_encoder.{key}")


def split_checkpoint(state: dict[str, Tensor]) -> tuple[dict, dict, dict]:
    """ImageReward.pt -> (vision, text, head) state dicts in transformers' / our names."""
    vision, text, head = {}, {}, {}
    for key, value in state.items():
        if key in UNUSED_KEYS:
            continue
        if key.startswith("blip.visual_encoder."):
            vision[rename_vision_key(key.removeprefix("blip.visual_encoder."))] = value
        elif key.startswith("blip.text_encoder."):
            text[key.removeprefix("blip.text_encoder.")] = value
        elif key.startswith("mlp."):
            head[key.removeprefix("mlp.")] = value
        else:
            raise KeyError(f"ImageReward checkpoint: unexpected key {key}")
    return vision, text, head


class ImageRewardScorer(nn.Module):
    name = "imagereward"

    def __init__(self, vision, text, head: RewardHead, tokenizer) -> None:
        super().__init__()
        self.vision = vision.eval().requires_grad_(False)
        self.text = text.eval().requires_grad_(False)
        self.head = head.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = vision.config.image_size

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def differentiable(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        image_tokens = self.vision(pixel_values=clip_pixels(images, self.image_size))[0]
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        ).to(self.device)
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=self.device)
        hidden = self.text(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=image_mask,
        )[0]
        return (self.head(hidden[:, 0, :].float()) - REWARD_MEAN) / REWARD_STD

    @torch.no_grad()
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        check_pixel_range(images)
        return self.differentiable(images, prompts)

    @classmethod
    def build(cls, vision_config, text_config, tokenizer) -> ImageRewardScorer:
        from transformers import BlipTextModel, BlipVisionModel

        text = BlipTextModel(text_config, add_pooling_layer=False)
        return cls(
            BlipVisionModel(vision_config), text, RewardHead(text_config.hidden_size), tokenizer
        )

    @classmethod
    def load(cls, checkpoint: Path, tokenizer_dir: Path, configs=None) -> ImageRewardScorer:
        """``configs``: (BlipVisionConfig, BlipTextConfig); default: ImageReward v1.0's."""
        vision_config, text_config = configs or imagereward_configs()
        model = cls.build(vision_config, text_config, blip_tokenizer(tokenizer_dir))
        vision, text, head = split_checkpoint(load_state_dict(checkpoint))
        model.vision.load_state_dict(vision)
        model.text.load_state_dict(text)
        model.head.load_state_dict(head)
        return model


def imagereward_configs():
    """ImageReward v1.0: BLIP ViT-L/16 at 224 px (eps 1e-6) and BLIP's ``med_config.json``."""
    from transformers import BlipTextConfig, BlipVisionConfig

    vision = BlipVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
    )
    text = BlipTextConfig(
        vocab_size=30524,
        hidden_size=768,
        encoder_hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=512,
        layer_norm_eps=1e-12,
    )
    return vision, text


def blip_tokenizer(directory: Path):
    """bert-base-uncased's WordPiece vocabulary plus BLIP's two added tokens ([DEC], [ENC])."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(directory)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer
