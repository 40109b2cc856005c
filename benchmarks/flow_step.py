"""One DI* training step on real-size SD3.5-Large / FLUX.1-dev transformers with random weights
(nothing is downloaded), measured as ``benchmarks/sd_step.py`` measures the SD worlds: step
time, images/s, peak GPU memory (start-up and step), and the step's ratio to its passes' floor.

The world is ``distar.worlds.flow.world.FlowWorld`` built from in-memory random networks (the
class a real run loads from disk), with the presets' options: the teacher's Euler step as the
generator, pseudo-Huber on the exact path, CFG ``in`` (SD3.5: 7.5; FLUX: 2.5, the teacher at its
guidance 3.5), PickScore reward, fp32 masters under bf16 autocast. Text embeddings are random
tensors of the real shapes (77 + 256 tokens x 4096 and pooled 2048 for SD3.5; 512 x 4096 and
768 for FLUX). With ``--fsdp`` the transformers are built on the host and sharded onto the GPU
block by block (``distar.runtime.sharding.shard_from_rank0``), as a sharded run starts.

    python benchmarks/flow_step.py --arch sd35 --batch 1 --grad-ckpt --lora-rank 64 --fsdp
    python benchmarks/flow_step.py --arch flux --batch 1 --grad-ckpt --lora-rank 64 --fsdp --offload
    python benchmarks/flow_step.py --tiny --device cpu      # the script itself, on a laptop
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from distar.config.keys import K
from distar.config.tree import Config
from distar.loop.trainer import Trainer
from distar.worlds.flow.footprint import FLUX_DEV, SD35_LARGE
from distar.worlds.flow.loading import Components
from distar.worlds.flow.world import FlowWorld

sys.path.insert(0, str(Path(__file__).parent))
import sd_step  # noqa: E402  (the shared measurement: timed passes, report)

TINY_FLUX = dict(FLUX_DEV, num_layers=1, num_single_layers=1, attention_head_dim=16)
TINY_FLUX.update(num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32)
TINY_FLUX.update(axes_dims_rope=(4, 6, 6))
# world: (transformer config, image side, text tokens, text width, pooled width, VAE widths,
# VAE scaling and shift factors, CFG scale alpha)
ARCHS = {
    "sd35": ("sd35", SD35_LARGE, 1024, 333, 4096, 2048, (128, 256, 512, 512), 1.5305, 0.0609, 7.5),
    "flux": ("flux", FLUX_DEV, 1024, 512, 4096, 768, (128, 256, 512, 512), 0.3611, 0.1159, 2.5),
    "tiny": ("flux", TINY_FLUX, 64, 16, 64, 32, (8, 8, 16, 16), 0.3611, 0.1159, 2.5),
}


def components(arch: str, where: torch.device, lora: bool) -> Components:
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    world, config, side, tokens, width, pooled, vae_widths, scale, shift, _ = ARCHS[arch]
    cls = SD3Transformer2DModel if world == "sd35" else FluxTransformer2DModel
    flow_vae = dict(shift_factor=shift, use_quant_conv=False, use_post_quant_conv=False)
    with torch.device(where):
        generator, reference, assistant = sd_step.networks_sized(cls, config, lora)
        vae = sd_step.vae_sized(vae_widths, side, arch == "tiny", 16, scale, **flow_vae)
        scorer = sd_step.pickscore_sized(arch == "tiny")
        text = sd_step.RandomText(width, pooled, side, tokens=tokens)
    guidance = bool(config.get("guidance_embeds"))
    return Components(reference, assistant, generator, vae, text, scorer, guidance)


def build(args) -> Trainer:
    arch = "tiny" if args.tiny else args.arch
    world_name, side, alpha = ARCHS[arch][0], ARCHS[arch][2], ARCHS[arch][-1]
    lora = args.lora_rank > 0
    flat = {
        K.world.reference: "(random, in memory)",
        K.world.resolution: side,
        K.world.grad_checkpointing: args.grad_ckpt,
        K.world.assistant: "lora" if lora else "copy",
        K.world.lora_rank: max(args.lora_rank, 1),
        K.world.lora_alpha: float(max(args.lora_rank, 1)),
        K.world.vae_dtype: args.vae_dtype,
        K.world.reward_resolution: 224 if arch != "tiny" else 32,
        K.world.dtype: "bf16",
        K.loss.cfg_scale: alpha,
        K.loss.reward_scale: 100.0,
        K.loss.weighting: args.weighting,
        K.optim.assistant_rounds: 1,
        K.train.batch_size: args.batch,
        K.train.generator_chunk: args.chunk,
        K.train.device: args.device,
        K.train.log_every: 1_000_000,  # no logging step inside the timed steps
        K.train.out_dir: "/tmp/distar-flow-step",
        K.resources.strategy: "fsdp" if args.fsdp else "ddp",
        K.resources.cpu_offload: args.offload,
        K.eval.benchmarks: "",  # a step, not an evaluation
    }
    cfg = Config.for_world(world_name, flat)
    device = torch.device(args.device)
    where = torch.device("cpu") if args.fsdp else device  # sharded: built on the host
    parts = components(arch, where, lora)
    world = FlowWorld(cfg.world, device, components=parts, sharded=args.fsdp)
    return Trainer(cfg, world=world)


def main(argv: list[str] | None = None) -> int:
    args = sd_step.parser(("sd35", "flux"), "flux").parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    sd_step.report(sd_step.measure(args, build(args)), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
