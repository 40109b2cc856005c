"""Evaluation throughput on the tiny metric models (CPU): images per second per metric, and the
harness' overhead over the bare forward passes it wraps. Not a test; prints numbers of one run.

    python benchmarks/eval_throughput.py [--n 128] [--batch-size 16] [--threads 2]
    python benchmarks/eval_throughput.py --ray-workers 1 2    # end-to-end on Ray actors

- per metric: ``score(images, prompts)`` on ready batches (tokenise + preprocess + forward);
- harness: ``evaluate()`` end to end (per-sample seeded noise, generation, every metric, rows,
  bootstrap summaries) against the sum of the bare generator and metric calls on the same batches;
- ``--ray-workers``: ``python -m distar.cli.evaluate``'s request on N Ray actors (one CPU each),
  end to end including the actors' start and model loads, and the scoring alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from distar.data.prompts import Prompt, PromptSet
from distar.evaluation.generators import GENERATORS
from distar.evaluation.harness import HarnessOptions, evaluate
from distar.evaluation.metric_base import MetricOptions
from distar.evaluation.scorers import build_metric
from distar.evaluation.tiny_metrics import tiny_metric_paths, tiny_text_encoder

METRICS = ("pickscore", "clip_score", "aesthetic", "hpsv21", "imagereward")


def timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def ray_scaling(n: int, batch: int, workers: list[int], parti: str) -> None:
    """Images/s of the whole evaluation (and of its scoring alone) on 1, 2, ... Ray actors."""
    import ray

    from distar.cli.evaluate import build_parser, resolve_job
    from distar.evaluation import ray_eval

    ray.init(num_cpus=max(workers), log_to_driver=False)
    for w in workers:
        argv = [
            "--tiny",
            "--benchmark",
            f"parti:{n}",
            "--prompts",
            f"parti={parti}",
            "--batch-size",
            str(batch),
            "--ray-workers",
            str(w),
        ]
        job = resolve_job(build_parser().parse_args(argv))
        t0 = time.perf_counter()
        ray_eval.evaluate_on_ray(job.eval, job.source, job.device, w, job.cache_dir)
        total = time.perf_counter() - t0
        print(
            f"  {w} Ray worker(s): {n / total:7.1f} images/s end to end ({total:.1f} s, incl. "
            f"actor start and model loads); scoring {n / ray_eval.LAST_SCORING_SECONDS:7.1f} "
            f"images/s ({ray_eval.LAST_SCORING_SECONDS:.1f} s)"
        )
    ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ray-workers", type=int, nargs="+", help="e.g. 1 2: Ray scaling instead")
    p.add_argument(
        "--parti", default=str(Path(__file__).resolve().parents[2] / "shared/data/PartiPrompts.tsv")
    )
    args = p.parse_args()
    if args.ray_workers:
        print(f"{args.n} Parti prompts, tiny generator and metric models, batch {args.batch_size}")
        return ray_scaling(args.n, args.batch_size, args.ray_workers, args.parti)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = tiny_metric_paths(Path(tmp) / "metrics")
        metrics = {m: build_metric(m, MetricOptions(paths)) for m in METRICS}
        generator = GENERATORS.get("tiny")(tiny_text_encoder(Path(tmp) / "gen"))
    prompts = PromptSet(
        "bench", tuple(Prompt(f"a photo of thing {i}", "", i) for i in range(args.n))
    )
    texts = prompts.texts
    noise = torch.randn(args.n, *generator.noise_shape)
    b = args.batch_size
    batches = [(texts[i : i + b], noise[i : i + b]) for i in range(0, args.n, b)]
    with torch.no_grad():
        images = [generator(t, z) for t, z in batches]

    def bare_generate():
        with torch.no_grad():
            for t, z in batches:
                generator(t, z)

    bare = {"generator": timed(bare_generate)}
    for name, metric in metrics.items():
        bare[name] = timed(
            lambda m=metric: [m.score(x, t) for x, (t, _) in zip(images, batches, strict=True)]
        )
    options = HarnessOptions(batch_size=b, progress=False)
    harness = timed(lambda: evaluate(generator, prompts, metrics, options))
    print(f"{args.n} images of {tuple(images[0].shape[1:])}, batch {b}, {args.threads} threads")
    for name, seconds in bare.items():
        print(f"  {name:12s} {args.n / seconds:9.1f} images/s")
    total = sum(bare.values())
    print(
        f"  bare passes summed {total:7.2f} s; harness {harness:7.2f} s; "
        f"overhead ratio {harness / total:.3f}"
    )


if __name__ == "__main__":
    main()
