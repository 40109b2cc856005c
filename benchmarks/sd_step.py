"""One DI* training step on real-size SD1.5 / SDXL architectures with random weights (nothing is
downloaded): step time, images/s, peak GPU memory, and the step's ratio to its own floor -- the
sum of its passes, each timed on its own:

    generator forward (no grad, the assistant's samples) | assistant training fwd+bwd |
    assistant optimiser step | generator fwd+bwd | assistant fwd+bwd w.r.t. its input |
    reference CFG (cond + uncond in one batch) fwd+bwd w.r.t. its input |
    VAE decode + PickScore (ViT-H/14 size) fwd+bwd | generator optimiser step

The step is ``distar.loop.trainer.Trainer.train_step`` on an ``SDWorld`` built from in-memory random
networks (the same world class a real run loads from disk): one assistant round, pseudo-Huber
score divergence on the exact path, CFG ``in`` (7.5), PickScore reward, fp32 master weights
under bf16 autocast, fused Adam. Text embeddings are random tensors of the real shapes (no text
encoder runs: a run encodes each batch's prompts once, outside the passes measured here).

    python benchmarks/sd_step.py --arch sdxl --batch 2 --grad-ckpt
    python benchmarks/sd_step.py --arch sd15 --batch 8 --lora-rank 64
    python benchmarks/sd_step.py --arch sdxl --batch 4 --grad-ckpt --fsdp   # FSDP2, 1 GPU
    python benchmarks/sd_step.py --tiny --device cpu      # the script itself, on a laptop
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from distar.config.keys import K
from distar.config.tree import Config
from distar.loop.trainer import Trainer
from distar.method.losses import assistant_loss
from distar.method.sigmas import edm_weight
from distar.rewards.clip_scorers import ClipPairScorer
from distar.rewards.tiny_clip import tiny_clip_config
from distar.runtime.devices import to_device
from distar.runtime.step_parts import frozen
from distar.t2i.text import TextConditions
from distar.worlds.sd.loading import Components
from distar.worlds.sd.world import SDWorld

SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
    sample_size=64,
)
SDXL_UNET = dict(
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    cross_attention_dim=2048,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    sample_size=128,
)
TINY_UNET = dict(
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    cross_attention_dim=64,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 32,
    norm_num_groups=8,
    layers_per_block=1,
    sample_size=8,
)
# (UNet config, image side, text width, pooled width or 0, VAE widths, VAE scaling factor)
ARCHS = {
    "sd15": (SD15_UNET, 512, 768, 0, (128, 256, 512, 512), 0.18215),
    "sdxl": (SDXL_UNET, 1024, 2048, 1280, (128, 256, 512, 512), 0.13025),
    "tiny": (TINY_UNET, 64, 64, 32, (8, 8, 16, 16), 0.13025),
}


class RandomText(nn.Module):
    """Stands in for the text encoders: a fixed table of random embeddings of the real shapes."""

    def __init__(
        self, width: int, pooled: int, resolution: int, table: int = 16, tokens: int = 77
    ) -> None:
        super().__init__()
        self.register_buffer("embeds", torch.randn(table, tokens, width))
        self.register_buffer("pooled", torch.randn(table, pooled) if pooled else None)
        self.register_buffer("ids", torch.tensor([resolution, resolution, 0, 0] + [resolution] * 2))
        self.rows: dict[str, int] = {}

    def encode(self, prompts) -> TextConditions:
        rows = [self.rows.setdefault(p, len(self.rows) % len(self.embeds)) for p in prompts]
        idx = to_device(torch.tensor(rows), self.embeds.device)
        pooled = None if self.pooled is None else self.pooled[idx]
        time_ids = None if self.pooled is None else self.ids.float().expand(len(rows), 6)
        return TextConditions(tuple(prompts), self.embeds[idx], pooled, time_ids)

    def unconditional(self, cond: TextConditions, mode: str, empty: TextConditions):
        zeros = lambda t: None if t is None else torch.zeros_like(t)  # noqa: E731
        return TextConditions(cond.prompts, zeros(cond.embeds), zeros(cond.pooled), cond.time_ids)


class StubTokenizer:
    """PickScore's tokenizer, shape only (ids do not change the cost of the text tower)."""

    def __call__(self, prompts, **kwargs):
        n = len(prompts)
        return {
            "input_ids": torch.zeros(n, 77, dtype=torch.long),
            "attention_mask": torch.ones(n, 77, dtype=torch.long),
        }


def pickscore_sized(tiny: bool):
    from transformers import CLIPConfig, CLIPModel

    if tiny:
        config = tiny_clip_config()
    else:  # CLIP ViT-H/14, PickScore's architecture
        config = CLIPConfig(
            text_config=dict(
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                max_position_embeddings=77,
            ),
            vision_config=dict(
                hidden_size=1280,
                intermediate_size=5120,
                num_hidden_layers=32,
                num_attention_heads=16,
                image_size=224,
                patch_size=14,
            ),
            projection_dim=1024,
        )
    return ClipPairScorer("pickscore", CLIPModel(config), StubTokenizer())


def networks_sized(cls, config: dict, lora: bool) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """(fp32 generator, bf16 reference, fp32 copy assistant or None for LoRA) of ``cls`` at
    ``config``, all with the generator's random weights, on the current default device."""
    generator = cls(**config)
    reference = cls(**config).to(torch.bfloat16)
    reference.load_state_dict(generator.state_dict())
    assistant = None
    if not lora:
        assistant = cls(**config)
        assistant.load_state_dict(generator.state_dict())
    return generator, reference, assistant


def vae_sized(widths, side: int, tiny: bool, latent_channels: int, scaling: float, **options):
    """A random VAE of the real (or, ``tiny``, the tiny) layout: SD's, or with ``options``
    SD3's / FLUX's (shift factor, no quant convs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=widths,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1 if tiny else 2,
        norm_num_groups=4 if tiny else 32,
        latent_channels=latent_channels,
        sample_size=side,
        scaling_factor=scaling,
        **options,
    )


def components(arch: str, device: torch.device, lora: bool) -> Components:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet_cfg, side, width, pooled, vae_widths, scaling = ARCHS[arch]
    with torch.device(device):
        generator, reference, assistant = networks_sized(UNet2DConditionModel, unet_cfg, lora)
        vae = vae_sized(vae_widths, side, arch == "tiny", 4, scaling)
        scorer = pickscore_sized(arch == "tiny")
        text = RandomText(width, pooled, side)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return Components(
        sched.alphas_cumprod, "epsilon", reference, assistant, generator, vae, text, scorer
    )


def build(args) -> Trainer:
    arch = "tiny" if args.tiny else args.arch
    world_name = "sd15" if arch == "sd15" else "sdxl"
    lora = args.lora_rank > 0
    flat = {
        K.world.reference: "(random, in memory)",
        K.world.resolution: ARCHS[arch][1],
        K.world.generator_timestep: 999 if world_name == "sd15" else 399,
        K.world.grad_checkpointing: args.grad_ckpt,
        K.world.assistant: "lora" if lora else "copy",
        K.world.lora_rank: max(args.lora_rank, 1),
        K.world.lora_alpha: float(max(args.lora_rank, 1)),
        K.world.vae_dtype: args.vae_dtype,
        K.world.reward_resolution: 224 if arch != "tiny" else 32,
        K.world.dtype: "bf16",
        K.loss.cfg_scale: 7.5,
        K.loss.reward_scale: 100.0,
        K.loss.weighting: args.weighting,
        K.optim.assistant_rounds: 1,
        K.train.batch_size: args.batch,
        K.train.generator_chunk: args.chunk,
        K.train.device: args.device,
        K.train.log_every: 1_000_000,  # no logging step inside the timed steps
        K.train.out_dir: "/tmp/distar-sd-step",
        K.resources.strategy: "fsdp" if args.fsdp else "ddp",
        K.resources.cpu_offload: args.offload,
        K.eval.benchmarks: "",  # a step, not an evaluation
    }
    cfg = Config.for_world(world_name, flat)
    device = torch.device(args.device)
    world = SDWorld(cfg.world, device, components=components(arch, device, lora))
    return Trainer(cfg, world=world)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_passes(trainer: Trainer) -> dict[str, Callable[[], object]]:
    """The step's passes, each as a closure over fixed inputs of the step's shapes."""
    w, n, dev = trainer.world, trainer.config.train.batch_size, trainer.device
    rng, noise_rng = torch.Generator().manual_seed(0), trainer.draws.noise_rng
    cond = w.sample_conditions(n, rng)
    null = w.null_conditions(cond)
    z = w.sample_latents(n, noise_rng)
    with torch.no_grad():
        x0 = w.generator(z, cond)
    sigma = torch.full((n,), 1.0, device=dev)
    noise = torch.randn_like(x0)
    grad_out = torch.randn_like(x0)
    weight = edm_weight(sigma, w.sigma_data)
    params_a = trainer.method.params["assistant"]

    def generator_forward():
        with torch.no_grad():
            w.generator(z, cond)

    def assistant_training():
        assistant_loss(w.assistant, x0, sigma, noise, cond, weight).mean().backward()

    def generator_fwd_bwd():
        w.generator(z, cond).backward(grad_out)

    def assistant_input_grad():
        with frozen(params_a):
            x = (x0 + noise).requires_grad_(True)
            w.assistant(x, sigma, cond).backward(grad_out)

    def reference_cfg_input_grad():
        x = (x0 + noise).requires_grad_(True)
        d_c, d_null = w.reference_pair(x, sigma, cond, null)
        (d_c * grad_out + d_null * grad_out).sum().backward()

    def reward_fwd_bwd():
        x = x0.clone().requires_grad_(True)
        w.reward(x, cond).sum().backward()

    return {
        "generator forward (no grad)": generator_forward,
        "assistant training fwd+bwd": assistant_training,
        "assistant Adam step": trainer.method.opt_assistant.step,
        "generator fwd+bwd": generator_fwd_bwd,
        "assistant fwd+bwd w.r.t. input": assistant_input_grad,
        "reference CFG fwd+bwd w.r.t. input": reference_cfg_input_grad,
        "VAE decode + PickScore fwd+bwd": reward_fwd_bwd,
        "generator Adam step": trainer.method.opt_generator.step,
    }


def measure(args, trainer: Trainer | None = None) -> dict:
    """The step, its peak memory and its passes on ``trainer`` (default: :func:`build`'s)."""
    trainer = trainer or build(args)
    device = trainer.device
    # the networks were whole on the GPU before sharding: a start-up peak, but not quite a run's
    # (the reference is built in fp32 here and then cast, 8 B a parameter for a moment, and no
    # text encoder is loaded): plan --check's start-up column is indicative
    startup = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    for _ in range(args.warmup):
        trainer.train_step()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    step = timed(trainer.train_step, device, args.steps, warmup=0)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )
    passes = floor_passes(trainer)
    floor = {name: timed(fn, device, args.reps) for name, fn in passes.items()}
    total = sum(floor.values())
    return {
        "arch": "tiny" if args.tiny else args.arch,
        "batch": args.batch,
        "grad_ckpt": args.grad_ckpt,
        "lora_rank": args.lora_rank,
        "chunk": args.chunk,
        "fsdp": args.fsdp,
        "offload": args.offload,
        "weighting": args.weighting,
        "vae_dtype": args.vae_dtype,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "step_ms": 1000 * step,
        "images_per_s": args.batch / step,
        "peak_gib": peak,
        "startup_gib": startup,
        "floor_ms": 1000 * total,
        "step_over_floor": step / total,
        "passes_ms": {k: 1000 * v for k, v in floor.items()},
    }


def parser(arches: tuple[str, ...], default: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", choices=arches, default=default)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing everywhere")
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA assistant rank (0: full copy)")
    p.add_argument("--chunk", type=int, default=0, help=K.train.generator_chunk)
    p.add_argument("--vae-dtype", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--weighting", default="uniform", choices=("uniform", "dmd_normalised"))
    p.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny networks: check the script on CPU")
    p.add_argument(
        "--fsdp", action="store_true", help="resources.strategy=fsdp (FSDP2 at world size 1)"
    )
    p.add_argument("--offload", action="store_true", help="resources.cpu_offload (with --fsdp)")
    p.add_argument("--json", help="append the result as one JSON line to this file")
    return p


def report(r: dict, json_path: str | None) -> None:
    print(
        f"{r['arch']} batch {r['batch']} ckpt={r['grad_ckpt']} lora={r['lora_rank']} "
        f"fsdp={r['fsdp']} offload={r['offload']} chunk={r['chunk']} on "
        f"{r['device']}: step {r['step_ms']:.0f} ms, {r['images_per_s']:.2f} images/s, peak "
        f"{r['peak_gib']:.1f} GiB, floor {r['floor_ms']:.0f} ms, step/floor "
        f"{r['step_over_floor']:.2f}"
    )
    for name, ms in r["passes_ms"].items():
        print(f"    {name:40s} {ms:8.1f} ms")
    if json_path:
        with open(json_path, "a") as f:
            f.write(json.dumps(r) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parser(("sd15", "sdxl"), "sdxl").parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    report(measure(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
