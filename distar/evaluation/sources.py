"""What an evaluation scores, built from its typed :class:`~distar.config.tree.EvalConfig` the same
way in training, in ``python -m distar.cli.evaluate`` and on every Ray actor: the metric models
(each built once, shared by the benchmarks), the prompts of each benchmark, the harness options
and the generator (a distar run's checkpoint, a world preset's, a diffusers pipeline, or a random
tiny one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distar.config.benchmarks import BenchmarkRequest
from distar.config.tree import Config, EvalConfig
from distar.data import prompts as prompt_sets
from distar.data.prompts import PromptSet
from distar.evaluation.generators import GENERATORS
from distar.evaluation.harness import HarnessOptions
from distar.evaluation.metric_base import MetricOptions
from distar.evaluation.pipeline_generator import pipeline_generator
from distar.evaluation.preflight import weight_paths
from distar.evaluation.scorers import build_metric
from distar.rewards.tiny_clip import tiny_text_encoder
from distar.runtime.checkpoint import (
    checkpoint_config,
    generator_weights,
    load_trained_state,
    resolve_checkpoint,
)
from distar.worlds.base import EvalGenerator
from distar.worlds.builders import build_world


def metric_options(cfg: EvalConfig, device: str, cache_dir: str | None = None) -> MetricOptions:
    """Where each metric's weights are, where it runs, where FID caches reference statistics."""
    return MetricOptions(weight_paths(cfg), device, cache_dir or None, cfg.fid_protocol)


def build_metrics(requests: list[BenchmarkRequest], options: MetricOptions) -> dict[str, Any]:
    """Each metric of the requests once (loaded and moved to the device once)."""
    names = sorted({m for r in requests for m in r.metrics})
    return {name: build_metric(name, options) for name in names}


def benchmark_prompts(cfg: EvalConfig, request: BenchmarkRequest) -> PromptSet:
    path = cfg.prompt_paths().get(request.benchmark)
    return prompt_sets.select(request.benchmark, request.n, path, cfg.subset, cfg.seed)


def harness_options(cfg: EvalConfig, device: str, progress: bool = True) -> HarnessOptions:
    return HarnessOptions(
        cfg.seed, cfg.images_per_prompt, cfg.batch_size, device, progress=progress
    )


@dataclass(frozen=True)
class GeneratorSource:
    """Which generator ``python -m distar.cli.evaluate`` scores: a distar run's ``checkpoint`` (its
    checkpoints/ or step_* directory), a ``world`` preset's as configured (flat ``world.*``
    keys; ``world.generator_init`` may name a UNet directory or state dict), a diffusers
    ``pipeline`` (flat ``pipeline.*`` keys: :class:`~distar.config.pipelines.PipelineConfig`), or
    else the random tiny text-to-image model (its CLIP text encoder from ``tiny_text_encoder`` or
    written)."""

    checkpoint: str = ""
    world: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    tiny_text_encoder: str = ""
    seed: int = 0


def build_generator(source: GeneratorSource, device: str, workdir: Path) -> EvalGenerator:
    if source.checkpoint:
        return checkpoint_generator(Path(source.checkpoint), device)
    if source.pipeline:
        return pipeline_generator(source.pipeline, device)
    if source.world:
        world = build_world(Config.from_flat(source.world).world, torch.device(device))
        return world.eval_generator()
    clip_dir = source.tiny_text_encoder or tiny_text_encoder(
        workdir / "generator_text", source.seed + 1
    )
    return GENERATORS.get("tiny")(clip_dir, source.seed).to(device)


def checkpoint_generator(path: Path, device: str) -> EvalGenerator:
    """Rebuild the run's world from the checkpoint's config and load its trained generator
    (its EMA's weights when the run kept one: what its evaluations scored)."""
    path = resolve_checkpoint(path)
    config = checkpoint_config(path)
    if not config.world.text_to_image:
        raise ValueError(f"{path}: the {config.world.name!r} world has no text-to-image generator")
    world = build_world(config.world, torch.device(device))
    load_trained_state(world.generator, generator_weights(path), f"{path} (generator)")
    return world.eval_generator()
