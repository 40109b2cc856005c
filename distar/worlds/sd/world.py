"""The ``sd15`` and ``sdxl`` worlds: DI* on Stable Diffusion latents through diffusers.

- reference: the pipeline's UNet, frozen, stored in ``world.dtype`` (bf16), as an EDM denoiser;
- assistant: a full trainable copy of the reference (fp32 master weights), or peft LoRA adapters
  on the reference's own UNet (``world.assistant=lora``): adapters off *is* the reference, so one
  set of frozen weights serves both;
- generator: DMD2's one-step map ``G(z) = D_theta(sqrt(1 + sigma_g^2) z; sigma_g)``, fp32 master;
- conditions: prompts with their text embeddings (:mod:`distar.t2i.text`);
- reward: PickScore on VAE-decoded images, differentiable to the latents.
Compute runs under autocast in ``world.dtype``; gradient checkpointing on every UNet and on the
VAE decoder when ``world.grad_checkpointing``.
"""

from __future__ import annotations

import torch
from torch import nn

from distar.config.sd import SDWorldConfig
from distar.data.prompts import training_prompts
from distar.runtime.distributed import is_distributed, rank
from distar.runtime.sharding import shard_network
from distar.runtime.step_parts import check_noise_range
from distar.t2i.edm import DTYPES, DDPMSchedule, OneStepGenerator, UNetDenoiser
from distar.t2i.parts import load_schedule, place_module
from distar.worlds.base import WORLD_CHECKS, WORLDS
from distar.worlds.sd import loading
from distar.worlds.text_image import TextImageWorld, check_init, check_prompts, warn

SIGMA_DATA = 0.5  # EDM's value for SD latents (scaled by the VAE's scaling factor)
DMD2_FILES = {  # the one-step generators DI* starts from (huggingface tianweiy/DMD2)
    "sdxl": "dmd2_sdxl_1step_unet.bin (or _fp16.bin)",
    "sd15": "model/sdv1.5/.../pytorch_model.bin (the generator of a DMD2 SD1.5 checkpoint)",
}
MULTI_STEP_START = (
    "world.generator_init is empty, so the {name} generator starts from the "
    "multi-step reference UNet, whose one-step samples are blurry; DI* starts from DMD2's "
    "one-step UNet: set world.generator_init to tianweiy/DMD2's {file}"
)


class SDWorld(TextImageWorld):
    def __init__(
        self,
        cfg: SDWorldConfig,
        device: torch.device,
        init: str = "stage0",
        components: loading.Components | None = None,
    ) -> None:
        check_init(init)
        self.prompts = training_prompts(cfg.prompts)  # a bad prompt file fails before loading
        # under torch.distributed rank 0 alone reads the weights; the others build every network
        # empty and receive rank 0's: one host copy of the weights per run, not one per rank
        receives = is_distributed() and rank() != 0
        parts = components or loading.load_components(cfg, empty=receives)
        if not cfg.generator_init and not cfg.reference.startswith("tiny:") and not receives:
            warn(MULTI_STEP_START.format(name=cfg.name, file=DMD2_FILES[cfg.name]))
        self.config, self.device = cfg, device
        self.dtype = DTYPES[cfg.dtype]
        self.sigma_data = SIGMA_DATA
        self.prediction_type = parts.prediction_type
        self.schedule = DDPMSchedule(parts.alphas_cumprod)
        self.sigma_range = (self.schedule.sigma_min, self.schedule.sigma_max)
        timestep = cfg.generator_timestep
        self.build_networks(parts, lambda denoiser: OneStepGenerator(denoiser, timestep))
        self.attach(parts.text, parts.scorer)

    # ---- construction ------------------------------------------------------------------
    def _denoiser(self, unet: nn.Module) -> UNetDenoiser:
        if self.config.grad_checkpointing:
            unet.enable_gradient_checkpointing()
        unet = place_module(unet, self.device)
        return UNetDenoiser(unet, self.schedule, self.prediction_type, self.dtype)

    def shard(self, offload: bool) -> None:
        """FSDP2 on every UNet (:func:`distar.runtime.sharding.shard_network`), per attention and
        resnet of each down / mid / up block, then per block (its samplers), then whole: SDXL's
        first up-block alone is 47 % of the UNet (1.2 B parameters), its attentions 0.35 B
        each, so a forward gathers at most ~0.7 GiB of bf16 weights at a time. The VAE, text
        encoders and scorer are frozen and small beside them: every rank keeps a full copy."""
        unets = [(self.generator.denoiser.unet, True), (self.assistant.unet, True)]
        if self.config.assistant != "lora":  # a LoRA assistant's UNet *is* the reference's
            unets.append((self._reference.unet, False))
        for unet, trained in unets:
            units = []
            for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
                units += [*(getattr(block, "attentions", None) or []), *block.resnets, block]
            shard_network(unet, units, self.device, self.dtype, trained, offload)


def build(
    cfg: SDWorldConfig, device: torch.device, init: str = "stage0", sharded: bool = False
) -> SDWorld:
    """An SD world, placed on the device whether or not it is sharded next (the largest,
    SDXL, starts unsharded in 40 GiB with a copy assistant: distar.cli.plan)."""
    return SDWorld(cfg, device, init)


def check(config) -> None:
    """The training prompts, the reference folder's layout and weight files, the VAE's upcast
    rule, the reward's files, a state-dict ``generator_init`` against the reference UNet, and
    the noise ranges against the reference's schedule; no weight is read."""
    cfg = config.world
    check_init(config.train.init)
    check_prompts(cfg)
    paths = loading.check_paths(cfg)
    loading.check_generator_init(paths)
    schedule = DDPMSchedule(load_schedule(paths.reference)[0])
    check_noise_range(config.noise, (schedule.sigma_min, schedule.sigma_max))


WORLDS.add("sd15", build)
WORLDS.add("sdxl", build)
WORLD_CHECKS.add("sd15", check)
WORLD_CHECKS.add("sdxl", check)
