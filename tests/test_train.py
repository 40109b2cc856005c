import json
import math

import pytest
import torch

from distar.cli.train import main as cli_main
from distar.config.tree import Config
from distar.loop.trainer import Trainer
from distar.runtime.callbacks import Callback, JsonlLogger
from distar.runtime.checkpoint import checkpoint_config, resolve_checkpoint
from distar.runtime.step_parts import NonFiniteLossError

SMALL = {
    "train.batch_size": 32,
    "train.log_every": 2,
    "eval.samples_per_prompt": 50,
    "eval.plot": False,
    "optim.assistant_rounds": 2,
}


def small_config(tmp_path, **flat) -> Config:
    return Config().with_overrides({**SMALL, "train.out_dir": str(tmp_path), **flat})


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_step(self, step, metrics):
        self.calls.append(("step", step, metrics))

    def on_eval(self, step, metrics, artifacts):
        self.calls.append(("eval", step, metrics))

    def on_checkpoint(self, step, path):
        self.calls.append(("checkpoint", step, path))

    def on_train_end(self, step, metrics):
        self.calls.append(("end", step, metrics))


def weights(trainer):
    return {
        f"{name}.{k}": v.clone()
        for name, module in trainer.modules().items()
        for k, v in module.state_dict().items()
    }


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(world_cache, tmp_path):
    straight = Trainer(small_config(tmp_path / "a", **{"train.steps": 6}))
    straight.train()
    first = Trainer(small_config(tmp_path / "b", **{"train.steps": 3}))
    first.train()
    resumed = Trainer(small_config(tmp_path / "b", **{"train.steps": 6}))
    resumed.resume(tmp_path / "b" / "checkpoints")
    assert resumed.step == 3
    resumed.train()
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    moved = Trainer(small_config(tmp_path / "c", **{"train.steps": 0}))
    assert not all(torch.equal(a[k], v) for k, v in weights(moved).items())


def test_checkpoint_holds_weights_optimisers_rng_and_config(world_cache, tmp_path):
    cfg = small_config(tmp_path, **{"train.steps": 2, "loss.reward_scale": 2.0})
    Trainer(cfg).train()
    path = resolve_checkpoint(tmp_path / "checkpoints")
    assert {p.name for p in path.iterdir()} == {
        "generator.safetensors",
        "assistant.safetensors",
        "trainer.pt",
        "config.yaml",
    }
    state = torch.load(path / "trainer.pt", weights_only=True)
    assert state["step"] == 2 and {"opt_generator", "opt_assistant", "torch_rng"} <= state.keys()
    assert checkpoint_config(path) == cfg


def test_callbacks_and_jsonl_see_steps_evals_checkpoints(world_cache, tmp_path):
    rec = Recorder()
    cfg = small_config(
        tmp_path, **{"train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 2}
    )
    final = Trainer(cfg, callbacks=[rec, JsonlLogger(tmp_path)]).train()
    kinds = [(kind, step) for kind, step, _ in rec.calls]
    assert kinds == [
        ("step", 2),
        ("eval", 2),
        ("checkpoint", 2),
        ("step", 4),
        ("checkpoint", 4),  # the final checkpoint comes before the final evaluation
        ("eval", 4),
        ("end", 4),
    ]
    step_metrics = rec.calls[0][2]
    names = (
        "loss/generator",
        "loss/divergence",
        "loss/assistant",
        "delta_norm",
        "reward",
        "grad_norm/generator",
        "grad_norm/divergence",
    )
    assert step_metrics.keys() == {f"train/{name}" for name in names}  # one scheme, no bare keys
    assert {
        "reward",
        "precision",
        "coverage",
        "adherence",
        "mmd",
        "frechet",
        "loglik",
    } <= final.keys()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(d["kind"], d["step"]) for d in lines] == [
        ("train", 2),
        ("eval", 2),
        ("train", 4),
        ("eval", 4),
        ("end", 4),
    ]


def test_non_finite_loss_stops_with_a_clear_error(world_cache, tmp_path):
    trainer = Trainer(small_config(tmp_path, **{"train.steps": 3, "loss.reward_scale": 1.0}))
    trainer.world.reward = lambda x0, cond: x0[:, 0] * math.nan
    with pytest.raises(NonFiniteLossError, match=r"step 0: generator loss is non-finite"):
        trainer.train()


def test_reward_scale_raises_reward_and_leaves_the_support(world_cache, tmp_path):
    """The whole loop, end to end: a large reward scale hacks the reward off the support."""
    base = {"train.steps": 150, "train.batch_size": 128, "eval.samples_per_prompt": 500}
    start = Trainer(small_config(tmp_path / "s", **{**base, "train.steps": 0})).train()
    hacked = Trainer(
        small_config(
            tmp_path / "h", **{**base, "loss.reward_scale": 10.0, "optim.generator.lr": 1e-4}
        )
    ).train()
    assert hacked["reward"] > start["reward"] + 0.2
    assert hacked["precision"] < start["precision"] - 0.05


def test_cli_dry_run_prints_the_resolved_config(capsys):
    assert (
        cli_main(["--dry-run", "--set", "loss.reward_scale=10", "--set", "optim.generator.lr=1e-5"])
        == 0
    )
    cfg = Config.from_yaml(capsys.readouterr().out)
    assert cfg.loss.reward_scale == 10.0 and cfg.optim.generator.lr == 1e-5


def test_cli_rejects_bad_values_before_running(capsys):
    assert cli_main(["--set", "loss.guidance=sideways"]) == 2
    assert "loss.guidance: got 'sideways'" in capsys.readouterr().err


def test_cli_smoke_test_runs(tmp_path, world_cache, capsys):
    assert cli_main(["--smoke-test", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 20


def test_cli_resume_takes_the_checkpoint_config_and_extends_it(tmp_path, world_cache, capsys):
    args = ["--smoke-test", "--out", str(tmp_path), "--set", "loss.reward_scale=3"]
    assert cli_main(args) == 0
    capsys.readouterr()
    resume = ["--resume", str(tmp_path / "checkpoints"), "--set", "train.steps=30", "--dry-run"]
    assert cli_main(resume) == 0
    cfg = Config.from_yaml(capsys.readouterr().out)
    assert cfg.loss.reward_scale == 3.0 and cfg.train.steps == 30 and cfg.train.batch_size == 64
    assert cli_main(resume[:-1]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 30


def test_only_the_network_being_stepped_holds_gradients(world_cache, tmp_path):
    trainer = Trainer(small_config(tmp_path, **{"train.steps": 1, "loss.reward_scale": 1.0}))
    trainer.train_step()
    assert all(p.grad is None for ps in trainer.method.params.values() for p in ps)


def test_corrupt_checkpoint_names_the_file_and_can_fall_back(world_cache, tmp_path, capsys):
    from distar.runtime.checkpoint import CorruptCheckpointError

    cfg = small_config(tmp_path, **{"train.steps": 4, "train.checkpoint_every": 2})
    Trainer(cfg).train()
    broken = tmp_path / "checkpoints" / "step_0000004" / "generator.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])  # truncated, as by a crash mid-write
    with pytest.raises(CorruptCheckpointError, match=f"{broken} is missing or corrupt"):
        Trainer(cfg).resume(tmp_path / "checkpoints")
    resumed = Trainer(cfg)
    resumed.resume(tmp_path / "checkpoints", fallback=True)
    assert resumed.step == 2
    assert "trying an earlier checkpoint" in capsys.readouterr().err
    args = ["--resume", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "again")]
    assert cli_main(args) == 2
    assert "checkpoint error:" in capsys.readouterr().err
    assert cli_main([*args, "--resume-fallback", "--set", "train.steps=3"]) == 0
