"""Every prompt file and weight file an evaluation config needs, checked up front and
torch-free, so a missing one fails a run or a sweep before anything starts -- naming the file,
not trial 7 after an hour."""

from __future__ import annotations

import os

from distar.config.benchmarks import FID_PROTOCOLS, BenchmarkRequest
from distar.config.tree import ConfigError, EvalConfig
from distar.data import prompts as prompt_sets
from distar.evaluation.metric_files import METRIC_FILES, PROTOCOL_FID_FILES
from distar.rewards.weights import MissingWeightsError


def weight_paths(cfg: EvalConfig) -> dict[str, str]:
    """``eval.weights``, over the tiny metric models' files when ``eval.tiny_metrics``."""
    paths = cfg.weight_paths()
    if cfg.tiny_metrics:  # written once into $DISTAR_CACHE, not again by every run and actor
        from distar.evaluation.tiny_metrics import cached_tiny_metric_paths  # torch

        paths = {**cached_tiny_metric_paths(), **paths}
    return paths


def active_requests(cfg: EvalConfig) -> list[BenchmarkRequest]:
    """What an evaluation runs: ``eval.benchmarks`` less the optional ones (``hps?``) whose
    prompts are not found (no path, variable or shipped copy)."""
    paths = cfg.prompt_paths()
    found = prompt_sets.available
    return [
        r for r in cfg.requests() if not r.optional or found(r.benchmark, paths.get(r.benchmark))
    ]


def preflight(cfg: EvalConfig) -> None:
    """Load every prompt set and resolve every weight file the config needs; raise
    :class:`ConfigError` naming the first missing or malformed one. An optional benchmark
    without prompts is named on stdout, once, here (stderr is for refusals)."""
    requests = active_requests(cfg)
    skipped = [r.benchmark for r in cfg.requests() if r not in requests]
    for name in skipped:
        where = f"set {prompt_sets.ENV[name]} or eval.prompts={name}=PATH"
        print(f"note: eval.benchmarks: {name}? skipped, no prompts ({where})")
    if not requests:
        return
    if cfg.fid_protocol:
        check_protocol_captions(cfg)
    paths = weight_paths(cfg)
    for r in requests:
        try:
            prompt_sets.load(r.benchmark, cfg.prompt_paths().get(r.benchmark))
        except (OSError, ValueError) as error:
            raise ConfigError(f"eval.prompts ({r.benchmark}): {error}") from None
        for metric in r.metrics:
            protocol = metric == "fid" and cfg.fid_protocol
            files = PROTOCOL_FID_FILES if protocol else METRIC_FILES[metric]
            for key, weight_file, required in files:
                if not required and not (paths.get(key) or os.environ.get(weight_file.env)):
                    continue
                try:
                    weight_file.resolve(paths.get(key))
                except MissingWeightsError as error:
                    skip = f"or leave {metric} out of eval.metrics"
                    raise ConfigError(f"eval.weights ({metric}): {error} ({skip})") from None


def check_protocol_captions(cfg: EvalConfig) -> None:
    """Under ``eval.fid_protocol`` the COCO captions are the protocol's whole file: its count,
    and its sha256 where the protocol's file is public."""
    protocol = FID_PROTOCOLS[cfg.fid_protocol]
    file = prompt_sets.file_of("coco", cfg.prompt_paths().get("coco"))
    count = len(prompt_sets.load_coco(file))
    problem = ""
    if count != protocol.images:
        problem = f"{count} captions in {file}, the protocol has {protocol.images}"
    elif protocol.captions_sha256 and prompt_sets.sha256_of(file) != protocol.captions_sha256:
        problem = f"{file} is not the protocol's file (sha256 differs)"
    if problem:
        where = f"eval.prompts (coco) under eval.fid_protocol={protocol.name}"
        raise ConfigError(f"{where}: {problem}; use {protocol.captions}")
