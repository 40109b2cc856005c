import dataclasses

import pytest

from distar.config import choices
from distar.config import tree as C
from distar.config.gmm import GMM_REWARD_NAMES, GMMWorldConfig
from distar.config.tree import Config, ConfigError, LossConfig, parse_override
from distar.method.losses import DISTANCES, DIVERGENCES
from distar.util.registry import Registry
from distar.worlds.builders import WORLDS
from distar.worlds.gmm.rewards import GMM_REWARDS


def test_flat_dict_round_trip():
    cfg = Config().with_overrides(
        {
            "loss.reward_scale": 10,
            "noise.generator.p_mean": -2.0,
            "optim.assistant.lr": 1e-3,
            "world.dim": 3,
        }
    )
    flat = cfg.to_flat()
    assert flat["loss.reward_scale"] == 10.0 and flat["world.dim"] == 3
    assert flat["noise.generator.p_mean"] == -2.0
    assert all(not isinstance(v, dict) for v in flat.values())
    assert Config.from_flat(flat) == cfg


def test_dict_and_yaml_round_trip():
    cfg = Config(loss=LossConfig(divergence="kl", reward_scale=3.0, guidance="out", cfg_scale=4.5))
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg


def test_missing_keys_take_defaults_and_ints_become_floats():
    cfg = Config.from_flat({"loss.huber_c": 1})
    assert cfg.loss.huber_c == 1.0 and isinstance(cfg.loss.huber_c, float)
    assert cfg.train == C.TrainConfig()


@pytest.mark.parametrize(
    "key,value,expect",
    [
        ("loss.huber_c", -0.1, "loss.huber_c: got -0.1; allowed: (0.0, inf]"),
        ("loss.huber_c", 0.0, "loss.huber_c"),
        ("loss.guidance", "middle", "loss.guidance: got 'middle'; allowed: one of 'in', 'out'"),
        ("loss.divergence", "fisher", "'kl', 'score'"),
        ("loss.distance", "l1", "'l2', 'pseudo_huber'"),
        ("loss.cfg_scale", -1.0, "loss.cfg_scale: got -1.0"),
        ("loss.reward_scale", float("nan"), "a finite number"),
        ("loss.gradient_path", "approx", "'detached', 'exact'"),
        ("noise.generator.p_std", 0.0, "noise.generator.p_std"),
        ("noise.assistant.sigma_max", 0.001, "noise.assistant.sigma_max"),
        ("optim.assistant.lr", -1e-4, "optim.assistant.lr"),
        ("optim.assistant_rounds", 0, "optim.assistant_rounds"),
        ("train.batch_size", 0, "train.batch_size"),
        ("train.steps", 2.5, "train.steps: got 2.5; allowed: a value of type int"),
        ("train.device", "tpu", "train.device"),
        ("world.name", "sdxl-turbo", "world.name: got 'sdxl-turbo'"),
        ("world.reward", "likes", "world.reward"),
        ("world.mode_std", -1, "world.mode_std"),
        ("eval.plot", "yes", "eval.plot"),
    ],
)
def test_bad_values_fail_naming_field_and_allowed(key, value, expect):
    with pytest.raises(ConfigError) as err:
        Config.from_flat({key: value})
    assert expect in str(err.value)
    assert key.split(".")[-1] in str(err.value)


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'loss.reward_scal' \(did you mean 'loss.reward_scale'"):
        Config.from_flat({"loss.reward_scal": 1.0})


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="loss.huber_c"):
        LossConfig(huber_c=-1.0)
    with pytest.raises(ConfigError, match="world.dim"):
        GMMWorldConfig(dim=1)


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().loss.reward_scale = 3.0  # type: ignore[misc]


def test_override_parsing():
    assert parse_override("loss.reward_scale=10") == ("loss.reward_scale", 10)
    assert parse_override("loss.guidance=out") == ("loss.guidance", "out")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("loss.reward_scale")


def test_a_registry_holds_exactly_its_config_choices():
    """The config's choices and the implementations cannot drift apart: a registry refuses a
    name the config does not allow and, once filled, a choice without an implementation (the
    real registries call ``complete()`` where they are filled, so drift fails every import)."""
    registry = Registry("loss.distance", ("l2", "pseudo_huber"))
    registry.add("l2", object())
    with pytest.raises(KeyError, match="pseudo_huber has no implementation"):
        registry.complete()
    with pytest.raises(KeyError, match="'huber' is not a config choice"):
        registry.add("huber", object())
    registry.add("pseudo_huber", object())
    registry.complete()
    for real, allowed in (
        (DIVERGENCES, choices.DIVERGENCES),
        (DISTANCES, choices.DISTANCES),
        (GMM_REWARDS, GMM_REWARD_NAMES),
        (WORLDS, tuple(C.WORLD_CONFIGS)),
    ):
        assert real.choices == tuple(allowed) and real.names() == tuple(sorted(allowed))


def test_reward_choices_are_the_registry_names():
    with pytest.raises(ConfigError):
        GMMWorldConfig(reward="nope")
    for name in GMM_REWARDS.names():
        GMMWorldConfig(reward=name)


def test_every_world_has_a_base_preset():
    assert all(C.WORLD_PRESETS[name].world == name for name in C.WORLD_CONFIGS)
    assert all(p.world in C.WORLD_CONFIGS for p in C.WORLD_PRESETS.values())


def test_a_config_written_before_a_key_was_renamed_still_reads():
    """``loss.units`` became ``loss.distance_on``: an old run's config.yaml keeps loading."""
    old = Config.from_flat({"loss.units": "score"})
    assert old.loss.distance_on == "score" and "loss.units" not in old.to_flat()
    assert Config.from_yaml("loss:\n  units: score\n").loss.distance_on == "score"
