"""The sweep console's lines (stand-ins for Tune's trials) and what a trial asks Ray for."""

from __future__ import annotations

from types import SimpleNamespace

from distar.raytune.console import SweepConsole


def trial(step: int, paper: dict | None = None) -> SimpleNamespace:
    flat = {"train.steps": 600, "loss.guidance": "out", "loss.huber_c": 0.05}
    spec = {
        "label": "search" if paper else "DI* (in)",
        "seed": 3,
        "flat_config": flat,
        "key": "" if paper else "di-in-c0.05-s3",  # grid trials are keyed by their row
        "paper": paper or {"alpha_rew": 100, "alpha_cfg": 7.5},
    }
    result = {"step": step, "eval/reward": 0.123456, "eval/precision": 0.9}
    return SimpleNamespace(config={"trial": spec}, trial_id="ab12", last_result=result)


def finished_line(capsys, t: SimpleNamespace) -> str:
    console = SweepConsole(4, ("reward", "precision"))
    console.on_trial_start(0, [], t)
    console.on_trial_complete(0, [], t)
    return capsys.readouterr().out.strip()


def test_a_grid_trial_reads_as_its_row_seed_and_metrics(capsys):
    line = finished_line(capsys, trial(600))
    assert line.startswith("[1/4 done, 0 running, 0 failed, 0:00:00, ETA 0:00:00] finished ")
    assert line.endswith("finished DI* (in) · seed 3: reward 0.1235, precision 0.9")


def test_a_searched_trial_names_its_draw_and_an_early_stop(capsys):
    line = finished_line(capsys, trial(300, {"alpha_rew": 12.3456, "alpha_cfg": 4.5}))
    expected = (
        "stopped at step 300/600 search ab12 (paper.alpha_rew 12.3, paper.alpha_cfg 4.5, "
        "huber_c 0.05, out) · seed 3: reward 0.1235"
    )
    assert expected in line, line


def test_two_one_cpu_trials_and_their_drivers_fit_on_two_cpus():
    """A trial driver only waits on its TorchTrainer: with even a token CPU share, two 1-CPU
    trials plus their drivers ask for more than 2 CPUs and a 2-core machine runs one at a time."""
    from distar.config.tree import Config
    from distar.raytune.trial import driver_resources

    driver = driver_resources()
    worker_cpus = Config().resources.cpus_per_worker
    assert driver.head_bundle_is_empty  # the driver actor itself holds nothing
    assert 2 * (driver.required_resources.get("CPU", 0.0) + worker_cpus) <= 2
