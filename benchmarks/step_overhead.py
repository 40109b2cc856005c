"""One DI* training step (K assistant rounds + one generator step) against the sum of its
necessary passes, each timed on its own with pre-made inputs. Prints both and their ratio:
the ratio is the loop's overhead (sampling, bookkeeping, checks). Not a test.

    python benchmarks/step_overhead.py [--batch-size 256] [--reps 200] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from distar.config.keys import K
from distar.config.tree import Config, parse_override
from distar.loop.trainer import Trainer
from distar.method.sigmas import edm_weight


def median_seconds(fn: Callable[[], object], reps: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def necessary_passes(trainer: Trainer) -> dict[str, Callable[[], object]]:
    """The irreducible work of one step, each as a closure over fixed inputs."""
    w, n = trainer.world, trainer.config.train.batch_size
    draws = trainer.draws
    z, cond = w.sample_latents(n, draws.noise_rng), w.sample_conditions(n, draws.rng)
    sigma, noise = torch.full((n,), 0.5), torch.randn(n, z.shape[1])
    with torch.no_grad():
        x0_fixed = w.generator(z, cond)
    weight = edm_weight(sigma, w.sigma_data)

    def assistant_fwd_bwd():
        loss = (
            weight[:, None] * (w.assistant(x0_fixed + noise, sigma, cond) - x0_fixed).square()
        ).mean()
        loss.backward()

    def generator_fwd_bwd():  # G, D_psi(x) and D_ref(x) with grad to x, then the double backward
        w.assistant.requires_grad_(False)
        x0 = w.generator(z, cond)
        x = x0 + sigma[:, None] * noise
        d_psi = w.assistant(x, sigma, cond)
        delta = d_psi - w.reference(x, sigma, cond)
        u = delta / torch.sqrt(delta.square().sum(1, keepdim=True) + 0.01)
        (u * (x0 - d_psi)).sum(1).mean().backward()
        w.assistant.requires_grad_(True)

    def generator_forward_no_grad():
        with torch.no_grad():
            w.generator(z, cond)

    return {
        "generator forward (no grad)": generator_forward_no_grad,
        "assistant forward+backward": assistant_fwd_bwd,
        "assistant Adam step": trainer.method.opt_assistant.step,
        "generator loss forward+backward": generator_fwd_bwd,
        "generator Adam step": trainer.method.opt_generator.step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    flat = {K.train.batch_size: args.batch_size, K.train.log_every: 10**9, K.train.device: "cpu"}
    flat.update(parse_override(o) for o in args.overrides)
    trainer = Trainer(Config().with_overrides(flat))
    k = trainer.config.optim.assistant_rounds
    passes = {name: median_seconds(fn, args.reps) for name, fn in necessary_passes(trainer).items()}
    per_round = ("generator forward (no grad)", "assistant forward+backward", "assistant Adam step")
    summed = sum(passes[p] * (k if p in per_round else 1) for p in passes)
    step = median_seconds(trainer.train_step, args.reps)
    print(
        f"batch {args.batch_size}, K = {k} assistant rounds, torch threads "
        f"{torch.get_num_threads()}, median of {args.reps}"
    )
    for name, seconds in passes.items():
        times = f" x{k}" if name in per_round else ""
        print(f"  {name:34s} {1e3 * seconds:8.3f} ms{times}")
    print(f"sum of necessary passes             {1e3 * summed:8.3f} ms")
    print(f"one DI* step (Trainer.train_step)   {1e3 * step:8.3f} ms")
    print(f"ratio step / sum of passes          {step / summed:8.3f}")


if __name__ == "__main__":
    main()
