"""Divergence x reward scale on the embedded world: one run per cell, a markdown table of the
exact metrics at the end. ``python scripts/reward_table.py --help``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distar.config.keys import K
from distar.config.tree import Config, parse_override
from distar.loop.trainer import Trainer

ROWS = [
    ("KL (Diff-Instruct / DI++)", {K.loss.divergence: "kl"}),
    (
        "score, pseudo-Huber (SIM / DI*)",
        {K.loss.divergence: "score", K.loss.distance: "pseudo_huber"},
    ),
]
COLUMNS = ("reward", "precision", "coverage", "adherence", "mmd", "frechet", "loglik")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reward-scales", type=float, nargs="+", default=[0.0, 1.0, 10.0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/reward_table"))
    args = parser.parse_args()
    base = Config().with_overrides(dict(parse_override(o) for o in args.overrides))
    lines = [
        "| divergence | α_rew | " + " | ".join(COLUMNS) + " | seconds |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for label, row in ROWS:
        for scale in args.reward_scales:
            out = args.out / f"{row[K.loss.divergence]}_rew{scale:g}"
            cfg = base.with_overrides(
                {**row, K.loss.reward_scale: scale, K.train.out_dir: str(out)}
            )
            start = time.perf_counter()
            metrics = Trainer(cfg).train()
            seconds = time.perf_counter() - start
            (out / "final.json").write_text(json.dumps(metrics, indent=1))
            cells = " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS)
            lines.append(f"| {label} | {scale:g} | {cells} | {seconds:.0f} |")
            print(lines[-1], flush=True)
    stage0 = Trainer(
        base.with_overrides({K.train.steps: 0, K.train.out_dir: str(args.out / "stage0")})
    )
    reference = stage0.world.evaluate_reference(
        base.eval.samples_per_prompt, base.train.seed + 1_000_003
    )
    for label, metrics in (("stage 0 (start)", stage0.train()), ("exact reference", reference)):
        lines.append(
            f"| {label} | – | " + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS) + " | – |"
        )
    print("\n".join(lines))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
