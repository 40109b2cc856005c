"""The ``sd35`` and ``flux`` worlds: DI* on a rectified-flow teacher through diffusers.

- reference: the pipeline's transformer (``SD3Transformer2DModel`` / ``FluxTransformer2DModel``),
  frozen, in ``world.dtype``, as an EDM denoiser (:class:`distar.t2i.flow_nets.FlowDenoiser`);
- assistant: a full trainable copy (fp32 masters), or peft LoRA on the reference's own
  transformer (adapters off *is* the reference);
- generator: the teacher's Euler step from pure noise, ``G(z) = z - t_g v(z, t_g)``, fp32 masters;
- conditions: :class:`distar.t2i.text.FlowTextEncoders`; reward: PickScore on decoded images.

What CFG ``in`` / ``out`` (``loss.cfg_scale`` = alpha, ``loss.guidance``) mean here:

- SD3.5 has true CFG: ``D(x; null)`` is the transformer on the empty prompt's embeddings
  (``world.uncond``), exactly as on SD1.5 / SDXL.
- FLUX.1-dev is guidance-distilled: it was trained so that ``v_g`` (guidance value ``g``) matches
  the teacher guided at ``g``, ``v_u + g (v_c - v_u)``; no unconditional branch exists. So
  ``v_1`` is the conditional teacher and ``(v_g - v_1) / (g - 1)`` the CFG direction per unit
  of guidance. distar defines, with ``g = world.guidance`` (3.5):
  ``D(x; c) = D_1`` and ``D(x; null) = D_1 - (D_g - D_1) / (g - 1)``,
  so that ``loss.cfg_scale`` alpha means what it means on SD1.5 / SDXL / SD3.5: ``in`` at alpha
  is the teacher at guidance ``1 + alpha`` (diffusers' ``guidance_scale``): exactly ``D_g`` at
  ``alpha = g - 1`` (the peers' setting: FastGen and DanceGRPO feed 3.5 and run no CFG; the
  ``flux`` preset's default), linear in the guidance value elsewhere (exact where ``v_g`` is
  affine in ``g``); ``out``'s implicit-reward direction is ``(D_g - D_1) / (g - 1)``, the
  estimate of ``D_c - D_u`` the distillation implies. Two transformer forwards, as SD3.5's CFG.
  The generator and the assistant are fed ``g`` (a fixed input of the networks they copy).
- FLUX.1-schnell has no guidance input and no unconditional branch: ``loss.cfg_scale > 0`` is
  refused before anything loads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distar.config.flow import FlowWorldConfig
from distar.config.keys import K
from distar.config.tree import ConfigError
from distar.data.prompts import training_prompts
from distar.runtime.distributed import is_distributed, rank
from distar.runtime.sharding import shard_from_rank0, shard_network
from distar.runtime.step_parts import check_noise_range
from distar.t2i.edm import DTYPES
from distar.t2i.flow_nets import FlowDenoiser, OneStepFlowGenerator
from distar.t2i.parts import place_module
from distar.t2i.text import TextConditions
from distar.worlds.base import WORLD_CHECKS, WORLDS
from distar.worlds.flow import loading
from distar.worlds.text_image import TextImageWorld, check_init, check_prompts

# the VAEs' scaling factors make SD3's and FLUX's latents unit-variance
SIGMA_DATA = 1.0
# the times the teachers were trained on, t in [0.001, 0.999] (FastGen's range), as EDM sigma
SIGMA_RANGE = (0.001 / 0.999, 0.999 / 0.001)
SCHNELL_CFG = (
    "{key}: got {value}; allowed: 0 on FLUX.1-schnell (its transformer has no guidance input "
    "and no unconditional branch, so DI*'s CFG has nothing to act on)"
)


def sd3_velocity(transformer: nn.Module, x_t: Tensor, t: Tensor, cond, guidance) -> Tensor:
    """SD3's transformer takes ``t x 1000`` (its scheduler's timesteps); it has no guidance
    input (``guidance`` is None: the world passes none)."""
    return transformer(
        hidden_states=x_t,
        encoder_hidden_states=cond.embeds,
        pooled_projections=cond.pooled,
        timestep=t * 1000,
    ).sample


def pack(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> FLUX's ``[B, H/2 W/2, 4C]`` tokens (``FluxPipeline._pack_latents``)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: Tensor, h: int, w: int) -> Tensor:
    """The inverse of :func:`pack` (``FluxPipeline._unpack_latents`` in latent units)."""
    b, _, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device: torch.device) -> Tensor:
    """FLUX's positions of the packed tokens: (0, row, column) (``_prepare_latent_image_ids``)."""
    ids = torch.zeros(h // 2, w // 2, 3, device=device)
    ids[..., 1] = torch.arange(h // 2, device=device)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device)[None, :]
    return ids.reshape(-1, 3)


def flux_velocity(transformer: nn.Module, x_t: Tensor, t: Tensor, cond, guidance) -> Tensor:
    """FLUX's transformer takes ``t`` in [0, 1] and the guidance value as they are (it scales
    both by 1000 inside, after casting them to its hidden states' dtype: under bf16 autocast
    they are rounded to bf16 there, as in diffusers' own pipeline), packed latents and the text
    tokens' (zero) positions."""
    h, w = x_t.shape[-2:]
    out = transformer(
        hidden_states=pack(x_t),
        encoder_hidden_states=cond.embeds,
        pooled_projections=cond.pooled,
        timestep=t,
        guidance=guidance,
        img_ids=image_ids(h, w, x_t.device),
        txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=x_t.device),
    ).sample
    return unpack(out, h, w)


VELOCITY = {"sd35": sd3_velocity, "flux": flux_velocity}


class FlowWorld(TextImageWorld):
    def __init__(
        self,
        cfg: FlowWorldConfig,
        device: torch.device,
        init: str = "stage0",
        components: loading.Components | None = None,
        sharded: bool = False,
    ) -> None:
        check_init(init)
        # sharded next: the transformers stay on the host (rank 0) or the meta device (the
        # others) and reach the device shard by shard (shard()); FLUX's three would not fit an
        # 80 GB card unsharded (distar.cli.plan)
        self.placed = not sharded
        self.prompts = training_prompts(cfg.prompts)  # a bad prompt file fails before loading
        receives = is_distributed() and rank() != 0  # rank 0 reads, the others receive
        parts = components or loading.load_components(cfg, empty=receives)
        self.config, self.device = cfg, device
        self.dtype = DTYPES[cfg.dtype]
        self.sigma_data, self.sigma_range = SIGMA_DATA, SIGMA_RANGE
        # the guidance value FLUX.1-dev's networks are fed; None: no guidance input
        self.guidance = cfg.guidance if parts.guidance_embeds else None
        time = cfg.generator_time
        self.build_networks(parts, lambda denoiser: OneStepFlowGenerator(denoiser, time))
        self.attach(parts.text, parts.scorer)

    def _transformers(self) -> list[tuple[nn.Module, bool]]:
        """(transformer, trained) of each denoiser with weights of its own."""
        out = [(self.generator.denoiser.transformer, True), (self.assistant.transformer, True)]
        if self.config.assistant != "lora":  # a LoRA assistant's transformer *is* the reference's
            out.append((self._reference.transformer, False))
        return out

    def host_networks(self) -> list[nn.Module]:
        if self.placed:
            return []
        return [self.generator, self.assistant] + (
            [] if self.config.assistant == "lora" else [self._reference]
        )

    # ---- construction ------------------------------------------------------------------
    def _denoiser(self, transformer: nn.Module) -> FlowDenoiser:
        if self.config.grad_checkpointing:
            transformer.enable_gradient_checkpointing()
        if self.placed:
            transformer = place_module(transformer, self.device)
        call = VELOCITY[self.config.name]
        return FlowDenoiser(transformer, call, self.dtype, self.guidance)

    def shard(self, offload: bool) -> None:
        """FSDP2 per transformer block (SD3.5-Large: 38 joint blocks of ~0.2 B parameters; FLUX:
        19 joint and 38 single blocks of ~0.3 B and ~0.14 B), then the whole transformer; from
        the host when the world was built for it (:func:`shard_from_rank0`). The VAE, text
        encoders and scorer are frozen: every rank keeps a full copy."""
        shard = shard_network if self.placed else shard_from_rank0
        for transformer, trained in self._transformers():
            blocks = [*transformer.transformer_blocks]
            blocks += [*getattr(transformer, "single_transformer_blocks", [])]
            shard(transformer, blocks, self.device, self.dtype, trained, offload)
        self.placed = True

    # ---- what the training loop calls ---------------------------------------------------
    def reference(self, x: Tensor, sigma: Tensor, cond: TextConditions) -> Tensor:
        """``D(x; c)``: on FLUX.1-dev the teacher at guidance 1 (the module docstring)."""
        if self.guidance is None:
            return self._reference(x, sigma, cond)
        return self._reference(x, sigma, cond, guidance=torch.ones_like(sigma))

    def reference_pair(self, x, sigma, cond: TextConditions, null: TextConditions):
        """``(D(x; c), D(x; null))`` from one transformer forward on the batch twice over; on
        FLUX.1-dev the pair defined in the module docstring (``null`` is ``cond`` there)."""
        if self.config.name == "sd35":
            return super().reference_pair(x, sigma, cond, null)
        n, x2, sigma2 = len(x), torch.cat([x, x]), torch.cat([sigma, sigma])
        if self.guidance is None:
            raise ConfigError(SCHNELL_CFG.format(key=K.loss.cfg_scale, value="a CFG scale"))
        g = self.guidance
        values = torch.cat([torch.ones(n), torch.full((n,), g)]).to(x.device)
        both = self._reference(x2, sigma2, cond.cat(cond), guidance=values)
        d_1, d_g = both[:n], both[n:]
        return d_1, d_1 - (d_g - d_1) / (g - 1)

    def null_conditions(self, cond: TextConditions) -> TextConditions:
        """SD3.5: the empty prompt's (or zero) embeddings. FLUX has no unconditional branch:
        ``cond`` itself, whose guidance-``g`` forward :meth:`reference_pair` runs."""
        if self.config.name == "flux":
            return cond
        return super().null_conditions(cond)


def build(
    cfg: FlowWorldConfig, device: torch.device, init: str = "stage0", sharded: bool = False
) -> FlowWorld:
    return FlowWorld(cfg, device, init, sharded=sharded)


def check(config) -> None:
    """The prompts, the reference folder's layout and weight files, the reward's files, the
    noise ranges against the teacher's times, and CFG against FLUX.1-schnell; no weight read."""
    cfg = config.world
    check_init(config.train.init)
    check_prompts(cfg)
    paths = loading.check_paths(cfg)
    check_noise_range(config.noise, SIGMA_RANGE)
    cfg_scale = config.loss.cfg_scale
    if cfg.name == "flux" and cfg_scale > 0 and not loading.guidance_embeds(paths, cfg.name):
        raise ConfigError(SCHNELL_CFG.format(key=K.loss.cfg_scale, value=cfg_scale))


for _name in ("sd35", "flux"):
    WORLDS.add(_name, build)
    WORLD_CHECKS.add(_name, check)
