"""The search's warm start: which finished runs it observes, and that its GP models from them
before its first trial (``sweeps/search.py --warm-start``)."""

from __future__ import annotations

import pandas as pd
import pytest
from sweeps_common import TINY, dry_run

from distar.config.tree import Config, TrainConfig
from distar.raytune.searcher import PARAMETER, paper_prior, search_space, search_tune_config
from distar.raytune.spec import SweepContext, TrialSpec
from distar.raytune.warm import WarmPoint, untrained, warm_points

RANGES = ((1.0, 300.0), (0.0, 11.25), (0.01, 1.0))
OBJECTIVE = {"metric": "reward", "floor_metric": "precision", "floor": 0.9, "penalty": 10.0}
# the Table 2 grid's DI* rows inside the ranges, as the benchmark's grid (seed 0, 200 steps)
# measured them: (guidance, alpha_rew, alpha_cfg, reward, precision); reward climbs with
# alpha_rew while precision stays ~0.05 above the floor
GRID_ROWS = [
    ("out", 100.0, 7.5, 0.0465, 0.9495),
    ("in", 1.0, 7.5, 0.0029, 0.9500),
    ("in", 10.0, 7.5, 0.0123, 0.9485),
    ("in", 100.0, 4.5, 0.0392, 0.9435),
    ("in", 100.0, 7.5, 0.0453, 0.9435),
]


def setting(guidance: str, alpha_rew: float, alpha_cfg: float, huber_c: float = 0.1) -> dict:
    return {
        PARAMETER["guidance"]: guidance,
        PARAMETER["alpha_rew"]: alpha_rew,
        PARAMETER["alpha_cfg"]: alpha_cfg,
        PARAMETER["huber_c"]: huber_c,
    }


def grid_points() -> list[WarmPoint]:
    return [WarmPoint(setting(*r[:3]), r[3], 0.9 - r[4], "row") for r in GRID_ROWS]


def fake_run(base: dict, label: str, **changes) -> dict:
    """One finished trial run as MLflow's frame holds it: every config value as a string param
    (as the trial logs them), the paper's scales, the final metrics."""
    params = {**base, "paper.alpha_rew": 100.0, "paper.alpha_cfg": 7.5, **changes}
    metric_keys = ("reward", "precision", "status")
    row = {f"params.{k}": str(v) for k, v in params.items() if k not in metric_keys}
    return row | {
        "run_id": label,
        "status": changes.get("status", "FINISHED"),
        "tags.distar.final_step": str(params["train.steps"]),
        "tags.distar.label": label,
        "metrics.eval/reward": changes.get("reward", 0.05),
        "metrics.eval/precision": changes.get("precision", 0.93),
    }


def test_a_warm_start_observes_only_runs_trained_as_the_searchs_trials():
    """Runs of the search's function (same training config but for the searched keys, where
    and how precisely they were measured) become observations, each with the metric and its
    floor shortfall; every other run is left out naming what differs. Mutation: with the
    config comparison dropped from ``unusable``, the other-lr and other-steps runs are taken
    and this fails (run)."""
    base = Config().with_overrides({**TINY, "loss.divergence": "score"}).to_flat()
    runs = pd.DataFrame(
        [
            fake_run(base, "kept", **{"loss.guidance": "out", "loss.huber_c": 0.3}),
            # another seed, folder, evaluation size and schedule: the same function, measured
            # again (at other steps: no objective at the search's evaluations)
            fake_run(
                base,
                "other seed",
                precision=0.95,
                **{"train.seed": 4, "train.out_dir": "/x", "eval.samples_per_prompt": 7},
                **{"train.eval_every": 2},
            ),
            fake_run(base, "kl", **{"loss.divergence": "kl"}),
            fake_run(base, "sim", **{"paper.alpha_rew": 0.0}),
            fake_run(base, "c", **{"loss.huber_c": 3.0}),
            fake_run(base, "lr", **{"optim.generator.lr": 1e-3}),
            fake_run(base, "steps", **{"train.steps": 12}),
            fake_run(base, "failed", status="FAILED"),
            fake_run(base, "no precision", precision=float("nan")),
        ]
    )
    points, skipped = warm_points(runs, base, RANGES, OBJECTIVE)
    assert [p.label for p in points] == ["kept", "other seed"]
    assert points[0].params == setting("out", 100.0, 7.5, 0.3)
    assert points[0].value == 0.05 and points[0].shortfall == pytest.approx(0.9 - 0.93)
    assert points[1].shortfall == pytest.approx(-0.05)  # precision 0.95: 0.05 above the floor
    assert [p.run_id for p in points] == ["kept", ""]  # only where the evaluations fall alike
    why = dict(line.split(": ", 1) for line in skipped)
    assert why["kl"].startswith("loss.divergence kl (the search's: score)")
    assert "paper.alpha_rew 0 outside" in why["sim"] and "loss.huber_c 3 outside" in why["c"]
    assert why["lr"].startswith("optim.generator.lr 0.001") and why["steps"].startswith(
        "train.steps 12"
    )
    assert why["failed"] == "not finished (FAILED)" and why["no precision"] == "no eval/precision"
    # the prior's point a warm run observed is not trained again; the others are
    prior = paper_prior(0.1, *RANGES)[:2]  # DI*-Out 100/7.5, DI*-In 100/7.5
    assert untrained(prior, [WarmPoint(setting("out", 100.0, 7.5), 0.0, 0.0, "")]) == prior[1:]


def test_where_c_is_not_searched_a_warm_run_must_have_the_base_c():
    """The default search trains every trial at the base config's c: a run at another c
    observes another function and is left out naming it; a run at the base c is an
    observation without a c parameter (the GP's space has none), and the prior's point it
    observed is not trained again. Mutation: ``loss.huber_c`` left out of the comparison
    (as where c is searched) keeps the c 0.3 run (run)."""
    base = Config().with_overrides({**TINY, "loss.divergence": "score"}).to_flat()
    runs = pd.DataFrame(
        [
            fake_run(base, "base c", **{"loss.guidance": "out"}),
            fake_run(base, "other c", **{"loss.huber_c": 0.3}),
        ]
    )
    ranges = (*RANGES[:2], None)
    points, skipped = warm_points(runs, base, ranges, OBJECTIVE)
    assert [p.label for p in points] == ["base c"]
    assert skipped == ["other c: loss.huber_c 0.3 (the search's: 0.1)"]
    assert PARAMETER["huber_c"] not in points[0].params
    prior = paper_prior(0.1, *ranges)[:2]  # DI*-Out 100/7.5 (the run's), DI*-In 100/7.5
    assert untrained(prior, points) == prior[1:]


def test_a_warm_runs_objective_at_each_evaluation_of_the_searchs_schedule():
    """From the run's metric history at the search's evaluation steps (every 3 of 7 steps: 3,
    6 and the end, 7), the scalar objective (reward less 10 per unit of precision below 0.9);
    a history that stops early gives the evaluations up to there."""
    from types import SimpleNamespace

    from distar.raytune.warm import rung_values

    histories = {
        "eval/reward": {3: 0.02, 6: 0.05, 7: 0.06, 5: 9.0},
        "eval/precision": {3: 0.95, 6: 0.92, 7: 0.89, 5: 0.0},
    }

    class Client:
        def get_metric_history(self, run_id, key):
            return [SimpleNamespace(step=k, value=v) for k, v in histories[key].items()]

    schedule = TrainConfig(steps=7, eval_every=3).evaluation_steps()
    assert schedule == [3, 6, 7]
    assert rung_values(Client(), "r", schedule, OBJECTIVE) == pytest.approx((0.02, 0.05, -0.04))
    del histories["eval/precision"][7]
    assert rung_values(Client(), "r", schedule, OBJECTIVE) == pytest.approx((0.02, 0.05))


def test_asha_judges_the_first_trials_against_the_warm_runs_too():
    """The GP's first two trials start together; the one about to fall below the floor has the
    higher first evaluation (measured: 0.0382 against 0.0358, searcher seed 6). Judged against
    it alone, the other is cut; judged against the warm runs' first evaluations as well (the
    grid's, 0.008-0.025) it goes on, while a weak trial is still cut. Mutation, run here: the
    same events without the warm runs cut it."""
    rungs = [(0.0223,), (0.0218,), (0.0101,), (0.0077,), (0.0250,)]
    warm = [WarmPoint(setting("in", 1.0, 0.0), 0.0, 0.0, "", "r", r) for r in rungs]
    events = [("collapses", 1, 0.0382), ("ends_best", 1, 0.0358), ("weak", 1, 0.009)]
    assert warm_asha_stops(events, warm) == {"weak"}
    assert warm_asha_stops(events, []) == {"ends_best", "weak"}


def warm_asha_stops(events: list[tuple[str, int, float]], warm: list[WarmPoint]) -> set[str]:
    """The trials the search's ASHA stops, given ``warm`` runs and fed ``events`` (trial,
    evaluation, objective) in the order trials report them."""
    from types import SimpleNamespace

    asha = search_tune_config(11, 2, 0, 4, ("reward", "precision"), floor=0.9, warm=warm)
    asha = asha.scheduler
    stopped: set[str] = set()
    for name, evaluation, value in events:
        trial = SimpleNamespace(trial_id=name)
        asha.on_trial_add(None, trial)
        result = {"training_iteration": evaluation, "objective": value}
        if asha.on_trial_result(None, trial, result) == "STOP":
            stopped.add(name)
    return stopped


def first_suggestion(seed: int, warm: list[WarmPoint] | None, prior=None) -> TrialSpec:
    from ray.tune.utils.util import merge_dicts

    pair = ("reward", "precision")
    searcher = search_tune_config(11, 2, seed, 4, pair, prior=prior, floor=0.9, warm=warm)
    searcher = searcher.search_alg
    ctx = SweepContext("s", "sqlite:////tmp/x.db", "e", "/tmp/storage", "parent")
    space = search_space(Config().with_overrides(TINY), seed, *RANGES)(ctx)
    searcher.set_search_properties(None, None, space)
    spec = TrialSpec.from_params(merge_dicts(space, searcher.suggest("t0")))[0]
    if warm:  # the warm runs are finished trials of the study, each with its constraint
        told = [t for t in searcher._ot_study.trials if t.state.is_finished()]
        assert [t.value for t in told] == [p.value for p in warm]
        assert [t.constraints["floor_shortfall"] for t in told] == [p.shortfall for p in warm]
    return spec


def test_a_warm_started_gp_models_from_its_first_trial():
    """Given the grid's DI* rows (reward climbing with alpha_rew, precision well above the
    floor), the first trial of every searcher seed 0-4 is the GP's, up the climb (alpha_rew >=
    150), not one of the random first draws a cold search makes: those land there with
    probability 12 % per seed (log-uniform on 1-300). Mutation, the second assert: without the
    warm runs some seed's first draw lies below 150. And a prior point the warm runs did not
    observe is still the first trial (the warm runs are told before it is queued)."""
    warm = [first_suggestion(seed, grid_points()).paper["alpha_rew"] for seed in range(5)]
    assert min(warm) >= 150, warm
    cold = [first_suggestion(seed, None).paper["alpha_rew"] for seed in range(5)]
    assert min(cold) < 150, cold
    prior = [setting("in", 30.0, 2.0, 0.2)]
    spec = first_suggestion(0, grid_points(), prior)
    assert spec.paper == {"alpha_rew": 30.0, "alpha_cfg": 2.0}
    assert spec.flat_config["loss.huber_c"] == 0.2


def test_the_search_reads_a_grids_store_and_refuses_what_it_cannot_use(gmm_smoke):
    """``search.py --warm-start`` on the smoke grid's real MLflow store: its DI*-In rows (two
    seeds) are observed, the KL row is left out naming the divergence; a missing store, a
    store of runs trained otherwise and a sampler that models no constraint are refused
    naming the flag, before Ray starts."""
    storage, _ = gmm_smoke
    # the smoke grid's config: TINY over the preset's smoke settings (assistant fit 200 steps)
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k != "train.steps"]
    # --evals 6: every step, as the smoke grid's schedule (steps // 4 = 1)
    flags = ["--steps", "6", "--evals", "6", "--samples", "3", *sets]
    same = [*flags, "--set=world.assistant_fit_steps=200", "--warm-start", str(storage)]
    code, out, err = dry_run("search", same)
    assert code == 0, err
    assert "2 finished runs, observed before any trial" in out
    kept = [x for x in out.splitlines() if x.startswith("  DI*-In α_rew 100, α_cfg 7.5: reward ")]
    assert len(kept) == 2  # and each with its objective at the 6 evaluations, from its history
    assert all(len(x.split("objective at its evaluations ")[1].split(", ")) == 6 for x in kept)
    assert out.count("left out: KL, no CFG: loss.divergence kl (the search's: score)") == 2
    code, _, err = dry_run("search", [*flags, "--warm-start", str(storage)])
    assert code == 2 and "--warm-start: no run at sqlite:///" in err
    assert "world.assistant_fit_steps 200 (the search's: 3000)" in err
    code, _, err = dry_run("search", [*flags, "--warm-start", str(storage / "nothing")])
    assert code == 2 and "--warm-start: no MLflow store at" in err
    code, _, err = dry_run("search", [*same, "--sampler", "tpe"])
    assert code == 2 and "--warm-start: only with --sampler gp, not tpe" in err
