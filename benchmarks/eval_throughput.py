"""Evaluation throughput on the tiny metric models (CPU): images per second per metric, and the
harness' overhead over the bare forward passes it wraps. Not a test; prints numbers of one run.

    python benchmarks/eval_throughput.py [--n 128] [--batch-size 16] [--threads 2]

- per metric: ``score(images, prompts)`` on ready batches (tokenise + preprocess + forward);
- harness: ``evaluate()`` end to end (per-sample seeded noise, generation, every metric, rows,
  bootstrap summaries) against the sum of the bare generator and metric calls on the same batches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from distar.evaluation.generators import GENERATORS
from distar.evaluation.harness import evaluate
from distar.evaluation.metric_base import MetricOptions, build_metric
from distar.evaluation.tiny import tiny_metric_paths, tiny_text_encoder
from distar.prompts import Prompt, PromptSet

METRICS = ("pickscore", "clip_score", "aesthetic", "hpsv21", "imagereward")


def timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
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
    harness = timed(lambda: evaluate(generator, prompts, metrics, batch_size=b, progress=False))
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
