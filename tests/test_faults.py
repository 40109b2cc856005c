"""Sweeps survive injected faults: a worker process killed mid-trial, the sweep's driver killed,
a diverging trial, a tracking store that is down, unreachable or refuses writes."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sweeps_common import TINY, child_runs, dry_run_keys, free_port, run, script, tiny_trials

from distar.config.paper import TABLE2
from distar.raytune.faults import inject

ROOT = Path(__file__).resolve().parents[1]
LONGER = {"train.steps": 12, "train.log_every": 2, "train.checkpoint_every": 4}


def assert_no_step_logged_twice(uri: str, run_id: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for key in client.get_run(run_id).data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), (key, sorted(steps))


def jsonl_records(trial_dir: Path) -> list[tuple[str, int]]:
    lines = (trial_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["kind"], r["step"]) for r in map(json.loads, lines)]


@pytest.fixture(scope="module")
def killed_and_diverging(ray_address, tmp_path_factory):
    """One sweep (one, not two: ~20 s) of three trials: one whose rank-0 worker is SIGKILLed at
    step 6 (checkpoint at 4), its undisturbed twin, and one that diverges at step 0 (its
    reward scale from its row's paper alpha_rew, x 0.01 on gmm: 1e38). Returns the trials by
    name, their rows by key, the storage and the sweep's console output."""
    import contextlib
    import io

    (trial,) = tiny_trials(seeds=(0,), **LONGER)
    twin = dataclasses.replace(trial, key=trial.key + "-undisturbed", label="undisturbed")
    exploding = dataclasses.replace(TABLE2[-1], alpha_rew=1e40)
    (diverging,) = tiny_trials(rows=(exploding,), seeds=(0,))
    storage = tmp_path_factory.mktemp("kill")
    inject(storage / "trials" / trial.key, step=6, action="kill")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        rows = run([trial, twin, diverging], storage, name="kill")
    trials = {"killed": trial, "twin": twin, "diverging": diverging}
    return trials, {r["key"]: r for r in rows}, storage, console.getvalue()


def test_a_killed_worker_restarts_from_its_checkpoint_and_ends_like_an_undisturbed_run(
    killed_and_diverging,
):
    """SIGKILL of the rank-0 worker at step 6 (checkpoint at 4): Tune retries the trial, it
    resumes at step 4, logs no step twice and ends on exactly the metrics of the same trial run
    without the fault."""
    trials, rows, storage, _ = killed_and_diverging
    trial, twin = trials["killed"], trials["twin"]
    assert [rows[t.key]["error"] for t in (trial, twin)] == ["", ""]
    trial_dir = storage / "trials" / trial.key
    assert (trial_dir / "inject_fault.fired").exists()  # the fault did fire
    resumed = [json.loads(x) for x in (trial_dir / "timings.jsonl").read_text().splitlines()]
    assert [r["resumed_at"] for r in resumed if "resumed_at" in r] == [4]
    killed, undisturbed = rows[trial.key], rows[twin.key]
    for metric in ("eval/reward", "eval/precision", "eval/mmd"):
        assert killed[metric] == pytest.approx(undisturbed[metric], rel=1e-6, abs=1e-9)
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    runs = child_runs(uri, "kill").set_index("tags.distar.trial")
    assert len(runs) == 3 and set(runs.loc[[trial.key, twin.key], "status"]) == {"FINISHED"}
    assert_no_step_logged_twice(uri, runs.loc[trial.key, "run_id"])
    records = jsonl_records(trial_dir)
    assert len(records) == len(set(records)) and ("train", 12) in records


def test_a_paused_worker_stops_once_until_its_retry_claims_the_trial(tmp_path, monkeypatch):
    """The pause (tests/test_cluster_up.py's cut-off attempt) fires once, at its step, on the
    node it names; it lasts until a later attempt claims the trial folder, at most its seconds;
    the file is consumed, so a retry runs through; a pause needs its seconds."""
    from distar.raytune import faults
    from distar.raytune.fence import claim

    clock, claim_at = [0.0], []

    def sleep(seconds):  # a fake clock: the later attempt claims once it reads claim_at
        clock[0] += seconds
        if claim_at and clock[0] >= claim_at[0]:
            claim(tmp_path)

    monkeypatch.setattr(faults.time, "sleep", sleep)
    monkeypatch.setattr(faults.time, "monotonic", lambda: clock[0])
    token = claim(tmp_path)  # the attempt that pauses
    inject(tmp_path, step=3, action="pause", seconds=2.5)
    injector = faults.FaultInjector(tmp_path, token)
    for step in range(1, 7):
        injector.on_step(step, {})
    assert clock[0] == pytest.approx(2.5)  # nobody claimed it: all its seconds
    assert (tmp_path / "inject_fault.fired").exists()
    assert not (tmp_path / faults.FAULT_FILE).exists()
    assert faults.FaultInjector(tmp_path).fault is None  # the retry's: no fault
    clock[0], claim_at[:] = 0.0, [1.0]
    inject(tmp_path, step=3, action="pause", seconds=30.0, node="10.1.2.2")
    assert faults.FaultInjector(tmp_path, token, "10.1.2.3").fault is None  # another node's
    faults.FaultInjector(tmp_path, token, "10.1.2.2").on_step(3, {})
    assert 1.0 <= clock[0] <= 1.2  # its retry claimed the trial after 1 s: it went on then
    for action, seconds in (("pause", 0.0), ("kill", 1.0)):
        with pytest.raises(ValueError, match="seconds"):
            inject(tmp_path, step=3, action=action, seconds=seconds)


def sweep_args(tmp_path: Path) -> list[str]:
    flags = [f"--set={k}={v}" for k, v in {**TINY, **LONGER}.items()]
    return [
        sys.executable,
        str(ROOT / "sweeps" / "ablation_grid.py"),
        "--smoke-test",
        "--seeds",
        "0",
        "--max-concurrent",
        "1",
        "--experiment",
        "exp",
        "--name",
        "rs",
        "--storage",
        str(tmp_path),
        *flags,
    ]


def test_a_killed_sweep_driver_resumes_only_unfinished_trials_and_logs_no_step_twice(
    ray_address, tmp_path
):
    """The sweep's process is SIGKILLed while its second trial hangs at step 6 (checkpoint at
    4); ``--resume`` does not re-run the finished trial, continues the other from step 4, makes
    no second MLflow run and logs no step twice."""
    args = sweep_args(tmp_path)
    keys = dry_run_keys("ablation_grid", args[2:])
    assert len(keys) == 2
    inject(tmp_path / "trials" / keys[1], step=6, action="hang")
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    first = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    fired = tmp_path / "trials" / keys[1] / "inject_fault.fired"
    try:
        deadline = time.time() + 300
        while not fired.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver dies, as in a crash
        first.wait()
    assert fired.exists()
    done_jsonl = (tmp_path / "trials" / keys[0] / "metrics.jsonl").read_text()
    # the rerun in this process, on the session's Ray (an interpreter of its own: ~4 s more)
    assert script("ablation_grid")([*args[2:], "--resume"]) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = child_runs(uri, "rs")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert (tmp_path / "trials" / keys[0] / "metrics.jsonl").read_text() == done_jsonl
    for run_id in runs["run_id"]:
        assert_no_step_logged_twice(uri, run_id)
    records = jsonl_records(tmp_path / "trials" / keys[1])
    assert len(records) == len(set(records)) and ("train", 12) in records


def test_a_diverging_trial_fails_with_one_readable_line_and_the_others_finish(
    killed_and_diverging,
):
    from analysis.runs import summarise

    trials, rows, storage, console = killed_and_diverging
    fine, diverging = trials["killed"], trials["diverging"]  # fine: retried after its kill
    assert rows[fine.key]["error"] == "" and rows[trials["twin"].key]["error"] == ""
    assert "diverged: step 0: generator" in rows[diverging.key]["error"]
    failed = [line for line in console.splitlines() if " FAILED " in line]
    assert len(failed) == 1 and "diverged: step 0: generator" in failed[0]
    runs = child_runs(f"sqlite:///{storage / 'mlflow.db'}", "kill").set_index("tags.distar.trial")
    assert runs.loc[diverging.key, "status"] == "FAILED"
    assert runs.loc[diverging.key, "tags.distar.failure"].startswith("diverged: step 0: ")
    assert "\n" not in runs.loc[diverging.key, "tags.distar.failure"]
    assert runs.loc[fine.key, "status"] == "FINISHED"
    table = summarise(runs.reset_index(), ("reward",)).set_index("label")
    assert table.loc[TABLE2[-1].label, "seeds"] == 0
    assert table.loc[TABLE2[-1].label, "failed"] == "1 of 1 seeds failed or unfinished"
    assert table.loc[TABLE2[1].label, "seeds"] == 1


# ---- the tracking store ------------------------------------------------------------------------
class Outage:
    """Wraps an MlflowClient: while ``down``, every call raises as a lost server would."""

    def __init__(self, client) -> None:
        self.client, self.down = client, False

    def __getattr__(self, name):
        from mlflow.exceptions import MlflowException

        method = getattr(self.client, name)

        def call(*args, **kwargs):
            if self.down:
                raise MlflowException("API request failed: connection refused")
            return method(*args, **kwargs)

        return call


def switch(outage: Outage, off: int, on: int | None):
    """A training callback that takes the store down at step ``off`` and back at ``on``."""
    from distar.runtime.callbacks import Callback

    class Switch(Callback):  # every other hook: Callback's no-op
        def on_step(self, step, metrics) -> None:
            outage.down = off <= step and (on is None or step < on)

    return Switch()


def driver_polls(forwarder):
    """A training callback standing in for the trial driver: it forwards the run's records after
    each report (as the driver does before each of its reports to Tune, every half second)."""
    from distar.runtime.callbacks import Callback

    class Poll(Callback):
        def on_train_start(self, step, total_steps) -> None:
            forwarder.start(step)

        def on_step(self, step, metrics) -> None:
            forwarder.poll()

        def on_train_end(self, step, metrics) -> None:
            forwarder.poll()

    return Poll()


@pytest.mark.parametrize("back_at", [8, None], ids=["store back mid-run", "store never back"])
def test_a_lost_tracking_store_never_stops_training_and_nothing_is_lost(
    world_cache, tmp_path, back_at, capsys
):
    from mlflow.tracking import MlflowClient

    from distar.config.tree import Config
    from distar.loop.trainer import Trainer
    from distar.raytune.forward import RecordForwarder
    from distar.raytune.mlflow_logger import MlflowLogger
    from distar.raytune.tuner import report_unlogged
    from distar.runtime.callbacks import JsonlLogger
    from distar.track.tracking import UNLOGGED

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = MlflowClient(uri).create_run(MlflowClient(uri).create_experiment("e")).info.run_id
    out = tmp_path / "trial"
    logger = MlflowLogger(uri, run_id, {"label": "x"}, out)
    outage = Outage(logger.client)
    logger.client = outage
    config = Config().with_overrides(
        {**TINY, "train.steps": 12, "train.log_every": 1, "train.out_dir": str(out)}
    )
    forwarder = RecordForwarder(out, logger, attempt="only")
    records = JsonlLogger(out, attempt="only")
    callbacks = [records, switch(outage, 3, back_at), driver_polls(forwarder)]
    Trainer(config, callbacks=callbacks).train()  # trains through
    outage.down = False
    history = MlflowClient(uri).get_metric_history(run_id, "train/loss/generator")
    steps = sorted(m.step for m in history)
    if back_at is not None:  # retried when the store came back: all there, once each
        assert steps == list(range(1, 13)) and not (out / UNLOGGED).exists()
        return
    assert steps == [1, 2]  # the rest is kept locally, every value, and the sweep says so
    spool = [json.loads(x) for x in (out / UNLOGGED).read_text().splitlines()]
    kept = sorted(r["step"] for r in spool if r.get("metric") == "train/loss/generator")
    assert kept == list(range(3, 13))
    assert any(r.get("call") == "set_tag" for r in spool)  # the final-step tag too
    assert "logging failed" in capsys.readouterr().err
    (tmp_path / "trials").mkdir()
    (out).rename(tmp_path / "trials" / "trial")
    report_unlogged(tmp_path)
    assert f"records of trial trial; kept in {tmp_path / 'trials' / 'trial' / UNLOGGED}" in (
        capsys.readouterr().err
    )


def test_the_driver_forwards_each_record_once_and_nothing_once_superseded(world_cache, tmp_path):
    """What rank 0 records reaches the trial's MLflow run through the driver's forwarder
    (distar.raytune.forward): every train step once though the driver polls the growing records
    again and again, the evaluations with their per-sample table and sample plot, the final
    table, tag and loop seconds. A retry's driver (resuming at step 4) hands on the earlier
    attempt's records up to step 4 and the run skips what it holds: nothing twice. A driver
    whose attempt a later one superseded forwards nothing more."""
    from mlflow.tracking import MlflowClient

    from distar.config.tree import Config
    from distar.loop.trainer import Trainer
    from distar.raytune.fence import claim
    from distar.raytune.forward import RecordForwarder
    from distar.raytune.mlflow_logger import MlflowLogger
    from distar.runtime.callbacks import JsonlLogger
    from distar.track.tracking import FINAL_STEP_TAG, logged_steps

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    out = tmp_path / "trial"
    sets = {**TINY, "train.steps": 8, "train.log_every": 1, "train.eval_every": 4}
    config = Config().with_overrides({**sets, "train.out_dir": str(out)})

    def driver(attempt: str) -> RecordForwarder:
        return RecordForwarder(out, MlflowLogger(uri, run_id, {"label": "x"}, out), attempt)

    first = claim(out)
    forwarder = driver(first)
    Trainer(config, callbacks=[JsonlLogger(out, first), driver_polls(forwarder)]).train()
    forwarder.poll()  # a last round after the end: nothing new

    def samples_steps() -> list[int]:
        table = json.loads(open(client.download_artifacts(run_id, "eval/eval_samples.json")).read())
        return [row[table["columns"].index("step")] for row in table["data"]]

    history = client.get_metric_history(run_id, "train/loss/generator")
    assert sorted(m.step for m in history) == list(range(1, 9))  # once each
    logged, final = logged_steps(client, run_id)
    assert final == "8" and client.get_run(run_id).data.tags[FINAL_STEP_TAG] == "8"
    evals = [k for k in logged if k.startswith("eval/")]
    assert evals and all(
        sorted(m.step for m in client.get_metric_history(run_id, k)) == [4, 8] for k in evals
    )
    assert logged["train/seconds"] == 8
    names = {a.path for a in client.list_artifacts(run_id, "eval")}
    names |= {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"eval/eval_samples.json", "plots/samples_step0000008.png"} <= names
    steps = samples_steps()
    assert sorted(set(steps)) == [4, 8] and steps.count(4) == steps.count(8)

    retry = driver(claim(out))  # resumes at 4: the first attempt's records to 4 come again
    retry.start(4)
    retry.poll()
    assert samples_steps() == steps  # held: not appended twice
    assert len(client.get_metric_history(run_id, "train/loss/generator")) == 8
    assert {k for k, _, _ in retry.forwarded} == {"train", "eval"}  # nothing after step 4
    assert max(step for _, step, _ in retry.forwarded) == 4

    (out / "metrics.jsonl").open("a").write('{"kind": "train", "step": 9, "train/x": 1.0}\n')
    forwarder.poll()  # the first attempt's driver: superseded, it forwards nothing
    assert "train/x" not in client.get_run(run_id).data.metrics


class ReadOnlyServer(http.server.BaseHTTPRequestHandler):
    """A tracking server that is up but refuses every write (403), as behind a read-only proxy."""

    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/health" else 403)
        self.end_headers()
        self.wfile.write(b"OK" if self.path == "/health" else b"{}")

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def read_only_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReadOnlyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("store", ["unreachable", "read-only"])
def test_a_dead_or_read_only_tracking_store_fails_fast_in_one_line(
    store, read_only_server, tmp_path, capsys
):
    uri = f"http://127.0.0.1:{free_port()}" if store == "unreachable" else read_only_server
    storage = tmp_path / "sweep"
    start = time.monotonic()
    code = script("ablation_grid")(
        ["--smoke-test", "--tracking-uri", uri, "--storage", str(storage)]
    )
    seconds = time.monotonic() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and seconds < 12, (code, seconds)
    expected = "unreachable" if store == "unreachable" else "cannot write"
    assert f"--tracking-uri {uri}: {expected}" in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (storage / "tune").exists() and not (storage / "trials").exists()


def test_resume_with_a_different_grid_says_what_differs(tmp_path, capsys):
    from distar.raytune.definition import record_definition
    from distar.raytune.settings import SweepSettings

    grid = script("ablation_grid")
    settings = SweepSettings("table2", "distar-table2", tmp_path)
    assert grid(["--smoke-test", "--dry-run"]) == 0
    keys = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    recorded = {key: {"train.steps": 10} for key in keys}
    record_definition(settings, recorded)  # as the first run recorded it
    code = grid(["--smoke-test", "--seeds", "0", "1", "2", "--resume", "--storage", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--resume: sweep 'table2' was started with other settings (added: " in err
    assert "-s2" in err and "changed: " in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "tune").exists()


@pytest.mark.parametrize(
    ("claimed_at", "stops_at", "before", "reports"),
    [(5, 6, "report", [3]), (7, 8, "checkpoint", [3, 6])],
)
def test_an_attempt_writes_nothing_once_a_later_attempt_claims_its_trial(
    world_cache, tmp_path, claimed_at, stops_at, before, reports
):
    """The fencing token a cut-off worker meets (distar.raytune.fence): a retry claims the
    trial after step ``claimed_at`` while this attempt still trains (reports every 3 steps,
    checkpoints every 4); this attempt stops at its next write, a report or a checkpoint, so
    its folder holds the reports and the checkpoint (step 4) from before the claim only."""
    from distar.config.tree import Config
    from distar.loop.trainer import Trainer
    from distar.raytune.fence import SUPERSEDED_FILE, Fence, SupersededError, claim
    from distar.runtime.callbacks import Callback, JsonlLogger

    sets = {**TINY, "train.steps": 12, "train.log_every": 3, "train.checkpoint_every": 4}
    config = Config().with_overrides({**sets, "eval.plot": False, "train.out_dir": str(tmp_path)})

    class RetryClaims(Callback):
        def after_update(self, step: int) -> None:
            if step == claimed_at:
                claim(tmp_path)

    fence = Fence(tmp_path, claim(tmp_path))
    trainer = Trainer(config, callbacks=[fence, JsonlLogger(tmp_path), RetryClaims()])
    with pytest.raises(SupersededError, match=f"at step {stops_at} .before its {before}"):
        trainer.train()
    assert jsonl_records(tmp_path) == [("train", step) for step in reports]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip().endswith("_0000004")
    (stopped,) = (tmp_path / SUPERSEDED_FILE).read_text().splitlines()
    assert json.loads(stopped)["token"] == fence.token
