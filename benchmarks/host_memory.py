"""Peak host memory of loading an SD world on one rank: a rank that reads the weights (rank 0,
and before distar sent weights from rank 0, every rank) against one that builds every network on
the meta device and receives rank 0's (``load_components(empty=True)``). Each is measured in a
fresh process (peak resident set, ``VmHWM``; Linux); an 8-GPU node holds one of the first and seven
of the second.

    python benchmarks/host_memory.py --reference /models/sdxl-base     # your pipeline folder
    python benchmarks/host_memory.py --arch sd15                        # random real-size SD1.5
    python benchmarks/host_memory.py --tiny                             # the script itself

``--arch`` writes a random real-size pipeline (UNet, text encoder, VAE; no reward model) into
``--cache`` once (SD1.5: ~4 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from distar.config.keys import K
from distar.config.tree import Config

GIB = 2**30


def write_random_sd15(path: Path) -> None:
    """A real-size SD1.5-shaped pipeline with random weights (diffusers' default UNet and VAE
    configs are SD1.5's; CLIP-L text encoder), saved as a user's download would be."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from distar.worlds.sd.tiny_pipelines import tiny_tokenizer

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tiny_tokenizer(path / "_tok"),
        unet=UNet2DConditionModel(sample_size=64, cross_attention_dim=768),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)


def measure_one(reference: str, world: str, empty: bool) -> float:
    """Peak GiB of this process loading the world's components: its VmHWM, which (unlike
    ru_maxrss, kept across fork and exec) counts this program alone."""
    from distar.worlds.sd.loading import load_components

    flat = {K.world.reference: reference, K.world.reward: "none"}
    load_components(Config.for_world(world, flat).world, empty=empty)
    status = Path("/proc/self/status").read_text().splitlines()
    kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kib * 1024 / GIB


def measure(reference: str, world: str, empty: bool) -> float:
    code = (
        "import sys, json; sys.path.insert(0, 'benchmarks'); import host_memory as h; "
        f"print(json.dumps(h.measure_one({reference!r}, {world!r}, {empty})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reference", help="an SD1.5 or SDXL pipeline folder")
    p.add_argument("--world", default="sd15", choices=("sd15", "sdxl"), help="its world")
    p.add_argument("--arch", choices=("sd15",), help="write a random real-size pipeline")
    p.add_argument("--tiny", action="store_true", help="the tiny SD1.5 pipeline")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "distar")
    args = p.parse_args(argv)
    if args.tiny:
        from distar.worlds.sd.tiny_pipelines import resolve

        reference, world = resolve("tiny:sd15"), "sd15"
    elif args.arch:
        folder = args.cache / "random-sd15-real-size"
        if not (folder / "model_index.json").exists():
            print(f"writing a random real-size SD1.5 pipeline to {folder} ...", flush=True)
            write_random_sd15(folder)
        reference, world = str(folder), "sd15"
    elif args.reference:
        reference, world = args.reference, args.world
    else:
        p.error("give --reference DIR, --arch sd15 or --tiny")
    reads = measure(reference, world, empty=False)
    receives = measure(reference, world, empty=True)
    result = {
        "world": world,
        "reads_gib": reads,
        "receives_gib": receives,
        "node_of_8_before_gib": 8 * reads,
        "node_of_8_after_gib": reads + 7 * receives,
    }
    print(
        f"{world}: peak host memory of a rank that reads the weights {reads:.2f} GiB, of one "
        f"that receives them {receives:.2f} GiB; an 8-GPU node: {8 * reads:.1f} GiB before "
        f"(every rank read), {reads + 7 * receives:.1f} GiB now"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
