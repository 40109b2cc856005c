"""``python -m distar.cli.train``: one DI* run on a world, without Ray (the loop is
:mod:`distar.loop.trainer`); ``torchrun --nproc-per-node N -m distar.cli.train ...`` runs it on N
ranks (with ``--set resources.strategy=fsdp``: sharded)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distar.config.keys import K
from distar.config.tree import DEFAULT_WORLD, Config, ConfigError, parse_override, world_preset
from distar.evaluation.in_training import benchmark_evaluator
from distar.evaluation.preflight import preflight
from distar.loop.trainer import Trainer
from distar.runtime.callbacks import JsonlLogger, ProgressBar
from distar.runtime.checkpoint import CorruptCheckpointError, checkpoint_config
from distar.runtime.devices import resolve_device
from distar.runtime.distributed import init_from_launcher, rank
from distar.runtime.step_parts import NonFiniteLossError
from distar.util.refusals import Outputs, check_writable_dir, refusing
from distar.worlds.builders import check_world


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distar.cli.train", description=__doc__)
    parser.add_argument(
        "--world",
        help=f"world preset (default {DEFAULT_WORLD!r}; e.g. sd15, sdxl, sd15-tiny, sdxl-tiny): "
        "the world and its defaults for every section",
    )
    parser.add_argument("--config", type=Path, help="YAML config; defaults fill the rest")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. loss.reward_scale=10",
    )
    parser.add_argument("--out", type=Path, help="output directory (train.out_dir)")
    parser.add_argument("--resume", type=Path, help="checkpoint dir, or a run's checkpoints/ dir")
    parser.add_argument(
        "--resume-fallback",
        action="store_true",
        help="with --resume: if the checkpoint is corrupt, use the newest readable earlier one",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config, exit")
    parser.add_argument(
        "--smoke-test", action="store_true", help="tiny and fast settings (the world's own)"
    )
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    """Defaults < the world preset (``--world``) < the checkpoint's config (``--resume`` without
    ``--config``) < ``--config`` < the world's ``--smoke-test`` settings < ``--set`` < ``--out``."""
    if args.resume_fallback and not args.resume:
        raise ConfigError("--resume-fallback: only with --resume")
    if args.world and (args.config or args.resume):
        raise ConfigError("--world: give it alone, or set world.* inside --config / the checkpoint")
    if args.config:
        if not args.config.is_file():
            raise ConfigError(f"--config: {args.config} is not a file")
        try:
            base = Config.from_yaml(args.config.read_text())
        except ConfigError as error:
            raise ConfigError(f"--config {args.config}: {error}") from None
    elif args.resume:
        try:
            base = checkpoint_config(args.resume)
        except (FileNotFoundError, CorruptCheckpointError) as error:
            raise ConfigError(f"--resume: {error}") from None
    else:
        base = Config.for_world(args.world or DEFAULT_WORLD)
    preset = world_preset(args.world or base.world.name)
    flat: dict = dict(preset.smoke) if args.smoke_test else {}
    flat.update(parse_override(text) for text in args.overrides)
    if args.out is not None:
        flat[K.train.out_dir] = str(args.out)
    return base.with_overrides(flat)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return refusing(lambda outputs: run(args, outputs), extra=(CorruptCheckpointError,))


def preflight_run(config: Config, out_flag: str) -> None:
    """Everything checkable before a weight loads: the output folder, the device, every file
    the world reads (keys and shapes of a generator state dict included), every prompt and
    weight file the evaluation needs."""
    check_writable_dir(config.train.out_dir, out_flag)
    resolve_device(config.train.device)
    check_world(config)
    preflight(config.eval)


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    config = resolve_config(args)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return 0
    preflight_run(config, "--out" if args.out else K.train.out_dir)
    outputs.watch(config.train.out_dir)  # removed if the run is refused from here on
    # under torchrun: this process is one rank of the run
    init_from_launcher(config.resources.cpu_offload)

    out = Path(config.train.out_dir)
    first = rank() == 0  # the one rank that prints and writes
    callbacks = [ProgressBar(), JsonlLogger(out)] if first else []
    # a world's own checks at build time refuse in one line too (refusing)
    trainer = Trainer(config, callbacks=callbacks, benchmarks=benchmark_evaluator(config))
    if args.resume:
        try:
            trainer.resume(args.resume, args.resume_fallback)
        except FileNotFoundError as error:
            raise ConfigError(f"--resume: {error}") from None
    if first:  # after the checkpoint proved readable
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config.to_yaml())
    try:
        final = trainer.train()
    except NonFiniteLossError as error:
        print(f"diverged: {error}", file=sys.stderr)
        return 1
    if first:
        print(json.dumps({"step": trainer.step, **final}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
