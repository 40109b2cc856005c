"""Tiny random SD3.5- and FLUX-shaped pipelines, written with diffusers' ``save_pretrained`` into
the cache, so ``sd35-tiny`` / ``flux-tiny`` load them through exactly the code a user's real
folders go through (offline, CPU, seconds).

The shapes follow diffusers' own pipeline tests (``get_dummy_components``): a 16-channel VAE with
four levels (latents 1/8 of the image side, SD3's and FLUX's scaling and shift factors), CLIP
text encoders on the real CLIP BPE vocabulary, and a tiny T5 v1.1 encoder that uses the same
tokenizer (T5's SentencePiece model is not shipped anywhere offline; the pipeline only needs token
ids). ``flux_schnell`` is FLUX without the guidance embedding (FLUX.1-schnell's layout).
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

TINY_VERSION = "2"  # bump when a tiny component changes, so stale caches are not reused
TINY_WRITERS = {n: (__name__, TINY_VERSION) for n in ("sd35", "flux", "flux_schnell")}
TINY_WRITERS |= TINY_PICKSCORE
CLIP_WIDTH = 32  # the tiny CLIP text encoders' hidden and projection width
T5_WIDTH = 64  # >= SD3's two CLIPs side by side (2 x 32): they are zero-padded to T5's width


def resolve(spec: str, cache_dir: str = "") -> str:
    """``tiny:<name>`` (a flow pipeline or PickScore) -> its cache folder; other paths unchanged."""
    return tiny_folder(spec, cache_dir, TINY_WRITERS)


def flow_vae(scaling_factor: float, shift_factor: float):
    """SD3's / FLUX's VAE layout: 16 channels, a shift factor, no quant convs."""
    options = dict(shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False)
    return tiny_vae(16, scaling_factor, **options)


def tiny_clip_text(projection: bool):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = tiny_clip_config().text_config
    config.projection_dim = CLIP_WIDTH
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def tiny_t5():
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=tiny_clip_config().text_config.vocab_size,
        d_model=T5_WIDTH,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as T5-XXL in SD3 and FLUX
    )
    return T5EncoderModel(config)


def write_sd35(path: Path) -> None:
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=16,
        pooled_projection_dim=2 * CLIP_WIDTH,
        out_channels=16,
        pos_embed_max_size=16,
        qk_norm="rms_norm",  # SD3.5's
    )
    tok = clip_tokenizer(write_clip_bpe_tokenizer(path / "_tok"))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=flow_vae(1.5305, 0.0609),
        text_encoder=tiny_clip_text(projection=True),
        tokenizer=tok,
        text_encoder_2=tiny_clip_text(projection=True),
        tokenizer_2=tok,
        text_encoder_3=tiny_t5(),
        tokenizer_3=tok,
    )
    pipe.save_pretrained(path)
    hub_layout_tokenizers(path, path / "_tok")


def write_flux(path: Path, guidance: bool = True) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels x a 2 x 2 patch, packed
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 6, 6),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15
    )
    tok = clip_tokenizer(write_clip_bpe_tokenizer(path / "_tok"))
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=flow_vae(0.3611, 0.1159),
        text_encoder=tiny_clip_text(projection=False),
        tokenizer=tok,
        text_encoder_2=tiny_t5(),
        tokenizer_2=tok,
        transformer=transformer,
    )
    pipe.save_pretrained(path)
    hub_layout_tokenizers(path, path / "_tok")


WRITERS = {
    "sd35": write_sd35,
    "flux": write_flux,
    "flux_schnell": lambda path: write_flux(path, guidance=False),
}


def main(argv: list[str]) -> None:
    """``NAME DIRECTORY``: write that tiny pipeline (:func:`distar.util.cache.materialise`)."""
    WRITERS[argv[0]](Path(argv[1]))


if __name__ == "__main__":  # python -m distar.worlds.flow.tiny_pipelines NAME DIRECTORY
    main(sys.argv[1:])
