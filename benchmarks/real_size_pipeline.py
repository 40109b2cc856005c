"""A real-size SDXL or SD1.5 diffusers pipeline folder with random weights (nothing downloads),
written with ``save_pretrained`` in fp16 so ``python -m analysis.table1 --models-dir`` times the
real architectures' inference per 10 images (the numbers of the images mean nothing; the time
is the architecture's). On a GPU (``benchmarks/gpu_checks.sh OUT table1``):

    python benchmarks/real_size_pipeline.py sdxl OUT/models
    python -m analysis.table1 --models-dir OUT/models --tiny --device cuda --benchmark parti:10 ...

writes ``OUT/models/stable-diffusion-xl-base-1.0`` (the SDXL-Base card's folder name) and links
``OUT/models/DMD2`` to it (the DMD2-SDXL card then samples the same UNet in one LCM step).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from distar.rewards.clip_common import clip_tokenizer, write_clip_bpe_tokenizer
from distar.worlds.flow.footprint import CLIP_BIGG, CLIP_L

sys.path.insert(0, str(Path(__file__).parent))
from sd_step import ARCHS, vae_sized  # noqa: E402  (the real-size UNet and VAE layouts)

FOLDERS = {"sdxl": "stable-diffusion-xl-base-1.0", "sd15": "stable-diffusion-v1-5"}


def text_encoders(arch: str) -> list:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    encoders = [CLIPTextModel(CLIPTextConfig(**CLIP_L))]
    if arch == "sdxl":  # SDXL's first encoder is CLIP-L, its second OpenCLIP bigG (projected)
        encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)))
    return encoders


def write(arch: str, out: Path) -> Path:
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    unet_cfg, side, _, _, vae_widths, scaling = ARCHS[arch]
    device = "cuda" if torch.cuda.is_available() else "cpu"  # random init is faster there
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg).half()
        vae = vae_sized(vae_widths, side, False, 4, scaling).half()
        encoders = [e.half() for e in text_encoders(arch)]
    tokenizer = clip_tokenizer(write_clip_bpe_tokenizer(out / "_tok"))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    parts = dict(vae=vae, unet=unet, scheduler=scheduler, text_encoder=encoders[0])
    if arch == "sdxl":
        pipe = StableDiffusionXLPipeline(
            **parts, text_encoder_2=encoders[1], tokenizer=tokenizer, tokenizer_2=tokenizer
        )
    else:
        pipe = StableDiffusionPipeline(
            **parts,
            tokenizer=tokenizer,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    folder = out / FOLDERS[arch]
    pipe.save_pretrained(folder, variant="fp16")
    shutil.rmtree(out / "_tok")
    if arch == "sdxl" and not (out / "DMD2").exists():
        (out / "DMD2").symlink_to(folder.resolve())
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("arch", choices=sorted(FOLDERS))
    p.add_argument("out", type=Path, help="the models folder to write into")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write(args.arch, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
