"""``python -m distar.cli.export``: an unsharded checkpoint's generator as a diffusers UNet folder
and one state-dict file, each loading back bit-exactly -- with ``from_pretrained`` and as a new
run's ``world.generator_init`` (the sharded case: tests/test_fsdp.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from distar.cli.export import main
from distar.config.tree import Config


@pytest.fixture(scope="module")
def trained(world_cache, tmp_path_factory):
    from distar.loop.trainer import Trainer

    out = tmp_path_factory.mktemp("run")
    flat = {"train.steps": 2, "train.out_dir": str(out), "eval.plot": False, "eval.benchmarks": ""}
    trainer = Trainer(Config.for_world("sd15-tiny", {**flat, "optim.generator.lr": 1e-3}))
    trainer.train()
    unet = trainer.world.generator.denoiser.unet
    return out / "checkpoints", {k: v.detach().clone() for k, v in unet.state_dict().items()}


def test_export_writes_a_folder_and_a_file_that_load_back_bit_exactly(trained, tmp_path, capsys):
    from diffusers import UNet2DConditionModel

    from distar.worlds.builders import build_world

    checkpoints, weights = trained
    assert main([str(checkpoints), "--out", str(tmp_path)]) == 0
    assert "generator_unet.safetensors" in capsys.readouterr().out
    folder = UNet2DConditionModel.from_pretrained(tmp_path / "unet").state_dict()
    single = load_file(str(tmp_path / "generator_unet.safetensors"))
    for loaded in (folder, single):
        assert loaded.keys() == weights.keys()
        assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    for init in (tmp_path / "generator_unet.safetensors", tmp_path / "unet"):
        world = build_world(
            Config.for_world("sd15-tiny", {"world.generator_init": str(init)}).world,
            torch.device("cpu"),
        )
        got = world.generator.denoiser.unet.state_dict()
        assert all(torch.equal(got[k], v) for k, v in weights.items()), init


def test_export_refuses_what_it_cannot_write(trained, tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    gmm = tmp_path / "gmm"  # what a gmm run's checkpoint says of itself
    gmm.mkdir()
    torch.save({"step": 1}, gmm / "trainer.pt")
    (gmm / "config.yaml").write_text(Config.for_world("gmm").to_yaml())
    assert main([str(gmm), "--out", str(tmp_path / "x")]) == 2
    assert "export writes an SD world's generator UNet" in capsys.readouterr().err
    assert main([str(trained[0]), "--dry-run"]) == 0
    assert "would write" in capsys.readouterr().out


def test_a_run_with_an_ema_exports_the_ema_weights(world_cache, tmp_path, capsys):
    """``train.ema``: what the run evaluated, the average, is what export writes (bit-exact),
    not the last step's weights."""
    from distar.loop.trainer import Trainer
    from distar.runtime.callbacks import GeneratorEma

    flat = {
        "train.steps": 2,
        "train.out_dir": str(tmp_path / "run"),
        "eval.plot": False,
        "eval.benchmarks": "",
        "optim.generator.lr": 1e-3,
        "train.ema": 0.5,
    }
    trainer = Trainer(Config.for_world("sd15-tiny", flat))
    trainer.train()
    (ema,) = [cb for cb in trainer.callbacks if isinstance(cb, GeneratorEma)]
    assert main([str(tmp_path / "run" / "checkpoints"), "--out", str(tmp_path / "out")]) == 0
    single = load_file(str(tmp_path / "out" / "generator_unet.safetensors"))
    last = dict(trainer.world.generator.named_parameters())
    prefix = "denoiser.unet."
    assert single.keys() == {k.removeprefix(prefix) for k in ema.shadow}
    assert all(torch.equal(single[k.removeprefix(prefix)], v) for k, v in ema.shadow.items())
    assert not all(torch.equal(single[k.removeprefix(prefix)], last[k]) for k in ema.shadow)
