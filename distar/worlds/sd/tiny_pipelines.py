"""Tiny random SD1.5- and SDXL-shaped pipelines, written with diffusers' and
transformers' ``save_pretrained`` into the cache, so the ``sd15-tiny`` / ``sdxl-tiny`` worlds load
them through exactly the code a user's real directories go through (offline, CPU, seconds).

Shapes follow diffusers' own pipeline tests (``get_dummy_components``) with a four-block VAE, so
latents are 1/8 of the image side as in the real models. Text encoders use the real CLIP BPE
vocabulary (from open_clip's package), so any prompt tokenises.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from distar.rewards.clip_common import (
    clip_tokenizer,
    hub_layout_tokenizers,
    write_clip_bpe_tokenizer,
)
from distar.rewards.tiny_clip import TINY_PICKSCORE, tiny_clip_config
from distar.t2i.parts import tiny_folder, tiny_vae

TINY_VERSION = "3"  # bump when a tiny component changes, so stale caches are not reused
TINY_WRITERS = {
    "sd15": (__name__, TINY_VERSION),
    "sdxl": (__name__, TINY_VERSION),
    **TINY_PICKSCORE,
}
# what the tiny SD1.5- and SDXL-shaped UNets share: two levels, 8x8 latents
TINY_UNET = dict(
    block_out_channels=(16, 32),
    layers_per_block=1,
    sample_size=8,
    in_channels=4,
    out_channels=4,
    norm_num_groups=8,
)


def resolve(spec: str, cache_dir: str = "") -> str:
    """``tiny:<name>`` (an SD pipeline or PickScore) -> its cache folder; other paths unchanged."""
    return tiny_folder(spec, cache_dir, TINY_WRITERS)


def tiny_text(projection: bool):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = tiny_clip_config().text_config
    config.projection_dim = 32
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def tiny_tokenizer(directory: Path):
    return clip_tokenizer(write_clip_bpe_tokenizer(directory))


def write_sd15(path: Path) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(4, 0.18215),
        text_encoder=tiny_text(projection=False),
        tokenizer=tiny_tokenizer(path / "_tok"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    hub_layout_tokenizers(path, path / "_tok")


def write_sdxl(path: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled width
        cross_attention_dim=64,  # TE1 hidden 32 + TE2 hidden 32
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    tokenizer = tiny_tokenizer(path / "_tok")
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(4, 0.13025),
        text_encoder=tiny_text(projection=False),
        text_encoder_2=tiny_text(projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(path)
    hub_layout_tokenizers(path, path / "_tok")


WRITERS = {"sd15": write_sd15, "sdxl": write_sdxl}


def main(argv: list[str]) -> None:
    """``NAME DIRECTORY``: write that tiny pipeline (:func:`distar.util.cache.materialise`)."""
    WRITERS[argv[0]](Path(argv[1]))


if __name__ == "__main__":  # python -m distar.worlds.sd.tiny_pipelines NAME DIRECTORY
    main(sys.argv[1:])
