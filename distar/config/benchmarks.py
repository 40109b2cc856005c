"""The benchmark catalogue, torch-free (the config validates against it before anything
starts): the benchmarks and the metrics the paper reports on each, the weight files a metric may
name, ``KEY=VALUE`` lists, and what one evaluation asks of each benchmark."""

from __future__ import annotations

from dataclasses import dataclass

# What the paper reports on each benchmark (Tables 1 and 3).
BENCHMARK_METRICS = {
    "parti": ("pickscore", "imagereward", "aesthetic", "clip_score"),
    "coco": ("pickscore", "imagereward", "aesthetic", "clip_score", "fid"),
    "hps": ("hpsv21",),
}
EVAL_METRICS = ("aesthetic", "clip_score", "fid", "hpsv21", "imagereward", "pickscore")
# the columns of a benchmark's per-sample table that are not metrics: the item (prompt index,
# image replica, noise seed), its prompt and group, the step it was scored at
# the world's own per-sample values (World.item_scores), tabled beside the benchmarks' as
# eval/<WORLD_ITEMS>_samples.json: their metrics are the world's, eval/<name>
WORLD_ITEMS = "eval"
ROW_KEYS = ("prompt", "group", "challenge", "index", "replica", "seed", "step")
# metrics of a whole sample set, with no per-sample value to pair on (the rest are means of
# per-sample values: reward, precision, ImageReward, CLIP score, ...)
SET_METRICS = frozenset({"fid", "mmd", "frechet", "coverage"})
# metric names (a world's "mmd", a benchmark's "coco/fid"): these fall as they improve
LOWER_IS_BETTER = frozenset({"mmd", "frechet", "fid"})
# MetricOptions.paths keys: what --weights / eval.weights may name
WEIGHT_KEYS = (
    "aesthetic_clip",
    "aesthetic_head",
    "bert_tokenizer",
    "clip_score",
    "fid_inception",
    "fid_inception_torchscript",
    "fid_reference",
    "hpsv21",
    "imagereward",
    "pickscore",
    "pickscore_processor",
)


def parse_benchmarks(text: str) -> list[tuple[str, int | None, bool]]:
    """``"parti:32,coco,hps?:64"`` -> ``[("parti", 32, False), ("coco", None, False),
    ("hps", 64, True)]``: name, prompt count (None: all), optional (``?``: evaluated when its
    prompts are found, skipped with a note otherwise); raises ValueError."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, n = item.partition(":")
        optional = name.endswith("?")
        name = name.removesuffix("?")
        if name not in BENCHMARK_METRICS:
            raise ValueError(f"benchmark {name!r}: allowed {sorted(BENCHMARK_METRICS)}")
        if n and (not n.isdigit() or int(n) < 1):
            raise ValueError(f"{item!r}: the count after ':' must be a positive integer")
        if name in [o[0] for o in out]:
            raise ValueError(f"benchmark {name!r} given twice")
        out.append((name, int(n) if n else None, optional))
    return out


def parse_pairs(text: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """``"a=/x,b=/y"`` -> ``{"a": "/x", "b": "/y"}``; keys must be in ``allowed``."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        if key not in allowed:
            raise ValueError(f"{key!r}: allowed keys {', '.join(allowed)}")
        out[key] = value
    return out


def metrics_for(benchmark: str, restrict: tuple[str, ...], tiny: bool) -> tuple[str, ...]:
    """The paper's metrics of a benchmark, restricted to ``restrict`` when given; tiny metric
    models have no Inception network or reference images, so no FID."""
    chosen = [m for m in BENCHMARK_METRICS[benchmark] if not restrict or m in restrict]
    return tuple(m for m in chosen if not (tiny and m == "fid"))


@dataclass(frozen=True)
class BenchmarkRequest:
    """One benchmark of an evaluation: its name, how many prompts (None: all) and which of the
    paper's metrics."""

    benchmark: str
    n: int | None
    metrics: tuple[str, ...]
    optional: bool = False  # run only when its prompt file is found


def benchmark_requests(benchmarks: str, metrics: str, tiny: bool) -> list[BenchmarkRequest]:
    """``eval.benchmarks`` x ``eval.metrics`` (a comma list; "" = the paper's) -> requests."""
    restrict = tuple(m.strip() for m in metrics.split(",") if m.strip())
    return [
        BenchmarkRequest(name, n, metrics_for(name, restrict, tiny), optional)
        for name, n, optional in parse_benchmarks(benchmarks)
    ]


def lower_is_better(metric: str) -> bool:
    """``"coco/fid"``, ``"mmd"``: True; every other metric improves as it rises."""
    return metric.rpartition("/")[2] in LOWER_IS_BETTER


def logged_name(metric: str) -> str:
    """A metric's name in Tune results and MLflow: a world's own metric under ``eval/``
    (``eval/reward``), a benchmark's as it is (``parti/imagereward``)."""
    return metric if "/" in metric else f"eval/{metric}"


@dataclass(frozen=True)
class FIDProtocol:
    """How a published COCO FID was measured, so ours is computed the same way or not shown
    beside it. Both image sets go through DMD2's evaluator: centre crop to a square, LANCZOS to
    ``resolution`` on uint8, then clean-fid (per-channel float PIL bicubic to 299, no
    re-quantisation; Inception-v3 TorchScript; Frechet distance in float64)."""

    name: str
    images: int  # generated images: one per caption, the caption file in order
    resolution: int  # both image sets are resized to this side before clean-fid
    captions: str  # which caption file
    captions_sha256: str  # "" where the file is not public as one text file
    reference: str  # which real images the reference statistics come from
    # the published FID of DMD2's released one-step generator, the model a DI* run starts from
    # (the sweep's init row): ours at step 0 under the protocol should reproduce it
    published_init: float
    source: str


FID_PROTOCOLS = {
    p.name: p
    for p in (
        FIDProtocol(
            "dmd2-sd15",
            30_000,
            256,
            "DMD2's main/coco_eval/captions_coco14_test.txt (30k COCO-2014 val captions)",
            "edabd2a556026cbf5d36a5fffa35ad43d7ba71b72f6d640b727c1edefb7f1945",
            "every COCO-2014 val image (val2014/, 40,504)",
            8.35,
            "DMD2 experiments/sdv1.5 (--eval_res 256 --ref_dir val2014 --total_eval_samples 30000)",
        ),
        FIDProtocol(
            "dmd2-sdxl",
            10_000,
            512,
            "DMD2's coco10k/all_prompts.pkl (10k COCO-2014 val captions), one per line",
            "",
            "DMD2's coco10k/subset (the 10,000 images of those captions)",
            19.01,
            "DMD2 experiments/sdxl (--eval_res 512 --ref_dir coco10k/subset; 1-step model 19.01)",
        ),
    )
}
# the DI* paper's Table 1 COCO FIDs: "30K-FID on the COCO validation dataset", with neither the
# resolution, the resize nor the reference images stated, so no protocol here reproduces it and
# no FID of ours is printed beside those numbers
PAPER_FID_PROTOCOL = "di*-paper (30k COCO val prompts; resolution and reference unstated)"
