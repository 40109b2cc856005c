"""The sweep console's lines, from Tune's trial objects (stand-ins with the same fields)."""

from __future__ import annotations

from types import SimpleNamespace

from distar.sweep.console import SweepConsole


def trial(step: int, paper: dict | None = None) -> SimpleNamespace:
    flat = {"train.steps": 600, "loss.guidance": "out", "loss.huber_c": 0.05}
    spec = {"label": "search" if paper else "DI* (in)", "seed": 3, "paper": paper or {},
            "flat_config": flat}  # fmt: skip
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
    expected = ("stopped at step 300/600 search ab12 (alpha_rew 12.3, alpha_cfg 4.5, "
                "huber_c 0.05, out) · seed 3: reward 0.1235")  # fmt: skip
    assert expected in line, line
