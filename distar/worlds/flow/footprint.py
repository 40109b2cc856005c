"""What the flow worlds cost a GPU (torch-free): SD3.5-Large's and FLUX.1's sizes and per-image
activation *estimates*, registered with :mod:`distar.worlds.cost_model`. No step of either has
been measured yet: the planner prints their memory (estimated) and no speed.

Sizes: parameters counted on the meta device from diffusers' ``SD3Transformer2DModel`` (38
joint blocks, width 2432) and ``FluxTransformer2DModel`` (19 joint + 38 single blocks, width
3072), transformers' T5-XXL encoder (4.76 B), the CLIP text encoders (L 123 M, bigG 695 M), the
16-channel VAE (83.8 M); LoRA at rank 64 on the ``joint_attention`` targets; FSDP unit = the
largest block (SD3.5: a joint block, 0.213 B; FLUX: a joint block, 0.340 B).

Activations (GiB per image at 1024 px, the unit the SD rows calibrate): with checkpointing per
block a network pass keeps each block's input, ``blocks x tokens x width x 2 B`` (bf16), until
its backward; the generator step holds four passes (generator, assistant, and the reference's
CFG pair, batched twice over, all differentiated to their input on the exact path), one block's
recomputation (~20 x a block input) and the VAE decoder, whose activations are SDXL's measured
ones (the same decoder; 16 latent channels touch only its first conv). Without checkpointing a
block keeps ~15 x its input. Chunked, one generator pass per image and one image's loss graph.
These are estimates from shapes, not measurements: ``benchmarks/flow_step.py --arch sd35|flux``
on a GPU measures them. Under FSDP the flow worlds are built on the host and sharded onto
the GPU block by block (their start-up holds shards, not whole networks).
"""

from __future__ import annotations

from distar.worlds.cost_model import ARCHES, GIB, Arch

# the real transformers' configurations (their config.json), for counts and benchmarks
SD35_LARGE = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=38,
    attention_head_dim=64,
    num_attention_heads=38,
    joint_attention_dim=4096,
    caption_projection_dim=2432,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
    qk_norm="rms_norm",
)
FLUX_DEV = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
# the text encoders' configurations (transformers' CLIPTextConfig / T5Config fields)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)
CLIP_L.update(num_attention_heads=12, projection_dim=768)
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32)
CLIP_BIGG.update(num_attention_heads=20, projection_dim=1280)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
T5_XXL.update(feed_forward_proj="gated-gelu")
PASSES = 4  # generator, assistant, reference x 2 (CFG pair) held to their backward
RECOMPUTE = 20  # one block's activations while recomputed, in block inputs (estimate)
FULL = 15  # a block's activations without checkpointing, in block inputs (estimate)
SDXL_VAE = (6.84, 11.11)  # the decoder's GiB per image at 1024 px, checkpointed / not
VAE = 83.8e6
ESTIMATED = "activations estimated from shapes (distar/worlds/flow/footprint.py), not measured"


def flow_arch(name: str, sizes: tuple[float, float, float, float], shape: tuple[int, int, int]):
    """An :class:`Arch` from (transformer, FSDP unit, text encoders, LoRA r64) parameters and
    (tokens per image, width, blocks) at 1024 px (see the module docstring)."""
    network, unit, text, lora = sizes
    tokens, width, blocks = shape
    per_pass = blocks * tokens * width * 2 / GIB
    block = RECOMPUTE * tokens * width * 2 / GIB
    vae_ckpt, vae_full = SDXL_VAE
    return Arch(
        name,
        1024,
        network,
        unit,
        text,
        VAE,
        lora,
        act_ckpt=vae_ckpt + PASSES * per_pass + block,
        act_full=vae_full + FULL * PASSES * per_pass,
        chunk_img_ckpt=per_pass,
        chunk_fixed_ckpt=vae_ckpt + (PASSES - 1) * per_pass + block,
        chunk_img_full=FULL * per_pass,
        chunk_fixed_full=vae_full + FULL * (PASSES - 1) * per_pass,
        vae_act_ckpt=vae_ckpt,
        vae_act_full=vae_full,
        estimated=ESTIMATED,
        shards_from_host=True,
    )


# SD3.5-Large: 4096 image tokens + 77 CLIP + 256 T5; CLIP-L + bigG + T5-XXL
ARCHES["sd35"] = flow_arch("sd35", (8.057e9, 0.213e9, 5.580e9, 94.3e6), (4096 + 333, 2432, 38))
# FLUX.1-dev / schnell: 4096 image tokens + 512 T5; CLIP-L + T5-XXL
ARCHES["flux"] = flow_arch("flux", (11.901e9, 0.340e9, 4.885e9, 104.6e6), (4096 + 512, 3072, 57))
