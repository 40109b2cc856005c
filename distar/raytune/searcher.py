"""A searched sweep: Optuna (through Tune's OptunaSearch) over reward scale, CFG scale,
pseudo-Huber c and guidance mode, with ASHA stopping weak trials at evaluation rungs."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict
from typing import Any

from distar.config import paper
from distar.config.benchmarks import logged_name, lower_is_better
from distar.config.keys import K
from distar.config.tree import Config
from distar.raytune.grid import unset_paper_keys
from distar.raytune.spec import SweepContext, TrialSpec


def search_space(
    base: Config,
    seed: int,
    alpha_rew: tuple[float, float],
    alpha_cfg: tuple[float, float],
    huber_c: tuple[float, float] | None,
):
    """``space(ctx)`` for :func:`distar.raytune.tuner.run_sweep`: the base config with the
    searched leaves. Reward and CFG scales are drawn in the paper's units (alpha_rew, alpha_cfg,
    as the grid's rows) and translated per world in the trial driver (:meth:`TrialSpec.config`).
    ``huber_c`` None: not searched, every trial at the base config's (as the grid's rows)."""
    from ray import tune

    flat: dict[str, Any] = {**unset_paper_keys(base), K.train.seed: seed}
    if huber_c is not None:
        flat[K.loss.huber_c] = tune.loguniform(*huber_c)
    flat[K.loss.guidance] = tune.choice(["in", "out"])
    scales = {"alpha_rew": tune.loguniform(*alpha_rew), "alpha_cfg": tune.uniform(*alpha_cfg)}

    def space(ctx: SweepContext) -> dict[str, Any]:
        spec = TrialSpec("", "search", seed, flat, paper=scales)
        return {"trial": asdict(spec), "sweep": asdict(ctx)}

    return space


STOPPERS = ("asha", "paired", "both")  # what stops a searched trial early
# ASHA's reduction factor: a trial goes on past a rung only in the best 1/ASHA_REDUCTION of the
# trials recorded there. With 4 the rungs fall at the first evaluation and the fourth (iteration
# grace * 4**k), so with the default 4 evaluations the one binding cut is the first: on the
# embedded world the first evaluation ranks the trials that will end with little reward below
# the rest, while at the second and third evaluations the trials that later fall below the
# precision floor score best (they spend the most reward), so a cut there (reduction 2: rungs 1,
# 2, 4; 3: rungs 1, 3) stops the settings that would end best (README: measured).
ASHA_REDUCTION = 4


# Where Tune's flattened space ("/"-joined, as Optuna names its parameters) keeps each searched
# value of :func:`search_space`
PARAMETER = {
    "huber_c": f"trial/flat_config/{K.loss.huber_c}",
    "guidance": f"trial/flat_config/{K.loss.guidance}",
    "alpha_rew": "trial/paper/alpha_rew",
    "alpha_cfg": "trial/paper/alpha_cfg",
}


def paper_prior(
    huber_c: float,
    alpha_rew: tuple[float, float],
    alpha_cfg: tuple[float, float],
    huber_range: tuple[float, float] | None,
) -> list[dict[str, Any]]:
    """Table 2's DI* rows (score divergence) inside the searched ranges, as the searcher's first
    points, best published ImageReward first: what the paper found before any search. Each at
    ``huber_c`` (the base config's, as the grid trains them; clipped into ``huber_range``, and
    not a point's value where c is not searched: None)."""
    rows = [
        row
        for row in sorted(paper.TABLE2, key=lambda r: -r.published.image_reward)
        if row.trains
        and row.divergence == "score"
        and alpha_rew[0] <= row.alpha_rew <= alpha_rew[1]
        and alpha_cfg[0] <= row.alpha_cfg <= alpha_cfg[1]
    ]
    c = (
        {}
        if huber_range is None
        else {PARAMETER["huber_c"]: min(max(huber_c, huber_range[0]), huber_range[1])}
    )
    return [
        c
        | {
            PARAMETER["guidance"]: row.guidance,
            PARAMETER["alpha_rew"]: float(row.alpha_rew),
            PARAMETER["alpha_cfg"]: float(row.alpha_cfg),
        }
        for row in rows
    ]


def same_point(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``b`` holds ``a``'s searched parameters (a key of each): names equal, numbers to 1e-9
    (a corner reached through a log scale comes back as 299.99999999999994 as well as 300)."""
    return all(
        a[k] == b[k] if isinstance(a[k], str) else math.isclose(a[k], b[k], rel_tol=1e-9) for k in a
    )


SAMPLERS = ("gp", "tpe", "pareto")  # what proposes a searched trial's settings
# How often in a row a model's proposal of a finished trial's point is answered from that
# trial's record and the model asked again (:func:`floor_search_class`); once more, and the
# search ends: the model has converged
REPEATS_ANSWERED = 3
CONSTRAINT = "floor_shortfall"  # the constraint gp models (Optuna's Trial.set_constraint)


class FloorShortfall:
    """``result -> shortfall``: how far a trial's ``floor_metric`` is on the wrong side of
    ``floor`` (<= 0: the floor holds; a ceiling for lower-is-better metrics such as FID), in
    the metric's units; 1.0 (short) where the result has none (a trial stopped before its first
    evaluation). A class, not a closure: Tune pickles the searcher into the sweep's
    checkpoint."""

    def __init__(self, floor_metric: str, floor: float) -> None:
        self.key = logged_name(floor_metric)
        self.sign = -1.0 if lower_is_better(floor_metric) else 1.0
        self.floor = floor

    def __call__(self, result: dict[str, Any] | None) -> float:
        value = (result or {}).get(self.key)
        return 1.0 if value is None else self.sign * (self.floor - float(value))


def optuna_searcher(
    sampler: str,
    num_samples: int,
    seed: int,
    objectives: tuple[str, str],
    floor: float | None,
    prior: list[dict[str, Any]] | None = None,
    warm: list | None = None,
):
    """Tune's OptunaSearch with ``sampler`` (seeded), over ``objectives`` = (metric, floor
    metric) and the floor the scalar objective holds (what ASHA stops on and the search is
    judged by: the metric less a penalty per unit of shortfall below the floor):

    - ``gp``: Optuna's GPSampler on the metric, with the floor as a constraint it models apart
      (constrained expected improvement). Why not the scalar: a trial past the floor scores
      the penalty (-0.3 to -0.9 where good trials score ~0.1, measured on the embedded world),
      a cliff that a GP's smooth model of one scalar cannot follow;
    - ``tpe``: TPE on the scalar objective (it ranks, so the cliff does not distort it);
    - ``pareto``: multi-objective TPE over both metrics, which spreads its trials along their
      front instead of climbing the objective.

    ``prior`` (:func:`paper_prior`): points tried first; the sampler's first draw waits until
    each of them has ended (:func:`floor_search_class`), and gp then models from them instead
    of drawing max(3, samples / 4) trials at random first. ``warm``
    (gp only; :class:`distar.raytune.warm.WarmPoint`): finished runs the GP observes before the
    first trial; its random first draws count them."""
    import optuna

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: got {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    # Optuna's default is 10 random draws before either model acts: a 12-trial search would be
    # a random search. A quarter of the budget (at least 3) explores; the model proposes the rest.
    startup = max(3, num_samples // 4)
    metrics = [logged_name(m) for m in objectives]
    modes = ["min" if lower_is_better(m) else "max" for m in objectives]
    if warm and sampler != "gp":
        raise ValueError(f"warm start: only with sampler gp, not {sampler!r}")
    if sampler == "gp":
        if floor is None:
            raise ValueError("sampler gp: needs the floor metric's floor")
        # With a prior, its ended trial is the GP's first observation: it models from there
        # rather than after a quarter of the budget drawn at random (README, the search table).
        chosen = optuna.samplers.GPSampler(seed=seed, n_startup_trials=1 if prior else startup)
        return floor_search_class()(
            FloorShortfall(objectives[1], floor),
            warm=warm,
            metric=metrics[0],
            mode=modes[0],
            sampler=chosen,
            points_to_evaluate=prior or None,
        )
    chosen = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    metric, mode = (metrics, modes) if sampler == "pareto" else ("objective", "max")
    return floor_search_class()(
        None, metric=metric, mode=mode, sampler=chosen, points_to_evaluate=prior or None
    )


@functools.cache
def floor_search_class():
    """Tune's OptunaSearch, handing on each trial's floor shortfall and holding its draws back
    until the prior's trials have ended (built on first use: Ray Tune is heavy to import)."""
    from ray.tune.search.optuna import OptunaSearch

    class FloorSearch(OptunaSearch):
        """OptunaSearch that sets each finished trial's floor shortfall as its Optuna
        constraint (what gp models beside the metric) before telling its value; its first
        suggestions are the prior's points (``points_to_evaluate``, queued in order), and no
        drawn trial starts until each of those has ended. Why: ASHA lets the first trial to
        reach a rung through with nothing to compare it to, so a draw started beside the prior's
        trial ran on unjudged whenever it reported first (measured: in 3 of 5 searcher seeds a
        random draw that scored under a third of the prior trial's first evaluation trained
        all 200 steps); and a draw started once the prior's trial had only reported its first
        evaluation was judged against that one trial (README: "draws wait until the prior's
        trials have ended"). A drawn point that a finished trial already holds is answered
        from that trial, not trained again (:meth:`answer`): the GP re-proposed a point it
        had run in 7 of 10 searcher seeds (a full trial each). A model that proposes such
        points ``REPEATS_ANSWERED + 1`` times in a row has converged: the search ends."""

        def __init__(self, shortfall, warm=None, **kwargs) -> None:
            self.warm = list(warm or ())  # first: OptunaSearch sets up a study given a space
            super().__init__(**kwargs)
            self.shortfall = shortfall
            # prior points not yet suggested
            self.prior_left = len(kwargs.get("points_to_evaluate") or ())
            self.prior_unseen: set[str] = set()  # prior trials without a result yet

        def _setup_study(self, mode):
            """The study, then each warm run told as a finished trial with its constraint,
            before the prior's points are queued (Optuna asks queued points first)."""
            from ray.tune.utils.util import validate_warmstart

            queued, self._points_to_evaluate = self._points_to_evaluate, []
            super()._setup_study(mode)  # the study, nothing queued
            for point in self.warm:
                self._ot_study.enqueue_trial(point.params)
                trial = self._ot_study.ask(self._space)
                trial.set_constraint(CONSTRAINT, point.shortfall)
                self._ot_study.tell(trial, point.value)
            self._points_to_evaluate = queued
            if queued:
                validate_warmstart(self._space, queued, None)  # as OptunaSearch's own would
                for point in queued:
                    self._ot_study.enqueue_trial(point)

        def suggest(self, trial_id):
            if not self.prior_left and self.prior_unseen:
                return None  # Tune asks again later
            if self.prior_left:
                self.prior_left -= 1
                self.prior_unseen.add(trial_id)
                return super().suggest(trial_id)
            for _ in range(REPEATS_ANSWERED + 1):
                params = super().suggest(trial_id)
                twin = self.finished_twin(self._ot_trials[trial_id])
                if twin is None:
                    return params
                self.answer(self._ot_trials.pop(trial_id), twin)
            # the model insists on a point it has run: it has converged there, and a trial
            # more would repeat that one
            print(
                f"search: the model proposed {twin.params} {REPEATS_ANSWERED + 1} times in a "
                "row, each answered from the trial that ran it: it has converged there; no "
                "more trials start"
            )
            return self.FINISHED

        def finished_twin(self, trial):
            """A finished trial of the study (run, warm or answered) at ``trial``'s point
            (:func:`same_point`), else None."""
            from optuna.trial import TrialState

            done = self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            return next((t for t in done if same_point(trial.params, t.params)), None)

        def answer(self, trial, twin) -> None:
            """Tell ``trial`` its twin's value and constraints: a search's trials share its
            seed, so a point run again ends exactly as it did (measured: the same four
            evaluations to the last digit; a warm twin's record is what the GP holds for the
            point anyway), and training it would spend a trial on nothing."""
            for key, value in twin.constraints.items():
                trial.set_constraint(key, value)
            self._ot_study.tell(trial, twin.values)

        def on_trial_complete(self, trial_id, result=None, error=False) -> None:
            self.prior_unseen.discard(trial_id)
            trial = self._ot_trials.get(trial_id)  # Ray 2.60's: pinned in pyproject.toml
            if self.shortfall is not None and trial is not None:
                trial.set_constraint(CONSTRAINT, self.shortfall(result))
            super().on_trial_complete(trial_id, result, error)

    return FloorSearch


def search_tune_config(
    num_samples: int,
    max_concurrent: int,
    seed: int,
    max_rungs: int,
    objectives: tuple[str, str],
    stopper: str = "asha",
    prior: list[dict[str, Any]] | None = None,
    sampler: str = "gp",
    floor: float | None = None,
    reduction: int = ASHA_REDUCTION,
    warm: list | None = None,
):
    """The search's TuneConfig: :func:`optuna_searcher` (``floor``: the floor metric's floor,
    or ceiling); with ``stopper`` asha or both, ASHA stops weak trials on the scalar
    ``objective`` (the first metric with a floor on the second), its rungs at evaluations 1,
    ``reduction``, ``reduction``**2, ... (the paired stopper is :func:`paired_stopper`)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    searcher = optuna_searcher(sampler, num_samples, seed, objectives, floor, prior, warm)
    scheduler = (
        ASHAScheduler(
            metric="objective",
            mode="max",
            time_attr="training_iteration",
            max_t=max_rungs + 1,  # + the final result each trial driver reports itself
            grace_period=1,
            reduction_factor=reduction,
        )
        if stopper in ("asha", "both")
        else FIFOScheduler()
    )
    if isinstance(scheduler, ASHAScheduler):
        record_warm_rungs(scheduler, warm or [])
    return tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent,
        # not reused: a driver whose trial ASHA stopped cannot be reset for the next trial
        # (Tune then fails that trial: "reuse requires reset_config()")
        reuse_actors=False,
    )


def record_warm_rungs(asha, warm: list) -> None:
    """Each warm run's objective at a rung's evaluation recorded there, as a finished trial of
    the search's would be (``WarmPoint.rungs``): a trial is then cut against those too, not
    against the one or two trials that reached the rung before it. Why: the GP's first two
    trials start together, and the first to report passes; when that was the setting about to
    fall below the floor (the highest early reward), the other was cut behind it alone
    (measured: 3 of 10 warm-started searches; ASHA's rungs are Ray 2.60's, pinned)."""
    for bracket in asha._brackets:
        for milestone, recorded in bracket._rungs:
            for i, point in enumerate(warm):
                if len(point.rungs) >= milestone:
                    recorded[f"warm-{i}"] = point.rungs[milestone - 1]


def paired_stopper(
    stopper: str, metric: str, alpha: float, evaluations: int, run_sd: float, trials: int
):
    """The paired stopper for ``stopper`` paired or both (None for asha): ``metric``'s
    per-sample values against each trial above it at every evaluation; any trial as good as the
    best is stopped with probability <= ``alpha`` over the search's ``trials`` and their
    ``evaluations`` (the count the trainer makes), given ``run_sd``, the metric's sd between
    training runs of one setting."""
    if stopper not in ("paired", "both"):
        return None
    from distar.raytune.paired_stop import PairedStopper  # Ray Tune: only for a real search

    return PairedStopper(metric, alpha, evaluations, run_sd, trials)


def pareto_front(rows: list[dict[str, Any]], objectives: tuple[str, str]) -> list[dict[str, Any]]:
    """The finished trials no other finished trial beats on both metrics (directions as the
    searcher's), best first on the first metric."""
    sign = [(-1.0 if lower_is_better(m) else 1.0) for m in objectives]
    keys = [logged_name(m) for m in objectives]
    done = [r for r in rows if not r["error"] and all(k in r for k in keys)]

    def score(r):
        return [s * float(r[k]) for s, k in zip(sign, keys, strict=True)]

    front = [
        r
        for r in done
        if not any(
            all(o >= m for o, m in zip(score(q), score(r), strict=True)) and score(q) != score(r)
            for q in done
        )
    ]
    return sorted(front, key=lambda r: -score(r)[0])
