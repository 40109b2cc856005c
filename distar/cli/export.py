"""``python -m distar.cli.export CHECKPOINT --out DIR``: an SD run's trained generator as a
diffusers UNet folder (``DIR/unet``) and one ``.safetensors`` state dict
(``DIR/generator_unet.safetensors``), bit-exact, from an unsharded or a sharded (FSDP) checkpoint.
Either loads as a new run's ``world.generator_init``; the folder also with
``UNet2DConditionModel.from_pretrained``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from distar.config.keys import K
from distar.config.tree import Config
from distar.util.refusals import Outputs, check_writable_dir, refusing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distar.cli.export", description=__doc__)
    parser.add_argument(
        "checkpoint", type=Path, nargs="?", help="checkpoint dir, or a run's checkpoints/ dir"
    )
    parser.add_argument("--out", type=Path, help="where to write unet/ and the .safetensors")
    parser.add_argument("--dry-run", action="store_true", help="check the inputs, write nothing")
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="train sd15-tiny for 2 steps in a temporary folder, export it, load it back",
    )
    return parser


def smoke_test() -> int:
    import torch

    from distar.loop.trainer import Trainer
    from distar.worlds.sd.unet_export import export_generator, generator_state

    with tempfile.TemporaryDirectory() as tmp:
        flat = {K.train.steps: 2, K.train.out_dir: tmp, K.eval.plot: False}
        trainer = Trainer(Config.for_world("sd15-tiny", flat))
        trainer.train()
        written = export_generator(Path(tmp) / "checkpoints", Path(tmp) / "export")
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(written["folder"])
        state = generator_state(Path(tmp) / "checkpoints")
        exact = all(torch.equal(p, state[k]) for k, p in unet.state_dict().items())
        print(f"smoke test: exported {len(state)} tensors; loads back bit-exactly: {exact}")
        return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke_test:
        return smoke_test()
    if args.checkpoint is None or (args.out is None and not args.dry_run):
        parser.error("give CHECKPOINT and --out DIR (or --smoke-test)")
    from distar.runtime.checkpoint import resolve_checkpoint
    from distar.worlds.sd.unet_export import UNET_FILE, UNET_FOLDER, export_generator, unet_config

    def run(outputs: Outputs) -> int:
        path = resolve_checkpoint(args.checkpoint)
        if args.dry_run:
            unet_config(path)
            print(f"would write {args.out or 'DIR'}/{UNET_FOLDER}/ and {UNET_FILE} from {path}")
            return 0
        check_writable_dir(args.out, "--out")
        outputs.watch(args.out)
        return print_written(export_generator(path, args.out))

    return refusing(run, extra=(ValueError,))  # unet_export's: a run that is not an SD one


def print_written(written: dict) -> int:
    for what, where in written.items():
        print(f"{what}: {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
