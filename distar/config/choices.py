"""The allowed values of the library's config fields that pick an implementation or a mode,
in one place (a world's own fields keep theirs beside its section: ``distar/config/gmm.py``,
``sd.py``). The config validates against them without importing torch; the registries that hold
the implementations (:mod:`distar.method.losses`, :mod:`distar.method.sigmas`) are made with
these very tuples and refuse to import while one lacks its implementation
(:meth:`distar.util.registry.Registry.complete`)."""

from __future__ import annotations

DIVERGENCES = ("kl", "score")
DISTANCES = ("l2", "pseudo_huber")
DISTANCE_ON = ("score", "x0")
GUIDANCE_MODES = ("in", "out")
CFG_CONVENTIONS = ("diffusers", "distar")
GRADIENT_PATHS = ("detached", "exact")
STRATEGIES = ("ddp", "fsdp")  # resources.strategy; distar.runtime.sharding does "fsdp"
GENERATOR_WEIGHTINGS = ("dmd_normalised", "uniform")
SIGMA_DISTRIBUTIONS = ("lognormal", "loguniform")
ASSISTANT_WEIGHTINGS = ("edm", "uniform", "velocity")
DEVICES = ("auto", "cpu", "cuda")
