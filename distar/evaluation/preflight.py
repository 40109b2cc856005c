"""Every prompt file and weight file an evaluation config needs, checked up front and
torch-free, so a missing one fails a run or a sweep before anything starts -- naming the file,
not trial 7 after an hour."""

from __future__ import annotations

import os

from distar import prompts as prompt_sets
from distar.config import ConfigError, EvalConfig
from distar.evaluation.metric_files import METRIC_FILES
from distar.rewards.weights import MissingWeightsError


def weight_paths(cfg: EvalConfig) -> dict[str, str]:
    """``eval.weights``, over the tiny metric models' files when ``eval.tiny_metrics``."""
    paths = cfg.weight_paths()
    if cfg.tiny_metrics:  # written once into $DISTAR_CACHE, not again by every run and actor
        from distar.evaluation.tiny_metrics import cached_tiny_metric_paths  # torch

        paths = {**cached_tiny_metric_paths(), **paths}
    return paths


def preflight(cfg: EvalConfig) -> None:
    """Load every prompt set and resolve every weight file the config needs; raise
    :class:`ConfigError` naming the first missing or malformed one."""
    requests = cfg.requests()
    if not requests:
        return
    paths = weight_paths(cfg)
    for r in requests:
        try:
            prompt_sets.load(r.benchmark, cfg.prompt_paths().get(r.benchmark))
        except (OSError, ValueError) as error:
            raise ConfigError(f"eval.prompts ({r.benchmark}): {error}") from None
        for metric in r.metrics:
            for key, weight_file, required in METRIC_FILES[metric]:
                if not required and not (paths.get(key) or os.environ.get(weight_file.env)):
                    continue
                try:
                    weight_file.resolve(paths.get(key))
                except MissingWeightsError as error:
                    raise ConfigError(f"eval.weights ({metric}): {error}") from None
