"""The units of a run's reward and CFG scales: chosen in the config, recorded as tags, printed
by the report (the reward units' effect on the reward itself: tests/test_sd_world.py)."""

from __future__ import annotations

import pandas as pd

from analysis.report import units_line
from distar.config.tree import Config
from distar.track.tracking import CFG_CONVENTION_TAG, REWARD_UNITS_TAG, unit_tags


def test_every_run_records_its_items():
    assert unit_tags(Config.for_world("sdxl")) == {
        REWARD_UNITS_TAG: "PickScore's cosine (world.reward_units)",
        CFG_CONVENTION_TAG: "distar",
    }
    logit = Config.for_world(
        "sd15",
        {"world.reward_units": "logit", "loss.cfg_convention": "diffusers", "loss.cfg_scale": 8.5},
    )
    assert unit_tags(logit) == {
        REWARD_UNITS_TAG: "PickScore's logit (world.reward_units)",
        CFG_CONVENTION_TAG: "diffusers",
    }
    # the embedded world's reward says its bounds (it has no PickScore)
    gmm = unit_tags(Config.for_world("gmm", {"world.reward": "bump"}))
    assert gmm == {
        REWARD_UNITS_TAG: "the bump reward, between 0 and 1 (world.reward)",
        CFG_CONVENTION_TAG: "distar",
    }


def test_the_report_prints_the_units_the_runs_recorded():
    runs = pd.DataFrame(
        {
            f"tags.{REWARD_UNITS_TAG}": ["cosine", "cosine"],
            f"tags.{CFG_CONVENTION_TAG}": ["distar", "distar"],
        }
    )
    line = units_line(runs)
    assert "reward r in cosine" in line and "in the distar convention" in line
    assert "not recorded" in units_line(pd.DataFrame({"x": [1]}))
