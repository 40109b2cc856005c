"""The loop's callbacks chosen in the config: the generator EMA (``train.ema``) and the LR
warm-up (``optim.warmup_steps``). Both are off by default (a default run is the run it was
before them: ``scripts/same_report.py``); on, each is held to its closed form, evaluation uses
the EMA's weights and puts the trained ones back bit-exactly, and a resumed run ends where an
uninterrupted one does, EMA and learning rates included.

Tolerances: the EMA is recomputed here in float64 from the fp32 weights of every step; fp32
rounding of ``lerp`` over a handful of steps stays within a few ulps of the weights' scale
(rtol 1e-6, atol 1e-7); a wrong decay (d vs 1 - d) is off by O(|p_t - p_0|), which is >1e-4
here (lr 1e-3). Learning rates are products of Python floats: compared exactly."""

import json

import pytest
import torch

from distar.config.tree import Config, ConfigError
from distar.loop.trainer import Trainer
from distar.runtime.callbacks import GeneratorEma, LrWarmup

SMALL = {
    "train.batch_size": 32,
    "train.log_every": 2,
    "eval.samples_per_prompt": 50,
    "eval.plot": False,
}


def config(tmp_path, **flat) -> Config:
    return Config().with_overrides({**SMALL, "train.out_dir": str(tmp_path), **flat})


def generator_params(trainer) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.world.generator.named_parameters()}


def test_both_are_off_by_default_and_refuse_values_out_of_range(world_cache, tmp_path):
    assert not [cb for cb in Trainer(config(tmp_path)).callbacks if cb.name]
    for key, bad in (("train.ema", 1.0), ("train.ema", -0.1), ("optim.warmup_steps", -1)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            Config().with_overrides({key: bad})


def test_ema_is_the_exponential_average_of_every_steps_weights(world_cache, tmp_path):
    decay = 0.7
    # lr 1e-3: the weights move ~1e-3 a step, far above fp32 rounding (the default 1e-5 would
    # move them as little as the tolerance)
    trainer = Trainer(config(tmp_path, **{"train.ema": decay, "optim.generator.lr": 1e-3}))
    (ema,) = [cb for cb in trainer.callbacks if isinstance(cb, GeneratorEma)]
    want = {k: v.double() for k, v in generator_params(trainer).items()}
    for _ in range(4):
        trainer.train_step()
        for k, p in generator_params(trainer).items():
            want[k] = decay * want[k] + (1 - decay) * p.double()
    moved = max(
        (ema.shadow[k].double() - generator_params(trainer)[k].double()).abs().max() for k in want
    )
    assert moved > 1e-4  # the average lags the weights: a copy of them would not
    for k, value in want.items():
        torch.testing.assert_close(ema.shadow[k].double(), value, rtol=1e-6, atol=1e-7)


def test_evaluation_sees_the_ema_weights_and_gives_the_trained_ones_back(world_cache, tmp_path):
    trainer = Trainer(config(tmp_path, **{"train.ema": 0.5}))
    for _ in range(3):
        trainer.train_step()
    (ema,) = [cb for cb in trainer.callbacks if isinstance(cb, GeneratorEma)]
    trained, seen = generator_params(trainer), []
    evaluate = trainer.world.evaluate

    def spy(*args):
        seen.append(generator_params(trainer))
        return evaluate(*args)

    trainer.world.evaluate = spy
    trainer.evaluate(final=False)
    assert all(torch.equal(seen[0][k], ema.shadow[k]) for k in ema.shadow)
    assert not all(torch.equal(seen[0][k], trained[k]) for k in ema.shadow)
    after = generator_params(trainer)
    assert all(torch.equal(after[k], trained[k]) for k in trained)


def test_warmup_ramps_every_learning_rate_linearly(world_cache, tmp_path):
    n = 4
    trainer = Trainer(config(tmp_path, **{"optim.warmup_steps": n}))
    assert any(isinstance(cb, LrWarmup) for cb in trainer.callbacks)
    base = {
        "generator": trainer.config.optim.generator.lr,
        "assistant": trainer.config.optim.assistant.lr,
    }
    for step in range(6):
        for name, opt in trainer.method.optimizers().items():
            assert opt.param_groups[0]["lr"] == base[name] * min(1.0, (step + 1) / n)
        trainer.train_step()


def test_resume_restores_the_ema_and_the_warmup(world_cache, tmp_path):
    on = {"train.ema": 0.8, "optim.warmup_steps": 5}
    straight = Trainer(config(tmp_path / "a", **on, **{"train.steps": 6}))
    straight.train()
    Trainer(config(tmp_path / "b", **on, **{"train.steps": 3})).train()
    resumed = Trainer(config(tmp_path / "b", **on, **{"train.steps": 6}))
    resumed.resume(tmp_path / "b" / "checkpoints")
    resumed.train()
    a, b = straight.callbacks, resumed.callbacks
    for cb_a, cb_b in zip(a, b, strict=True):
        assert type(cb_a) is type(cb_b)
        assert all(torch.equal(cb_a.tensors()[k], cb_b.tensors()[k]) for k in cb_a.tensors())
    for opt_a, opt_b in zip(
        straight.method.optimizers().values(), resumed.method.optimizers().values(), strict=True
    ):
        assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
    pa, pb = generator_params(straight), generator_params(resumed)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_resuming_with_a_callback_the_checkpoint_lacks_names_its_field(world_cache, tmp_path):
    Trainer(config(tmp_path, **{"train.steps": 1})).train()
    for key, value in (("train.ema", 0.9), ("optim.warmup_steps", 3)):
        resumed = Trainer(config(tmp_path, **{"train.steps": 2, key: value}))
        with pytest.raises(ConfigError, match=f"{key}: on, but checkpoint .* without it"):
            resumed.resume(tmp_path / "checkpoints")


@pytest.mark.parametrize("total", [8, 4], ids=["mid-run", "at its last step"])
def test_a_resumed_run_drops_the_records_it_will_write_again(tmp_path, total):
    """Resumed at step 4 of ``total``: the records after 4 go (written again). Resumed at its
    last step, the run evaluates again at 4: its evaluation's records and items at 4 go too (a
    retry of a trial cut off after its worker finished recorded its final evaluation twice),
    the train report at 4 stays (no step runs again)."""
    from distar.runtime.callbacks import JsonlLogger

    records = [("train", 2), ("eval", 2), ("train", 4), ("eval", 4), ("benchmark", 4)]
    records += [("end", 4)] if total == 4 else [("train", 6), ("eval", 6)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"kind": k, "step": s}) + "\n" for k, s in records)
    )
    (tmp_path / "items").mkdir()
    items = tmp_path / "items" / "eval.jsonl"
    items.write_text("".join(json.dumps({"step": s, "v": 1.0}) + "\n" for s in (2, 4, 6)))
    JsonlLogger(tmp_path).on_train_start(4, total)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    kept = [(r["kind"], r["step"]) for r in map(json.loads, lines)]
    rows = [json.loads(x)["step"] for x in items.read_text().splitlines()]
    if total == 4:
        assert kept == [("train", 2), ("eval", 2), ("train", 4)] and rows == [2]
    else:
        assert kept == records[:5] and rows == [2, 4]
