"""What pairs: two runs' per-sample tables joined item by item (prompt, image, noise seed) at
one evaluation step, and a row's seeds stacked into ``[seeds, items]``. Anything that does not
pair -- another prompt subset, image count, evaluation seed or step, a table without a seed
column, seeds with other item counts -- is refused with one line naming the runs, never
dropped silently and never paired by row order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ITEM_KEYS = ("index", "replica", "seed")  # a sample's prompt, image and noise seed


class UnpairedError(ValueError):
    """Two runs whose items (prompts, images, noise seeds, evaluation step) do not pair."""


def evaluated_step(table: pd.DataFrame, name: str) -> int | None:
    """The one step ``table`` was evaluated at (None: it records none); refused when several."""
    if "step" not in table:
        return None
    steps = sorted(set(table["step"].tolist()))
    if len(steps) != 1:
        raise UnpairedError(f"{name}: its table mixes evaluation steps {steps}; pick one step")
    return int(steps[0])


def paired_differences(
    a: pd.DataFrame, b: pd.DataFrame, metric: str, names: tuple[str, str] = ("A", "B")
) -> pd.DataFrame:
    """Per-item ``a - b`` of ``metric`` with the item's group. Refused unless both tables hold
    the same items (prompt, image and noise seed) at the same evaluation step -- or one side
    at step 0, a model that was not trained (Table 2's init row) set against the other's."""
    for table, other, name in ((a, b, names[0]), (b, a, names[1])):
        missing = [k for k in (*ITEM_KEYS, "step") if k in other and k not in table]
        if missing:
            raise UnpairedError(
                f"{name} records no {' or '.join(missing)} column and the "
                "other run does: its items cannot be matched to them"
            )
        absent = [k for k in ("index", "group", metric) if k not in table]
        if absent:
            raise UnpairedError(
                f"{name} records no {', '.join(absent)} column: nothing to pair on {metric}"
            )
        if len(table) < 2:
            raise UnpairedError(f"{name}: {len(table)} item(s) of {metric}; a comparison needs 2+")
    steps = evaluated_step(a, names[0]), evaluated_step(b, names[1])
    if steps[0] != steps[1] and 0 not in steps:
        raise UnpairedError(
            f"{names[0]} was evaluated at step {steps[0]}, {names[1]} at step "
            f"{steps[1]}: the same step must be compared"
        )
    keys = [k for k in ITEM_KEYS if k in a]
    left, right = a.set_index(keys), b.set_index(keys)
    if left.index.has_duplicates or right.index.has_duplicates:
        raise UnpairedError(
            f"{names[0]} / {names[1]}: items repeat within a run (keys {keys}); one row per item"
        )
    only_a, only_b = left.index.difference(right.index), right.index.difference(left.index)
    if len(only_a) or len(only_b):
        raise UnpairedError(
            f"{len(only_a)} items only in {names[0]}, {len(only_b)} only in {names[1]} (keys "
            f"{keys}): the runs were not scored on the same prompts, images and noise "
            "(eval.benchmarks, eval.images_per_prompt, eval.seed must match)"
        )
    joined = left[[metric, "group"]].join(right[[metric]].add_suffix("_b")).sort_index()
    diff = (joined[metric] - joined[f"{metric}_b"]).to_numpy(dtype=np.float64)
    if not np.isfinite(diff).all():
        raise UnpairedError(
            f"{metric}: non-finite values in {names[0]} or {names[1]}; failed "
            "items are excluded upstream"
        )
    return pd.DataFrame({"group": joined["group"].to_numpy(), "diff": diff})


def stack_seeds(
    per_seed: dict[str, pd.DataFrame], names: tuple[str, str] = ("A", "B")
) -> tuple[np.ndarray, np.ndarray]:
    """A row's paired differences, one table per seed (:func:`paired_differences`), as
    ``([seeds, items], groups)``; refused when the seeds paired other numbers of items or
    other prompt groups (another subset in one seed: a per-seed mean would not mean the same)."""
    counts = {seed: len(d) for seed, d in per_seed.items()}
    if len(set(counts.values())) > 1:
        raise UnpairedError(
            f"{names[0]} vs {names[1]}: the seeds pair different numbers of "
            f"items {counts}; every seed must be scored on the same "
            "benchmarks and sizes"
        )
    tables = list(per_seed.values())
    groups = tables[0]["group"].to_numpy()
    if any(not np.array_equal(t["group"].to_numpy(), groups) for t in tables[1:]):
        raise UnpairedError(
            f"{names[0]} vs {names[1]}: the seeds' items fall in other prompt "
            "groups; every seed must be scored on the same prompts"
        )
    return np.stack([t["diff"].to_numpy() for t in tables]), groups


def shared_seeds(
    seeds_a: set[str], seeds_b: set[str], names: tuple[str, str]
) -> tuple[list[str], str]:
    """The seeds both rows finished (seed pairs with seed), and one line naming what was left
    out when their seed sets differ ("" when they do not)."""
    only = [
        f"seeds {sorted(mine)} only in {name}"
        for mine, name in ((seeds_a - seeds_b, names[0]), (seeds_b - seeds_a, names[1]))
        if mine
    ]
    note = f"{', '.join(only)} (failed or not run): left out, seeds pair one to one" if only else ""
    return sorted(seeds_a & seeds_b, key=lambda s: (len(s), s)), note


def read_items(trial_dir: Path, bench: str, step: int) -> pd.DataFrame | None:
    """The per-sample rows a trial wrote for ``bench`` at ``step`` (``items/<bench>.jsonl``,
    :class:`distar.runtime.callbacks.JsonlLogger`); None when it wrote none."""
    path = Path(trial_dir) / "items" / f"{bench}.jsonl"
    if not path.exists():
        return None
    table = pd.read_json(path, lines=True, dtype={"prompt": str, "group": str})
    table = table[table["step"] == step]
    return None if table.empty else one_row_per_item(table)


def one_row_per_item(table: pd.DataFrame) -> pd.DataFrame:
    """An item's last row at its step: a retried trial may record an evaluation twice (the same
    step, the same values)."""
    return table.drop_duplicates([k for k in (*ITEM_KEYS, "step") if k in table], keep="last")
