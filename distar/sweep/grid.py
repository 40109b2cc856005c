"""The paper's Table 2 ablation as data, and its expansion into sweep trials.

Rows carry the paper's own (alpha_rew, alpha_cfg). Each world's preset states how those scales
translate to its own (``WorldPreset.paper_scales``): the embedded world's reward is in [-1, 1]
and its CFG acts on a 2-D mixture, so the paper's 100 / 7.5 become 1.0 / 1.0 there; the SD
worlds take the paper's values untranslated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distar.config import Config, ConfigError, world_preset
from distar.sweep.trial import TrialSpec


@dataclass(frozen=True)
class AblationRow:
    label: str
    paper_model: str  # the model column of shared/data/paper_tables.csv, table 2
    divergence: str
    guidance: str
    reward_scale: float  # paper units
    cfg_scale: float  # paper units
    trains: bool = True  # False: the initial model, evaluated without training


TABLE2: tuple[AblationRow, ...] = (
    AblationRow("init (stage 0 / DMD2)", "DMD2-SDXL (init model)", "kl", "in", 0, 0, trains=False),
    AblationRow("KL, no CFG", "DI++-SDXL (KL)", "kl", "in", 0, 0),
    AblationRow("Diff-Instruct (KL + CFG)", "DI++-SDXL (= Diff-Instruct)", "kl", "in", 0, 7.5),
    AblationRow("DI++ (KL + reward + CFG)", "DI++-SDXL (KL)", "kl", "in", 100, 7.5),
    AblationRow("DI*-Out", "DI*-Out-SDXL", "score", "out", 100, 7.5),
    AblationRow(
        "DI*-In, no reward, no CFG", "DI*-In-SDXL (baseline no reward)", "score", "in", 0, 0
    ),
    AblationRow("SIM (score + CFG)", "DI*-In-SDXL (= SIM only CFG)", "score", "in", 0, 7.5),
    AblationRow("DI*-In α_rew 1", "DI*-In-SDXL (human reward + CFG)", "score", "in", 1, 7.5),
    AblationRow("DI*-In α_rew 10", "DI*-In-SDXL", "score", "in", 10, 7.5),
    AblationRow("DI*-In α_rew 100, α_cfg 4.5", "DI*-In-SDXL", "score", "in", 100, 4.5),
    AblationRow("DI*-In α_rew 100, α_cfg 7.5 (best)", "DI*-In-SDXL", "score", "in", 100, 7.5),
)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def paper_to_world(alpha_rew: float, alpha_cfg: float, world: str) -> dict[str, float]:
    """The paper's (alpha_rew, alpha_cfg) in a world's own units (its preset's factors)."""
    reward_factor, cfg_factor = world_preset(world).paper_scales
    return {
        "loss.reward_scale": alpha_rew * reward_factor,
        "loss.cfg_scale": alpha_cfg * cfg_factor,
    }


def row_overrides(row: AblationRow, world: str) -> dict[str, object]:
    flat: dict[str, object] = {
        "loss.divergence": row.divergence,
        "loss.guidance": row.guidance,
        **paper_to_world(row.reward_scale, row.cfg_scale, world),
    }
    if not row.trains:
        flat["train.steps"] = 0
    return flat


def uses_huber_c(row: AblationRow, base: Config) -> bool:
    """Only trained score-divergence rows with the pseudo-Huber distance read ``loss.huber_c``:
    crossing any other row with several c values would run identical trials."""
    return row.trains and row.divergence == "score" and base.loss.distance == "pseudo_huber"


def expand(
    rows: tuple[AblationRow, ...],
    base: Config,
    seeds: list[int],
    huber_cs: list[float] | None = None,
) -> list[TrialSpec]:
    """Rows x huber_c (for the rows that use it) x seeds -> trial specs (validated configs), in
    a stable order; no two trials share a config. A value given twice is refused, not merged."""
    for flag, values in (("--seeds", seeds), ("--huber-c", huber_cs or [])):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"{flag}: {repeated} given more than once; allowed: distinct values")
    trials = []
    for row in rows:
        cs = (huber_cs or [base.loss.huber_c]) if uses_huber_c(row, base) else [base.loss.huber_c]
        for c in cs:
            for seed in seeds:
                flat = {
                    **row_overrides(row, base.world.name),
                    "loss.huber_c": c,
                    "train.seed": seed,
                }
                config = base.with_overrides(flat)  # validates now, before any Ray trial
                key = f"{slug(row.label)}-c{c:g}-s{seed}"
                tags = {
                    "distar.paper_alpha_rew": f"{row.reward_scale:g}",
                    "distar.paper_alpha_cfg": f"{row.cfg_scale:g}",
                    "distar.guidance": row.guidance,
                    "distar.divergence": row.divergence,
                }
                trials.append(TrialSpec(key, row.label, seed, config.to_flat(), tags))
    return trials
