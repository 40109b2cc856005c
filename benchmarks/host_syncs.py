"""Counts the host syncs of training steps on a GPU: runs steps that are not logging steps under
``torch.cuda.set_sync_debug_mode("warn")`` and prints where each synchronising call came from.
Target: zero (a step waits for the device only at logging, evaluation and checkpoint steps).

    python benchmarks/host_syncs.py --world sdxl-tiny --steps 5
    python benchmarks/host_syncs.py --world gmm --set loss.reward_scale=1
"""

from __future__ import annotations

import argparse
import collections
import traceback
import warnings

import torch

from distar.config.keys import K
from distar.config.tree import Config, parse_override


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--world", default="gmm", help="world preset")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to count")
        return 0
    from distar.loop.trainer import Trainer

    flat = {K.train.device: "cuda", K.train.log_every: 1_000_000, K.train.out_dir: "/tmp/syncs"}
    flat.update(parse_override(o) for o in args.overrides)
    trainer = Trainer(Config.for_world(args.world, flat))
    trainer.train_step()  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    where: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        stack = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename]
        ours = [f for f in stack if "/distar/" in f.filename or "/benchmarks/" in f.filename]
        frame = (ours or stack)[-1]
        where[f"{frame.filename}:{frame.lineno} {frame.line}  ({str(message)[:60]})"] += 1

    warnings.showwarning = record
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    for _ in range(args.steps):
        trainer.train_step()
    torch.cuda.set_sync_debug_mode("default")
    total = sum(where.values())
    print(f"{args.world}: {total} synchronising calls in {args.steps} training steps")
    for site, count in where.most_common():
        print(f"  {count:4d}  {site}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
