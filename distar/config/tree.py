"""One typed, validated configuration tree for a DI* run.

Every section is a frozen dataclass validated on construction. The whole tree round-trips to a
flat ``{"loss.reward_scale": 10.0, ...}`` dict (Tune's ``param_space``, MLflow params) and to YAML.
Any unknown key or out-of-range value raises :class:`ConfigError` naming the field and what is
allowed, so a bad sweep fails before a single trial starts.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from distar.config.benchmarks import (
    BENCHMARK_METRICS,
    EVAL_METRICS,
    FID_PROTOCOLS,
    WEIGHT_KEYS,
    BenchmarkRequest,
    benchmark_requests,
    parse_benchmarks,
    parse_pairs,
)
from distar.config.choices import (
    ASSISTANT_WEIGHTINGS,
    CFG_CONVENTIONS,
    DEVICES,
    DISTANCE_ON,
    DISTANCES,
    DIVERGENCES,
    GENERATOR_WEIGHTINGS,
    GRADIENT_PATHS,
    GUIDANCE_MODES,
    SIGMA_DISTRIBUTIONS,
    STRATEGIES,
)
from distar.config.sections import (  # noqa: F401  (re-exported: the config API)
    ConfigError,
    Section,
    WorldConfig,
    WorldPreset,
    check_choice,
    check_range,
    fail,
    flatten,
    parse_override,
    register_preset,
    register_world_config,
    unflatten,
)
from distar.config.worlds import WORLD_CONFIGS, WORLD_PRESETS

DEFAULT_WORLD = "gmm"
# keys renamed since runs were recorded: an old config.yaml (--resume, export, evaluate
# --checkpoint) still reads, its value under the new name
RENAMED_KEYS = {"loss.units": "loss.distance_on"}


@dataclass(frozen=True)
class LossConfig(Section):
    """Which DI* loss: divergence, distance, reward and CFG (see distar.method.losses)."""

    section: ClassVar[str] = "loss"
    divergence: str = "score"  # "score": DI*/SIM (eq. 3.4); "kl": Diff-Instruct / DI++
    distance: str = "pseudo_huber"
    huber_c: float = 0.1
    # what the distance acts on: "x0", Delta = D_psi - D_ref (the paper's pseudo-code); "score",
    # the score difference Delta / sigma^2 (the paper's equations)
    distance_on: str = "x0"
    reward_scale: float = 0.0
    cfg_scale: float = 0.0
    guidance: str = "in"
    # "distar": cfg_scale is alpha in D_c + alpha (D_c - D_null); "diffusers": cfg_scale is
    # diffusers' guidance_scale w = 1 + alpha (0 still means no guidance)
    cfg_convention: str = "distar"
    gradient_path: str = "exact"  # "detached" reproduces the printed pseudo-code, for comparison
    weighting: str = "uniform"  # generator weighting w(sigma)

    def validate(self) -> None:
        check_choice("loss.divergence", self.divergence, DIVERGENCES)
        check_choice("loss.distance", self.distance, DISTANCES)
        check_range("loss.huber_c", self.huber_c, 0.0, low_open=True)
        check_choice("loss.distance_on", self.distance_on, DISTANCE_ON)
        check_range("loss.reward_scale", self.reward_scale, 0.0)
        check_range("loss.cfg_scale", self.cfg_scale, 0.0)
        check_choice("loss.guidance", self.guidance, GUIDANCE_MODES)
        check_choice("loss.cfg_convention", self.cfg_convention, CFG_CONVENTIONS)
        if self.cfg_convention == "diffusers" and 0.0 < self.cfg_scale < 1.0:
            fail("loss.cfg_scale", self.cfg_scale, "0 (off) or >= 1 under the diffusers convention")
        check_choice("loss.gradient_path", self.gradient_path, GRADIENT_PATHS)
        check_choice("loss.weighting", self.weighting, GENERATOR_WEIGHTINGS)

    @property
    def cfg_scale_distar(self) -> float:
        """``loss.cfg_scale`` in distar's convention: the alpha of ``D_c + alpha (D_c - D_null)``
        in this world's units, whichever ``loss.cfg_convention`` it was given in. (The paper's
        alpha_cfg is ``paper.alpha_cfg``; :func:`distar.config.paper.to_world` translates it.)"""
        if self.cfg_convention == "diffusers" and self.cfg_scale > 0:
            return self.cfg_scale - 1.0
        return self.cfg_scale


@dataclass(frozen=True)
class SigmaConfig(Section):
    """A noise-level distribution pi(sigma), clamped to [sigma_min, sigma_max]."""

    section: ClassVar[str] = "sigma.*"
    kind: str = "lognormal"  # lognormal: log sigma ~ N(p_mean, p_std^2)
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def validate(self) -> None:
        check_choice(f"{self.section}.kind", self.kind, SIGMA_DISTRIBUTIONS)
        check_range(f"{self.section}.p_std", self.p_std, 0.0, low_open=True)
        check_range(f"{self.section}.sigma_min", self.sigma_min, 0.0, low_open=True)
        check_range(f"{self.section}.sigma_max", self.sigma_max, self.sigma_min, low_open=True)


@dataclass(frozen=True)
class NoiseConfig(Section):
    """pi_g, pi_a and the assistant's denoising weighting lambda(sigma)."""

    section: ClassVar[str] = "noise"
    generator: SigmaConfig = field(default_factory=lambda: SigmaConfig(p_mean=-1.0, p_std=1.5))
    assistant: SigmaConfig = field(default_factory=SigmaConfig)
    assistant_weighting: str = "edm"

    def validate(self) -> None:
        check_choice("noise.assistant_weighting", self.assistant_weighting, ASSISTANT_WEIGHTINGS)


@dataclass(frozen=True)
class AdamConfig(Section):
    section: ClassVar[str] = "optim.*"
    lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 disables clipping

    def validate(self) -> None:
        check_range(f"{self.section}.lr", self.lr, 0.0, low_open=True)
        check_range(f"{self.section}.beta1", self.beta1, 0.0, 0.999999)
        check_range(f"{self.section}.beta2", self.beta2, 0.0, 0.999999)
        check_range(f"{self.section}.eps", self.eps, 0.0, low_open=True)
        check_range(f"{self.section}.weight_decay", self.weight_decay, 0.0)
        check_range(f"{self.section}.grad_clip", self.grad_clip, 0.0)


@dataclass(frozen=True)
class OptimConfig(Section):
    section: ClassVar[str] = "optim"
    generator: AdamConfig = field(default_factory=lambda: AdamConfig(lr=1e-5))
    assistant: AdamConfig = field(default_factory=lambda: AdamConfig(lr=3e-4))
    assistant_rounds: int = 2  # K assistant updates per generator update
    # false: the K assistant rounds draw their own generator samples, then the generator step
    # (the paper's alternation); true: the generator step first, and the first assistant round
    # trains on its samples, detached (DMD2's loop: one generator forward fewer per step; the
    # assistant then fits samples one generator update old)
    reuse_generator_samples: bool = False
    # >0: both learning rates rise linearly over the first this many generator steps, from
    # lr / warmup_steps to lr (the loop's LR warm-up callback; 0: constant lr from step 0)
    warmup_steps: int = 0

    def validate(self) -> None:
        check_range("optim.assistant_rounds", self.assistant_rounds, 1, 1000)
        check_range("optim.warmup_steps", self.warmup_steps, 0, 10**9)


@dataclass(frozen=True)
class TrainConfig(Section):
    section: ClassVar[str] = "train"
    steps: int = 1000  # generator steps
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    log_every: int = 25
    eval_every: int = 0  # 0: evaluate only at the end
    checkpoint_every: int = 0  # 0: checkpoint only at the end
    out_dir: str = "runs/default"
    init: str = "stage0"  # generator start: the world's stage-0 model, or "random"
    # >0: the generator loss and its backward run this many samples at a time onto a detached
    # x0, then one backward through the generator (same gradient, the memory of a chunk)
    generator_chunk: int = 0
    # >0: the decay per generator step of an exponential moving average of the generator's
    # trained weights (e.g. 0.999), kept in checkpoints; evaluation and export then use the
    # average, not the last weights (the loop's EMA callback; 0: off)
    ema: float = 0.0

    def validate(self) -> None:
        check_range("train.steps", self.steps, 0, 10**9)  # sane upper bounds: typos, not runs
        check_range("train.batch_size", self.batch_size, 1, 1 << 20)
        check_range("train.seed", self.seed, 0, 2**63 - 1)
        check_choice("train.device", self.device, DEVICES)
        check_range("train.log_every", self.log_every, 1, 10**9)
        check_range("train.eval_every", self.eval_every, 0, 10**9)
        check_range("train.checkpoint_every", self.checkpoint_every, 0, 10**9)
        check_choice("train.init", self.init, ("random", "stage0"))
        check_range("train.generator_chunk", self.generator_chunk, 0, 1 << 20)
        check_range("train.ema", self.ema, 0.0, 1.0, high_open=True)

    def evaluation_steps(self) -> list[int]:
        """The steps a run evaluates at: every ``eval_every`` steps before the last, and the
        last (the trainer's schedule; 0 or less: the last only)."""
        every = self.eval_every if self.eval_every > 0 else self.steps or 1
        return [*range(every, self.steps, every), self.steps]

    def evaluations(self) -> int:
        """How many evaluations a run makes (:meth:`evaluation_steps`; a paired stopper
        corrects for exactly these)."""
        return len(self.evaluation_steps())


@dataclass(frozen=True)
class EvalConfig(Section):
    """Evaluation at ``train.eval_every`` and at the end: the world's own metrics, and for
    text-to-image worlds the benchmarks (Parti / COCO / HPSv2) through the evaluation harness."""

    section: ClassVar[str] = "eval"
    samples_per_prompt: int = 2000  # the world's own evaluation
    plot: bool = True
    benchmarks: str = ""  # "parti:32,coco:32,hps:16" ("parti" alone: all prompts); "": none
    metrics: str = ""  # restrict the paper's metrics of each benchmark, e.g. "pickscore,fid"
    images_per_prompt: int = 1
    resolution: int = 0  # 0: images scored as generated; else resized to this side first
    batch_size: int = 8
    seed: int = 0  # noise = f(seed, benchmark, prompt, image): every trial sees the same noise
    subset: str = "stratified"  # N prompts stratified by category / style, or the "first" N
    tiny_metrics: bool = False  # tiny random metric models (tests, tiny worlds; no FID)
    prompts: str = ""  # "parti=PATH,coco=PATH,hps=DIR"; "": $DISTAR_PARTI_PROMPTS, ...
    weights: str = ""  # "pickscore=PATH,fid_reference=DIR,..."; "": the DISTAR_* variables
    # COCO FID: "" torchmetrics on the benchmark's images (for ranking runs: not comparable to
    # published numbers); or a published protocol (distar.config.benchmarks.FID_PROTOCOLS, e.g.
    # "dmd2-sdxl"), computed as it was: its caption file, count, resize and reference
    fid_protocol: str = ""

    def validate(self) -> None:
        check_range("eval.samples_per_prompt", self.samples_per_prompt, 2, 10**7)
        for key, parse in (
            ("eval.benchmarks", lambda: parse_benchmarks(self.benchmarks)),
            ("eval.prompts", self.prompt_paths),
            ("eval.weights", self.weight_paths),
        ):
            try:
                parse()
            except ValueError as error:
                fail(key, getattr(self, key.split(".")[1]), str(error))
        named = [m.strip() for m in self.metrics.split(",") if m.strip()]
        unknown = [m for m in named if m not in EVAL_METRICS]
        if unknown:
            allowed = ", ".join(EVAL_METRICS)
            raise ConfigError(f"eval.metrics: unknown {unknown}; allowed: {allowed}")
        check_range("eval.images_per_prompt", self.images_per_prompt, 1, 10_000)
        check_range("eval.resolution", self.resolution, 0, 8192)
        check_range("eval.batch_size", self.batch_size, 1, 100_000)
        check_range("eval.seed", self.seed, 0, 2**63 - 1)
        check_choice("eval.subset", self.subset, ("first", "stratified"))
        if self.fid_protocol:
            self.check_fid_protocol()

    def check_fid_protocol(self) -> None:
        """A protocol FID scores one image per caption of the whole protocol caption file."""
        check_choice("eval.fid_protocol", self.fid_protocol, ("", *FID_PROTOCOLS))
        protocol = FID_PROTOCOLS[self.fid_protocol]
        coco = [r for r in self.requests() if r.benchmark == "coco"]
        needs = f"coco:{protocol.images} (or coco) in eval.benchmarks, with fid among its metrics"
        if not coco or coco[0].optional or "fid" not in coco[0].metrics:
            fail("eval.fid_protocol", self.fid_protocol, f"a protocol with {needs}")
        if coco[0].n not in (None, protocol.images):
            fail("eval.benchmarks", self.benchmarks, f"{needs} under {self.fid_protocol}")
        if self.images_per_prompt != 1:
            fail("eval.images_per_prompt", self.images_per_prompt, f"1 under {self.fid_protocol}")

    def requests(self) -> list[BenchmarkRequest]:
        """What each configured benchmark evaluates (tiny metric models have no FID)."""
        return benchmark_requests(self.benchmarks, self.metrics, self.tiny_metrics)

    def prompt_paths(self) -> dict[str, str]:
        return parse_pairs(self.prompts, tuple(BENCHMARK_METRICS))

    def weight_paths(self) -> dict[str, str]:
        return parse_pairs(self.weights, WEIGHT_KEYS)


@dataclass(frozen=True)
class ResourcesConfig(Section):
    """What one trial asks of a Ray cluster: its TorchTrainer's workers (data-parallel ranks)."""

    section: ClassVar[str] = "resources"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # how often Tune retries a trial whose worker process or node died (from the trial's last
    # checkpoint); a diverging trial fails again at once
    max_failures: int = 3
    # how the ranks hold the networks: "ddp" every rank a full copy, gradients all-reduced;
    # "fsdp" FSDP2, every network sharded across the ranks (distar/runtime/sharding.py)
    strategy: str = "ddp"
    # fsdp: trained shards, their gradients and Adam states in host memory, the optimizer
    # stepping there (on a CPU run it saves nothing but runs the same code path)
    cpu_offload: bool = False

    def validate(self) -> None:
        check_range("resources.num_workers", self.num_workers, 1, 4096)
        check_choice("resources.strategy", self.strategy, STRATEGIES)
        if self.cpu_offload and self.strategy != "fsdp":
            fail("resources.cpu_offload", True, "false unless resources.strategy=fsdp")
        check_range("resources.cpus_per_worker", self.cpus_per_worker, 0.0, 1024.0, low_open=True)
        check_range("resources.max_failures", self.max_failures, 0, 1000)


def world_preset(name: str) -> WorldPreset:
    """The preset ``--world NAME`` selects; fails naming the known ones."""
    check_choice("--world", name, tuple(sorted(WORLD_PRESETS)))
    return WORLD_PRESETS[name]


def world_config_class(name: str) -> type[WorldConfig]:
    check_choice("world.name", name, tuple(sorted(WORLD_CONFIGS)))
    return WORLD_CONFIGS[name]


def world_defaults(name: str) -> dict[str, Any]:
    """Flat defaults a world sets for the other sections (its own preset's overrides)."""
    world_config_class(name)
    base = WORLD_PRESETS.get(name)
    return {} if base is None else dict(base.overrides)


@dataclass(frozen=True)
class Config(Section):
    section: ClassVar[str] = "config"
    world: WorldConfig = field(default_factory=lambda: world_config_class(DEFAULT_WORLD)())
    loss: LossConfig = field(default_factory=LossConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def validate(self) -> None:
        world_config_class(self.world.name)
        if self.eval.benchmarks and not self.world.text_to_image:
            fail(
                "eval.benchmarks",
                self.eval.benchmarks,
                f"'' for the {self.world.name!r} world (no text-to-image generator to benchmark)",
            )

    # ---- round trips -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        return flatten(self.to_dict())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> Config:
        return cls.from_flat(flatten(tree))

    @classmethod
    def from_yaml(cls, text: str) -> Config:
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"not valid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(tree, dict):
            raise ConfigError(
                f"the YAML's top level is a {type(tree).__name__}; allowed: a "
                "mapping of sections (world:, loss:, train:, ...)"
            )
        return cls.from_dict(tree)

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Config:
        """Build from dotted keys; missing keys take the defaults (the world's own defaults over
        the library's), unknown keys fail; a key of :data:`RENAMED_KEYS` reads as its new name."""
        flat = {RENAMED_KEYS.get(k, k): v for k, v in flat.items()}
        world_name = flat.get("world.name", DEFAULT_WORLD)
        defaults = dataclasses.replace(cls(), world=world_config_class(world_name)())
        known = flatten(dataclasses.asdict(defaults))
        unknown = sorted(set(flat) - set(known))
        if unknown:
            hints = [difflib.get_close_matches(k, known, n=1) for k in unknown]
            said = ", ".join(
                f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
                for k, h in zip(unknown, hints, strict=True)
            )
            raise ConfigError(f"unknown config key(s): {said}; known keys: {', '.join(known)}")
        tree = unflatten({**known, **world_defaults(world_name), **flat})
        return _build(type(defaults), tree, world_name, "")

    @classmethod
    def for_world(cls, preset: str, flat: dict[str, Any] | None = None) -> Config:
        """The config ``--world PRESET`` starts from, with ``flat`` on top."""
        p = world_preset(preset)
        return cls.from_flat({"world.name": p.world, **p.overrides, **(flat or {})})

    def with_overrides(self, flat: dict[str, Any]) -> Config:
        """This config with ``flat`` on top; ``world.name`` cannot change (a world brings its
        own sections and defaults: build it with :meth:`for_world`, ``--world`` on the CLIs)."""
        name = flat.get("world.name", self.world.name)
        if name != self.world.name:
            raise ConfigError(
                f"world.name: got {name!r} on a {self.world.name!r} config; allowed: --world "
                f"{name} (a world brings its defaults for every section)"
            )
        return Config.from_flat({**self.to_flat(), **flat})


def _build(cls: type, tree: dict[str, Any], world_name: str, path: str) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = tree[f.name]
        if f.name == "world" and cls is Config:
            kwargs[f.name] = _build(world_config_class(world_name), value, world_name, "world")
        elif isinstance(value, dict):
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            kwargs[f.name] = _build(type(sub), value, world_name, f"{path}.{f.name}".lstrip("."))
        else:
            kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ConfigError as error:
        # nested sections name themselves generically (f"{self.section}."); say which one failed
        generic = f"{cls.section}."
        message = str(error)
        if path and message.startswith(generic):
            message = f"{path}.{message[len(generic) :]}"
        raise ConfigError(message) from None
