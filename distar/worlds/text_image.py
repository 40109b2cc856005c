"""What every text-to-image world shares above its networks (:class:`TextImageWorld`): prompts
and their conditions, VAE decoding, the PickScore reward in its unit, generation, evaluation and
the image grid; and the checks of the reward's and the prompts' files. A world subclass builds
the networks (``generator``, ``assistant``, the reference) and says how to shard them."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distar.config.t2i import TextImageWorldConfig
from distar.config.tree import ConfigError
from distar.data.prompts import training_prompts
from distar.rewards.pickscore import pickscore_paths
from distar.rewards.weights import MissingWeightsError
from distar.runtime.distributed import broadcast_networks
from distar.t2i.edm import DTYPES, autocast
from distar.t2i.lora import SharedReference, add_lora
from distar.t2i.parts import WorldLoadError, cast, place_module
from distar.t2i.text import TextConditions
from distar.util.images import image_grid

EVAL_CHUNK = 8


def check_init(init: str) -> None:
    if init != "stage0":
        raise ConfigError(
            "train.init: got 'random'; allowed: 'stage0' (a text-to-image world's generator "
            "starts from world.generator_init, or from the reference network when that is empty)"
        )


def check_prompts(cfg: TextImageWorldConfig) -> None:
    try:
        training_prompts(cfg.prompts)
    except (OSError, ValueError) as error:
        raise WorldLoadError(str(error)) from None


def reward_paths(cfg: TextImageWorldConfig, model: str) -> tuple[Path | None, Path | None]:
    """The PickScore model and processor folders the world will load (``model``: the
    ``world.reward_model`` with ``tiny:`` resolved), with the ``$DISTAR_PICKSCORE*`` fallbacks;
    ``(None, None)`` for ``world.reward=none``. Raises :class:`WorldLoadError`."""
    if cfg.reward == "none":
        return None, None
    try:
        return pickscore_paths(model, cfg.reward_processor)
    except MissingWeightsError as error:
        raise WorldLoadError(f"world.reward_model / world.reward_processor: {error}") from None


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class TextImageWorld:
    """The shared half of a text-to-image world. ``__init__`` of a subclass sets ``config``,
    ``device``, ``dtype``, builds its networks and ``vae``, then calls :meth:`attach`."""

    config: TextImageWorldConfig
    placed = True  # every network on the device, every rank with rank 0's weights
    device: torch.device
    dtype: torch.dtype
    generator: nn.Module
    _reference: nn.Module  # the reference denoiser D(x, sigma, cond)
    vae: nn.Module
    vae_scale: int

    def networks(self) -> list[nn.Module]:
        """Every network of the world, each once (a LoRA assistant shares the reference's)."""
        nets = [self.generator, self.assistant, self.vae, self.text]
        if self.config.assistant != "lora":
            nets.append(self._reference)
        return nets + ([self.scorer] if self.scorer is not None else [])

    def frozen_networks(self) -> list[nn.Module]:
        """The reference beside a copy assistant (a LoRA assistant's reference is the trained
        network, gathered unit by unit: holding it whole would add its bf16 copy to the peak)."""
        return [] if self.config.assistant == "lora" else [self._reference]

    def host_networks(self) -> list[nn.Module]:
        """The networks left on the host until ``shard`` (none unless ``placed`` is False)."""
        return []

    def attach(self, text: nn.Module, scorer) -> None:
        """Place the text encoders and the scorer, give every rank rank 0's weights of every
        network, then cast the scorer and encode the empty prompt once."""
        self.text = place_module(text, self.device)
        self.scorer = scorer
        if scorer is not None:
            place_module(scorer, self.device)
        on_host = self.host_networks()  # those get rank 0's weights in shard()
        broadcast_networks([n for n in self.networks() if not any(n is h for h in on_host)])
        if scorer is not None:  # after the broadcast, which carries the fp32 logit scale
            scorer.cast(self.dtype)
        self.empty = self.text.encode([""])

    def _denoiser(self, network: nn.Module) -> nn.Module:
        """The world's denoiser ``D(x, sigma, cond)`` on a UNet or a transformer."""
        raise NotImplementedError

    def build_networks(self, parts, make_generator: Callable[[nn.Module], nn.Module]) -> None:
        """Reference (frozen, compute dtype), assistant (a fp32 copy, or LoRA on the reference:
        adapters off *is* the reference), generator (``make_generator`` of its fp32 denoiser)
        and VAE from ``parts`` (``reference``, ``assistant``, ``generator``, ``vae``)."""
        cfg = self.config
        reference = cast(parts.reference, self.dtype).eval().requires_grad_(False)
        if cfg.assistant == "lora":
            add_lora(reference, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
            self.assistant = self._denoiser(reference)
            self._reference = SharedReference(self.assistant, reference)
        else:
            self._reference = self._denoiser(reference)
            assistant = cast(parts.assistant, torch.float32).requires_grad_(True)
            self.assistant = self._denoiser(assistant)
        generator = cast(parts.generator, torch.float32).requires_grad_(True)
        self.generator = make_generator(self._denoiser(generator))
        self.vae = place_module(cast(parts.vae, DTYPES[cfg.vae_dtype]), self.device)
        self.vae.eval().requires_grad_(False)
        if cfg.grad_checkpointing:
            self.vae.enable_gradient_checkpointing()
        self.check_resolution()

    def check_resolution(self) -> None:
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if self.config.resolution % self.vae_scale:
            raise ConfigError(
                f"world.resolution: got {self.config.resolution}; "
                f"allowed: a multiple of {self.vae_scale}"
            )

    # ---- what the training loop calls ---------------------------------------------------
    def reference(self, x: Tensor, sigma: Tensor, cond: TextConditions) -> Tensor:
        return self._reference(x, sigma, cond)

    def reference_pair(self, x, sigma, cond: TextConditions, null: TextConditions):
        """``(D(x; c), D(x; null))`` from one forward on the batch twice over."""
        both = self._reference(torch.cat([x, x]), torch.cat([sigma, sigma]), cond.cat(null))
        return both[: len(x)], both[len(x) :]

    def sample_conditions(
        self, n: int, rng: torch.Generator, keep: slice | None = None
    ) -> TextConditions:
        idx = torch.randint(0, len(self.prompts), (n,), generator=rng).tolist()
        return self.text.encode([self.prompts[i] for i in idx[keep or slice(None)]])

    def null_conditions(self, cond: TextConditions) -> TextConditions:
        return self.text.unconditional(cond, self.config.uncond, self.empty)

    def latent_shape(self) -> tuple[int, int, int]:
        side = self.config.resolution // self.vae_scale
        return (self.vae.config.latent_channels, side, side)

    def sample_latents(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(n, *self.latent_shape(), generator=rng, device=rng.device)

    def decode(self, x0: Tensor) -> Tensor:
        """Latents -> images in [0, 1], differentiable (VAE decoder under autocast)."""
        cfg = self.vae.config
        latents = x0 / cfg.scaling_factor
        if getattr(cfg, "shift_factor", None):
            latents = latents + cfg.shift_factor
        with autocast(self.device, DTYPES[self.config.vae_dtype]):
            images = self.vae.decode(latents.to(self.vae.dtype)).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def in_reward_units(self, logits: Tensor) -> Tensor:
        """PickScore logits (scale x cosine) in ``world.reward_units``."""
        if self.config.reward_units == "logit":
            return logits
        return logits / self.scorer.scale()

    def reward(self, x0: Tensor, cond: TextConditions) -> Tensor:
        """PickScore of the decoded images in ``world.reward_units`` (the cosine by default),
        resized to ``world.reward_resolution`` first; differentiable to ``x0``."""
        if self.scorer is None:
            return torch.zeros(len(x0), device=x0.device)
        images = self.decode(x0)
        size = self.config.reward_resolution
        if images.shape[-1] != size:
            images = F.interpolate(images, (size, size), mode="bicubic", antialias=True)
        with autocast(self.device, self.dtype):
            logits = self.scorer.differentiable(images.clamp(0, 1), cond.prompts).float()
        return self.in_reward_units(logits)

    # ---- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[str], seed: int) -> Tensor:
        """Images in [0, 1] for ``prompts``; noise from one seeded host generator."""
        rng = torch.Generator().manual_seed(seed)
        z = torch.randn(len(prompts), *self.latent_shape(), generator=rng).to(self.device)
        out = []
        for i in range(0, len(prompts), EVAL_CHUNK):
            cond = self.text.encode(prompts[i : i + EVAL_CHUNK])
            out.append(self.decode(self.generator(z[i : i + EVAL_CHUNK], cond)))
        return torch.cat(out)

    def eval_generator(self, resolution: int = 0) -> EvalImages:
        """The current generator as the evaluation harness sees it: (prompts, noise) -> images
        (resized to ``resolution`` when it is not 0)."""
        return EvalImages(self, resolution)

    def eval_prompts(self, samples_per_prompt: int) -> list[str]:
        fixed = self.prompts[: self.config.eval_prompts]
        return [p for p in fixed for _ in range(samples_per_prompt)]

    def item_scores(self, samples_per_prompt: int, seed: int) -> None:
        """None: a text world's items are its benchmarks' per-sample rows (eval.benchmarks)."""
        return None

    def evaluate(self, samples_per_prompt: int, seed: int) -> dict[str, float]:
        """Mean reward (PickScore in ``world.reward_units``, the scorer's evaluation
        preprocessing) of the fixed prompts."""
        prompts = self.eval_prompts(samples_per_prompt)
        images = self.generate(prompts, seed)
        if self.scorer is None:
            return {"reward": 0.0}
        logits = torch.cat(
            [
                self.scorer.score(images[i : i + EVAL_CHUNK], prompts[i : i + EVAL_CHUNK])
                for i in range(0, len(prompts), EVAL_CHUNK)
            ]
        )
        scores = self.in_reward_units(logits.float())
        return {"reward": scores.mean().item(), "reward_std": scores.std().item()}

    def plot(self, path: Path, samples_per_prompt: int, seed: int) -> Path:
        prompts = self.eval_prompts(1)[:16]
        images = self.generate(prompts, seed)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        image_grid(images, columns=math.ceil(math.sqrt(len(images)))).save(path)
        return path


class EvalImages:
    """``noise_shape`` and ``(prompts, noise) -> images in [0, 1]`` (the harness's Generator)."""

    def __init__(self, world: TextImageWorld, resolution: int = 0) -> None:
        self.world, self.resolution = world, resolution
        self.noise_shape = world.latent_shape()

    @torch.no_grad()
    def __call__(self, prompts, noise: Tensor) -> Tensor:
        w = self.world
        images = w.decode(w.generator(noise.to(w.device), w.text.encode(list(prompts))))
        if self.resolution and images.shape[-1] != self.resolution:
            size = (self.resolution, self.resolution)
            images = F.interpolate(images, size, mode="bicubic", antialias=True).clamp(0, 1)
        return images
