"""The paper's Table 2 ablation (:data:`distar.config.paper.TABLE2`) expanded into sweep trials:
rows x pseudo-Huber c (for the rows that read it) x seeds. Each trial carries its row's paper
values; :meth:`TrialSpec.resolved` translates them into the world's ``loss.*``."""

from __future__ import annotations

import re

from distar.config import paper
from distar.config.keys import K
from distar.config.paper import AblationRow
from distar.config.tree import Config, ConfigError
from distar.raytune.spec import TrialSpec
from distar.track.tracking import GROUP_TAG, setting_label


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def row_overrides(row: AblationRow) -> dict[str, object]:
    """What a row sets besides the paper's scales: its divergence, guidance, training or not."""
    flat: dict[str, object] = {K.loss.divergence: row.divergence, K.loss.guidance: row.guidance}
    if not row.trains:
        flat[K.train.steps] = 0
    return flat


def uses_huber_c(row: AblationRow, base: Config) -> bool:
    """Only trained score-divergence rows with the pseudo-Huber distance read ``loss.huber_c``:
    crossing any other row with several c values would run identical trials."""
    return row.trains and row.divergence == "score" and base.loss.distance == "pseudo_huber"


def row_tags(row: AblationRow) -> dict[str, str]:
    """The row's MLflow tags: which of the paper's models it is, its guidance and divergence."""
    tags = {
        paper.MODEL: row.model,
        "distar.guidance": row.guidance,
        "distar.divergence": row.divergence,
    }
    return {**tags, **({paper.METHOD: row.method} if row.method else {})}


def unset_paper_keys(base: Config) -> dict[str, object]:
    """The base config without the keys a trial's paper values set (``TrialSpec`` sets them)."""
    return {k: v for k, v in base.to_flat().items() if k not in paper.PAPER_KEYS}


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
    unset = unset_paper_keys(base)
    trials = []
    for row in rows:
        cs = (huber_cs or [base.loss.huber_c]) if uses_huber_c(row, base) else [base.loss.huber_c]
        for c in cs:
            crossed = len(cs) > 1  # then a row's runs at one c are one group, not all of them
            method = f"{row.short} c{c:g}" if crossed else row.short
            group = setting_label(row.label, {K.loss.huber_c: c} if crossed else {})
            tags = {**row_tags(row), GROUP_TAG: group}
            for seed in seeds:
                flat = {**unset, **row_overrides(row), K.loss.huber_c: c, K.train.seed: seed}
                spec = TrialSpec(
                    f"{slug(row.label)}-c{c:g}-s{seed}",
                    row.label,
                    seed,
                    flat,
                    tags,
                    {"alpha_rew": row.alpha_rew, "alpha_cfg": row.alpha_cfg},
                    method,
                )
                trials.append(spec.resolved())  # validates now, before any Ray trial
    return trials
