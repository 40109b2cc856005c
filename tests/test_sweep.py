"""Sweeps: config <-> Tune params, the Table-2 grid, and Ray -> MLflow -> report end to end.
One Ray instance serves the whole test session (``ray_address``)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from sweeps_common import TINY, child_runs, dry_run, free_port, run, script, tiny_trials

from distar.config.benchmarks import ROW_KEYS
from distar.config.paper import TABLE2
from distar.config.tree import Config
from distar.raytune.grid import expand
from distar.raytune.spec import SweepContext, TrialSpec
from distar.track import tracking

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT.parent / "shared" / "data" / "paper_tables.csv"
BENCH_PROMPTS = (
    f"parti={ROOT.parent / 'shared/data/PartiPrompts.tsv'},"
    f"coco={ROOT.parent / 'shared/data/coco2014_val_30k_captions.txt'}"
)


def test_trial_params_round_trip_through_tune_param_space():
    ctx = SweepContext("s", "sqlite:////tmp/x.db", "e", "/tmp/storage", "parent")
    for spec in tiny_trials(TABLE2, seeds=(0, 3)):
        params = json.loads(json.dumps(spec.to_params(ctx)))  # Tune stores params as JSON
        again, ctx_again = TrialSpec.from_params(params)
        assert again == spec and ctx_again == ctx
        config = again.config(ctx_again)
        assert config.train.out_dir == f"/tmp/storage/trials/{spec.key}"
        assert config.with_overrides({"train.out_dir": "x"}) == Config.from_flat(
            {**spec.flat_config, "train.out_dir": "x"}
        )


def test_grid_runs_no_identical_trials():
    """c is crossed only with rows that read it (not KL or the untrained init row); a seed or
    c value given twice is refused rather than silently merged."""
    trials = expand(TABLE2, Config(), [0, 1], [0.05, 0.5])
    configs = [json.dumps(t.flat_config, sort_keys=True) for t in trials]
    assert len(set(configs)) == len(configs)
    kl = [t for t in trials if t.flat_config["loss.divergence"] == "kl"]
    assert {t.flat_config["loss.huber_c"] for t in kl} == {Config().loss.huber_c}
    # the runs table groups a row's seeds, and a crossed row's seeds at each c apart
    groups = {t.tags["distar.group"] for t in trials}
    # named as the report names a row at one setting
    assert f"{TABLE2[-1].label} · loss.huber_c=0.05" in groups and TABLE2[1].label in groups
    assert len(groups) == len(trials) // 2  # two seeds a group
    l2 = expand(TABLE2, Config().with_overrides({"loss.distance": "l2"}), [0], [0.05, 0.5])
    assert len(l2) == len(TABLE2)
    with pytest.raises(ValueError, match=r"--seeds: \[1\] given more than once"):
        expand(TABLE2, Config(), [0, 1, 1])
    with pytest.raises(ValueError, match="--huber-c"):
        expand(TABLE2, Config(), [0], [0.5, 0.5])


def fake_runs(rows: list[tuple[str, float, int, str, float]]) -> pd.DataFrame:
    """(label, huber_c, seed, status, reward) -> what mlflow.search_runs returns (with the paper
    tags each trial of that Table 2 row records)."""
    spec = {row.label: row for row in TABLE2}
    return pd.DataFrame(
        {
            "tags.distar.label": [r[0] for r in rows],
            "tags.paper.model": [spec[r[0]].model for r in rows],
            "tags.paper.method": [spec[r[0]].method or None for r in rows],
            "tags.paper.alpha_rew": [f"{spec[r[0]].alpha_rew:g}" for r in rows],
            "tags.paper.alpha_cfg": [f"{spec[r[0]].alpha_cfg:g}" for r in rows],
            "params.loss.huber_c": [str(r[1]) for r in rows],
            "params.train.seed": [str(r[2]) for r in rows],
            "params.train.out_dir": [f"/x/{i}" for i in range(len(rows))],
            "status": [r[3] for r in rows],
            "tags.distar.final_step": ["10" if r[3] == "FINISHED" else None for r in rows],
            "metrics.eval/reward": [r[4] for r in rows],
        }
    )


def test_report_keeps_swept_settings_apart_and_never_counts_failed_seeds():
    from analysis.report import to_markdown
    from analysis.runs import summarise

    best = TABLE2[-1].label
    runs = fake_runs(
        [
            (best, 0.03, 0, "FINISHED", 0.1),
            (best, 0.03, 1, "FINISHED", 0.3),
            (best, 0.3, 0, "FINISHED", 0.5),
            (best, 0.3, 1, "FAILED", float("nan")),
            (TABLE2[1].label, 0.1, 0, "RUNNING", 0.9),
        ]
    )
    table = summarise(runs, ("reward",)).set_index("label")
    low, high = f"{best} · loss.huber_c=0.03", f"{best} · loss.huber_c=0.3"
    assert table.loc[low, "seeds"] == 2 and table.loc[low, "reward"] == pytest.approx(0.2)
    assert table.loc[high, "seeds"] == 1 and table.loc[high, "reward"] == pytest.approx(0.5)
    assert table.loc[high, "failed"] == "1 of 2 seeds failed or unfinished"
    unfinished = table.loc[f"{TABLE2[1].label} · loss.huber_c=0.1"]
    assert unfinished["seeds"] == 0 and pd.isna(unfinished["reward"])
    text = to_markdown(table.reset_index(), ("reward",))
    assert "| 1 (1 of 2 seeds failed or unfinished) | 0.5000 |" in text  # one seed: no ±
    assert "| 0 (1 of 1 seeds failed or unfinished) | – |" in text


def test_grid_has_the_papers_table2_rows():
    paper = pd.read_csv(PAPER_CSV)
    paper = paper[(paper["table"] == 2) & ~paper["model"].str.contains("longer training")]
    ours = {(r.model, r.alpha_rew, r.alpha_cfg) for r in TABLE2}
    theirs = {
        (m, float(r), float(c))
        for m, r, c in zip(
            paper["model"],
            paper["reward_scale"].fillna(0),
            paper["cfg_scale"].fillna(0),
            strict=True,
        )
    }
    assert ours == theirs
    for row in TABLE2:
        assert row.divergence == ("kl" if "DI++" in row.model or "DMD2" in row.model else "score")
        assert row.guidance == ("out" if "Out" in row.model else "in")
        # the published numbers the paper module carries are the printed ones
        printed = paper[
            (paper["model"] == row.model)
            & (paper["reward_scale"].fillna(0) == row.alpha_rew)
            & (paper["cfg_scale"].fillna(0) == row.alpha_cfg)
        ].iloc[0]
        assert row.published.pickscore == printed["pickscore"]
        assert row.published.image_reward == printed["image_reward"]
        assert row.published.clip_score == printed["clip_score"]


def test_grid_translates_scales_and_validates_before_ray():
    trials = expand(TABLE2, Config(), [0, 1], [0.05, 0.5])
    uses_c = [r for r in TABLE2 if r.trains and r.divergence == "score"]
    assert len(trials) == (len(uses_c) * 2 + len(TABLE2) - len(uses_c)) * 2
    assert len({t.key for t in trials}) == len(trials)
    best = [t for t in trials if t.label == TABLE2[-1].label][0].flat_config
    assert best["loss.reward_scale"] == pytest.approx(1.0) and best["loss.cfg_scale"] == 1.0
    init = [t for t in trials if t.label.startswith("init")][0].flat_config
    assert init["train.steps"] == 0
    with pytest.raises(ValueError, match="loss.huber_c"):
        expand(TABLE2, Config(), [0], [-1.0])
    # the paper's values are a trial's only source of its scales: a contradicting edit is refused
    edited = dataclasses.replace(trials[-1], flat_config={**best, "loss.reward_scale": 5.0})
    with pytest.raises(ValueError, match="loss.reward_scale: got 5.0; allowed: 1.0"):
        edited.resolved()


def test_smoke_sweep_ray_to_mlflow_to_report(gmm_smoke, tmp_path):
    """The embedded world's smoke grid (conftest runs it once; the MLflow UI test serves the
    same store): Ray -> MLflow -> the report, and every evaluation's per-sample values."""
    from mlflow.tracking import MlflowClient

    from analysis.report import build_report
    from distar.config.tree import world_preset

    storage, _ = gmm_smoke
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    runs = child_runs(uri, "table2", "distar-table2")
    # the values that tell runs apart first: the paper's scales, the method, the seed
    names = ["0/0 KL s0", "0/0 KL s1", "100/7.5 DI*-In s0", "100/7.5 DI*-In s1"]
    assert sorted(runs["tags.mlflow.runName"]) == names
    assert set(runs["status"]) == {"FINISHED"} and runs["tags.mlflow.parentRunId"].nunique() == 1
    kl = runs["tags.mlflow.runName"].str.contains("KL")
    assert runs["params.loss.divergence"].eq("kl").eq(kl).all()
    client = MlflowClient(uri)
    run_id = runs["run_id"].iloc[0]
    assert len(client.get_metric_history(run_id, "train/loss/generator")) == 2  # steps 3 and 6
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "metrics_table.json", "plots"} <= names
    local = client.download_artifacts(run_id, "metrics_table.json", str(tmp_path / "dl"))
    table = json.loads(Path(local).read_text())
    assert "label" in table["columns"] and "precision" in table["columns"]
    gmm = world_preset("gmm")
    report = build_report(runs, tmp_path / "report", gmm.metrics, gmm.pareto)
    assert len(report) == 2 and report["seeds"].eq(2).all()
    # Table 2's published PickScore of the two rows (KL, no CFG; DI*-In alpha_rew 100, 7.5)
    assert sorted(report["paper_pickscore"]) == pytest.approx([0.2243, 0.2304])
    assert (tmp_path / "report" / "pareto.png").stat().st_size > 0
    assert "KL, no CFG" in (tmp_path / "report" / "table2.md").read_text()
    # every evaluation's per-sample values, in MLflow and in the trial folder, whose means are
    # the logged metrics; two seeds evaluate other noise, so their items do not pair
    from analysis.compare import samples
    from distar.track.pairing import UnpairedError, paired_differences, read_items

    tables = {}
    for _, r in runs[kl].iterrows():
        tables[r["tags.distar.seed"]] = items = samples(client, r["run_id"], "eval")
        assert len(items) == 4 * TINY["eval.samples_per_prompt"]  # 4 prompts
        assert items["reward"].mean() == pytest.approx(r["metrics.eval/reward"], rel=1e-5)
        assert items["precision"].mean() == pytest.approx(r["metrics.eval/precision"], rel=1e-5)
        local_items = read_items(storage / "trials" / r["tags.distar.trial"], "eval", 6)
        assert local_items["reward"].to_numpy() == pytest.approx(items["reward"].to_numpy())
    with pytest.raises(UnpairedError, match="eval.seed must match"):
        paired_differences(tables["0"], tables["1"], "reward")


@pytest.fixture(scope="module")
def gmm_ddp_via_server(ray_address, tmp_path_factory):
    """One embedded-world trial on two gloo workers, logged through a real MLflow server
    (``mlflow server``, SQLite behind it, its own artifact folder): the data-parallel test and
    the server test read it (one sweep, not two: ~15 s). Yields the trial, its row, the
    sweep's storage, the server's folder and its URI."""
    root = tmp_path_factory.mktemp("gmm-ddp-server")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        (trial,) = tiny_trials(seeds=(0,), **{"resources.num_workers": 2})
        (row,) = run([trial], root / "sweep", name="srv", uri=uri)
        yield trial, row, root / "sweep", root, uri
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # its store is read no more (TERM waited ~5 s)
        server.wait(timeout=30)


def test_data_parallel_trial_on_two_gloo_workers(gmm_ddp_via_server):
    trial, row, storage, _, _ = gmm_ddp_via_server
    assert row["error"] == "" and row["step"] == 6
    trial_dir = storage / "trials" / trial.key
    assert (trial_dir / "checkpoints" / "latest").read_text() == "step_0000006"


def sd_trials(seeds=(0,), **flat) -> list[TrialSpec]:
    from distar.config.tree import world_preset

    smoke = {**world_preset("sd15-tiny").smoke, "train.steps": 4, "eval.plot": True, **flat}
    return expand((TABLE2[-1],), Config.for_world("sd15-tiny", smoke), list(seeds))


@pytest.fixture(scope="module")
def sd_two_workers(ray_address, tmp_path_factory):
    """One sweep on the tiny SD world (one, not two: ~20 s): a LoRA trial trained on two gloo
    workers (``ddp``), and the init row (no training) scored on Parti by one worker (``one``)
    and by two (``two``). Returns the trials by name, their rows by key and the storage."""
    bench = {"eval.benchmarks": "parti:6", "eval.tiny_metrics": True, "eval.prompts": BENCH_PROMPTS}
    base = Config.for_world("sd15-tiny", {"eval.plot": False, **bench})
    (ddp,) = sd_trials(**{"resources.num_workers": 2, "world.assistant": "lora"})
    (one,) = expand((TABLE2[0],), base, [0])
    (two,) = expand((TABLE2[0],), base.with_overrides({"resources.num_workers": 2}), [1])
    storage = tmp_path_factory.mktemp("sd-two-workers")
    rows = run([ddp, one, two], storage, name="sd-shards")
    return {"ddp": ddp, "one": one, "two": two}, {r["key"]: r for r in rows}, storage


def test_data_parallel_trial_on_two_gloo_workers_on_the_tiny_sd_world(sd_two_workers):
    trials, rows, storage = sd_two_workers
    row = rows[trials["ddp"].key]
    assert row["error"] == "" and row["step"] == 4
    trial_dir = storage / "trials" / trials["ddp"].key
    assert (trial_dir / "checkpoints" / "latest").read_text() == "step_0000004"
    assert (trial_dir / "plots" / "samples_step0000004.png").stat().st_size > 0


def test_smoke_grid_on_the_tiny_sd_world_through_ray_into_mlflow(
    readme_sd15_smoke, tmp_path, capsys
):
    """The README's ``ablation_grid.py --world sd15-tiny --smoke-test`` (conftest runs it once,
    as written; the MLflow UI test serves the same sweep), no evaluation flag: the paper's
    scales untranslated, every trial a TorchTrainer, each a finished MLflow child run with the
    world's metrics and the Parti / COCO tables and grids the preset evaluates by default (the
    shipped prompt files, tiny metric models); the report prints Tables 1-3 and the units."""
    storage, stdout = readme_sd15_smoke
    assert "DI*-In α_rew 100, α_cfg 7.5" in stdout  # the report's table
    assert "## table1" in stdout and "## table3" in stdout  # the paper's tables
    # an empty table says why, not a table of dashes; what the numbers are comes first
    assert "No numbers of ours: no run logged hps/*" in stdout.split("## table3")[1]
    assert "**Tiny random networks** (sd15-tiny" in stdout.split("| row |")[0]
    assert "**Tiny random metric models**" in stdout.split("| row |")[0]
    assert "| paper, SDXL: image_reward |" in stdout
    assert "Units: reward r in PickScore's cosine" in stdout
    assert "never printed beside ours" in stdout
    # each row against the baseline, item by item, in the report and on the parent run
    assert "## paired: each row minus the baseline (KL, no CFG)" in stdout
    assert "| DI*-In α_rew 100, α_cfg 7.5" in stdout.split("## paired")[1]
    assert (storage / "report" / "paired.csv").stat().st_size > 0
    assert (storage / "report" / "paper" / "table1.md").stat().st_size > 0
    assert (storage / "report" / "pareto.png").stat().st_size > 0  # the tiny preset's axes
    # a console a person can read: a line per finished trial, no Tune status tables
    assert "finished KL, no CFG · seed 0: reward" in stdout and "Trial status" not in stdout
    assert "[4/4 done, 0 running, 0 failed" in stdout
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    runs = child_runs(uri, "table2", "distar-table2")
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["params.world.name"]) == {"sd15"}
    best = runs[runs["tags.distar.label"] == TABLE2[-1].label].iloc[0]
    assert best["tags.paper.alpha_rew"] == "100" and best["tags.distar.guidance"] == "in"
    assert float(best["params.loss.reward_scale"]) == 100.0
    assert float(best["params.loss.cfg_scale"]) == 7.5
    assert runs["metrics.eval/reward"].notna().all()
    assert (
        runs["metrics.parti/pickscore"].notna().all()
        and runs["metrics.coco/aesthetic"].notna().all()
    )
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("distar-table2")  # load_table looks in the active experiment
    for run_id in runs["run_id"]:
        parti = mlflow.load_table("eval/parti_samples.json", run_ids=[run_id])
        coco = mlflow.load_table("eval/coco_samples.json", run_ids=[run_id])
        # 5 evaluations (a smoke grid's curves), each appending its rows with its step
        assert set(parti["step"]) == {2, 4, 6, 8, 10} and len(parti) == 5 * 6
        assert len(coco) == 5 * 4
        # the logged JSON has its metric columns first, and its 64-bit noise seeds as strings
        # in every evaluation's rows (a browser rounds a JSON integer past 2**53)
        raw = json.loads(
            Path(
                mlflow.MlflowClient().download_artifacts(
                    run_id, "eval/parti_samples.json", str(tmp_path / "raw")
                )
            ).read_text()
        )
        assert raw["columns"][0] == "pickscore"
        seeds = [row[raw["columns"].index("seed")] for row in raw["data"]]
        assert len(seeds) == 5 * 6 and all(isinstance(x, str) and int(x) >= 0 for x in seeds)
        assert max(int(x) for x in seeds) > 2**53  # the case a browser gets wrong
        assert {"prompt", "group", "pickscore", "imagereward", "clip_score"} <= set(parti.columns)
        names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "eval")}
        assert {"eval/parti_groups.json", "eval/parti_grid_step0000010.png"} <= names
        # the bootstrap CIs as one table (a row per metric and evaluation), not as charts
        bounds = mlflow.load_table("eval/parti_ci95.json", run_ids=[run_id])
        scored = {f"parti/{m}" for m in parti.columns if m not in ROW_KEYS}
        assert len(bounds) == 5 * len(scored) and set(bounds["metric"]) == scored
        assert (bounds["ci95_low"] <= bounds["mean"]).all()
        assert (bounds["mean"] <= bounds["ci95_high"]).all()
    assert not [m for m in runs.columns if m.startswith("metrics.ci95/")]
    assert set(runs["tags.distar.prompts.coco"]) == {"shipped:coco2014_val_captions_first1000.txt"}
    # the two rows, item by item (same prompts and noise): one line per benchmark metric
    from analysis.compare import main as compare

    first = runs.groupby("tags.distar.label")["run_id"].first()  # one run of each row
    assert compare(["--tracking-uri", uri, *first]) == 0
    printed = capsys.readouterr().out
    # rows by their labels (every finished seed), as a run id would be
    assert (
        compare(
            [
                "--tracking-uri",
                uri,
                "DI*-In α_rew 100, α_cfg 7.5",
                "KL, no CFG",
            ]
        )
        == 0
    )
    printed_rows = capsys.readouterr().out
    assert printed_rows.startswith(
        "A = 'DI*-In α_rew 100, α_cfg 7.5' (2 runs, one per seed), B = 'KL, no CFG'"
    )
    # by run name, as the --help's example names one
    assert (
        compare(
            [
                "--tracking-uri",
                uri,
                "100/7.5 DI*-In s0",
                "0/0 KL s0",
            ]
        )
        == 0
    )
    assert "| parti/pickscore |" in capsys.readouterr().out
    assert printed_rows.splitlines()[2:] and all(
        (storage / "trials" / key / "items" / "parti.jsonl").exists()
        for key in runs["tags.distar.trial"]
    )
    assert "| parti/pickscore |" in printed and "| coco/clip_score |" in printed
    assert "p (Holm)" in printed and "plan (80 % power)" in printed
    assert "### setting level" in printed and "### checkpoint level" in printed
    parent = runs["tags.mlflow.parentRunId"].iloc[0]
    report = {a.path for a in mlflow.MlflowClient().list_artifacts(parent, "report")}
    expected = {"report/table2.md", "report/paper", "report/paired.md", "report/pareto.png"}
    assert expected <= report
    assert mlflow.MlflowClient().get_run(parent).data.params["sweep.world"] == "sd15-tiny"


def test_benchmarks_on_two_workers_equal_one_worker(sd_two_workers):
    """The init row (no training): its benchmark numbers do not depend on how many ranks
    shared the prompts."""
    trials, rows, storage = sd_two_workers
    assert [rows[trials[n].key]["error"] for n in ("one", "two")] == ["", ""]
    runs = child_runs(f"sqlite:///{storage / 'mlflow.db'}", "sd-shards")
    runs = runs.set_index("tags.distar.trial")
    one, two = (runs.loc[trials[n].key] for n in ("one", "two"))
    assert (one["params.resources.num_workers"], two["params.resources.num_workers"]) == ("1", "2")
    # a shard scores 3 prompts per batch where one worker scores 6: with this install (torch
    # 2.14.1, transformers 5.24) fp32 batch composition moves the tiny CLIP score's mean by
    # 2e-6, at the old and the new code alike; a lost or repeated prompt moves it far more
    for m in ("parti/pickscore", "parti/imagereward", "parti/aesthetic", "parti/clip_score"):
        assert one[f"metrics.{m}"] == pytest.approx(two[f"metrics.{m}"], rel=1e-5, abs=1e-5), m


def test_a_missing_weight_file_fails_the_sweep_before_ray_starts(tmp_path, capsys):
    code = script("ablation_grid")(
        [
            "--world",
            "sd15-tiny",
            "--smoke-test",
            "--storage",
            str(tmp_path),
            "--set",
            "eval.benchmarks=parti:4",
            "--set",
            f"eval.prompts={BENCH_PROMPTS}",
            "--set",
            f"eval.weights=pickscore={tmp_path}/PickScore_v1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tmp_path}/PickScore_v1 not found" in err and "Traceback" not in err
    assert not (tmp_path / "tune").exists() and not (tmp_path / "mlflow.db").exists()


def test_logging_through_a_real_mlflow_server(gmm_ddp_via_server):
    _, row, _, root, uri = gmm_ddp_via_server
    assert row["error"] == ""
    runs = child_runs(uri, "srv")
    assert len(runs) == 1 and runs["metrics.eval/precision"].notna().all()
    assert any((root / "server-artifacts").rglob("metrics_table.json"))


def test_sweep_entry_point_dry_run_and_bad_values():
    code, out, _ = dry_run("ablation_grid", [])
    assert code == 0 and f"{len(TABLE2) * 3} trials" in out  # 3 seeds: a setting-level verdict
    code, _, err = dry_run("ablation_grid", ["--set", "loss.distance=up"])
    assert code == 2 and "loss.distance: got 'up'" in err
    assert asdict(TABLE2[0])["trains"] is False


def test_optuna_asha_search_in_paper_units_maps_a_pareto_front(ray_address, tmp_path, capsys):
    from distar.raytune.searcher import (
        paired_stopper,
        pareto_front,
        search_space,
        search_tune_config,
    )
    from distar.raytune.settings import SweepSettings
    from distar.raytune.tuner import run_sweep
    from distar.track.pairing import paired_differences, read_items

    base = Config().with_overrides({**TINY, "train.eval_every": 3, "eval.plot": False})
    space = search_space(base, 7, (1.0, 300.0), (0.0, 11.25), (0.01, 1.0))
    objective = {"metric": "reward", "floor_metric": "precision", "floor": 0.9, "penalty": 10.0}
    # its 3 trials at once: one wave (the session's Ray has 4 CPUs)
    settings = SweepSettings("search", "exp", tmp_path, None, 3, False)
    pair = ("reward", "precision")
    # ASHA and the paired stopper both: each result names its trial folder, whose items the
    # stopper pairs with the best trial's at the same step (the same eval seed: they pair)
    stop = paired_stopper("both", "reward", 0.05, 2, 0.01, 3)
    rows = run_sweep(
        [],
        settings,
        search_tune_config(3, 3, 7, 2, pair, "both", floor=0.9),
        space,
        objective,
        stop=stop,
    )
    assert len(rows) == 3 and all(r["error"] == "" for r in rows)
    assert len(stop.at_step[3]) == 3  # every trial's first evaluation reached the stopper
    folders = [Path(folder) for _, folder in stop.at_step[3].values()]
    items = [read_items(f, "eval", 3) for f in folders]
    assert paired_differences(items[0], items[1], "reward").shape[0] == 4 * 60
    for r in rows:
        expected = r["eval/reward"] - 10.0 * max(0.0, 0.9 - r["eval/precision"])
        assert r["objective"] == pytest.approx(expected)
        assert 1.0 <= r["paper.alpha_rew"] <= 300.0 and 0.0 <= r["paper.alpha_cfg"] <= 11.25
    runs = child_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "search").set_index(
        "tags.distar.trial"
    )
    assert len(runs) == 3 and set(runs["params.loss.guidance"]) <= {"in", "out"}
    # each console line names the draw (the label alone is the same for every trial)
    lines = [x for x in capsys.readouterr().out.splitlines() if "· seed 7" in x]
    assert len(lines) == 3 and all("alpha_rew" in x and "alpha_cfg" in x for x in lines), lines
    for r in rows:  # drawn in the paper's units, trained in the world's (gmm: x 0.01, x 1/7.5)
        run = runs.loc[r["key"]]
        assert float(run["params.loss.reward_scale"]) == pytest.approx(0.01 * r["paper.alpha_rew"])
        assert float(run["params.loss.cfg_scale"]) == pytest.approx(r["paper.alpha_cfg"] / 7.5)
        assert float(run["tags.paper.alpha_rew"]) == pytest.approx(r["paper.alpha_rew"], 1e-5)
        # each run named by its draw, first: "37.2/5.06 out c0.041 s7"
        draw = f"{r['paper.alpha_rew']:.3g}/{r['paper.alpha_cfg']:.3g} "
        assert run["tags.mlflow.runName"].startswith(draw), run["tags.mlflow.runName"]
        assert run["tags.mlflow.runName"].endswith(
            f"{run['params.loss.guidance']} c{float(run['params.loss.huber_c']):.2g} s7"
        )
    front = pareto_front(rows, pair)
    assert front and all(
        not (q["eval/reward"] > p["eval/reward"] and q["eval/precision"] > p["eval/precision"])
        for p in front
        for q in rows
    )
    # the search ends with where to look: the command that serves its store, and its links
    print_search_links(settings)
    links = capsys.readouterr().out
    assert f"MLflow: mlflow server --app-name distar --backend-store-uri {settings.uri()}" in links
    assert "(the search's run, its trials under it)" in links


def print_search_links(settings) -> None:
    """``sweeps/search.py``'s closing lines for ``settings``."""
    from distar.raytune.mlflow_view import search_links

    print("\n".join(search_links(settings)))


def test_pareto_front_keeps_exactly_the_undominated():
    from distar.raytune.searcher import pareto_front

    rows = [
        {"key": k, "error": "", "eval/reward": r, "eval/mmd": m}
        for k, r, m in (("a", 1, 0.5), ("b", 2, 0.9), ("c", 0.5, 0.6), ("d", 2, 0.4))
    ]
    rows.append({"key": "failed", "error": "x", "eval/reward": 9, "eval/mmd": 0.0})
    assert [r["key"] for r in pareto_front(rows, ("reward", "mmd"))] == ["d"]  # mmd: lower wins
    rows[3]["eval/mmd"] = 1.0
    assert [r["key"] for r in pareto_front(rows, ("reward", "mmd"))] == ["b", "a"]


def test_the_search_tries_table2s_di_star_rows_first_then_draws():
    """The paper's prior: its Table 2 DI* rows inside the ranges are the first suggestions, in
    order of published ImageReward (DI*-Out 1.082, DI*-In 100/7.5 1.067, ...), each landing in
    the trial's spec as the grid's row would; then the sampler draws inside the ranges."""
    from distar.raytune.searcher import paper_prior, search_space, search_tune_config

    base = Config().with_overrides(TINY)
    ranges = ((1.0, 300.0), (0.0, 11.25), (0.01, 1.0))
    prior = paper_prior(0.1, *ranges)
    wanted = [
        (r.guidance, r.alpha_rew, r.alpha_cfg)
        for r in sorted(TABLE2, key=lambda r: -r.published.image_reward)
        if r.divergence == "score" and r.alpha_rew >= 1 and r.trains
    ]
    assert wanted[:2] == [("out", 100, 7.5), ("in", 100, 7.5)] and len(prior) == len(wanted)
    searcher = search_tune_config(
        8, 2, 0, 2, ("reward", "precision"), prior=prior, floor=0.9
    ).search_alg
    ctx = SweepContext("s", "sqlite:////tmp/x.db", "e", "/tmp/storage", "parent")
    from ray.tune.utils.util import merge_dicts

    space = search_space(base, 0, *ranges)(ctx)
    searcher.set_search_properties(None, None, space)
    got = []
    for i in range(len(prior) + 1):  # as Tune fills the space with each suggestion
        if i == len(prior):  # the draws wait until the prior's trials have ended
            for j in range(len(prior)):
                result = {"eval/reward": 0.0, "eval/precision": 0.95, "training_iteration": 4}
                searcher.on_trial_complete(f"t{j}", result)
        spec = TrialSpec.from_params(merge_dicts(space, searcher.suggest(f"t{i}")))[0]
        flat = spec.flat_config
        got.append((flat["loss.guidance"], spec.paper["alpha_rew"], spec.paper["alpha_cfg"]))
        if i < len(prior):
            assert flat["loss.huber_c"] == 0.1
    assert got[:-1] == wanted  # mutation: prior=None draws at random and fails here
    assert got[-1] not in wanted and 1.0 <= got[-1][1] <= 300.0
    assert paper_prior(5.0, *ranges)[0]["trial/flat_config/loss.huber_c"] == 1.0  # clipped


def test_the_default_search_trains_every_trial_at_the_base_c():
    """Without --huber-c-range, c is not searched: no draw sets it, every trial (the prior's
    and the sampler's) trains at the base config's c, which --set moves (refused only where c
    is searched). Mutation: search_space drawing c in its former default range (0.01 to 1)
    puts draws off 0.2 (run: the last assertion fails)."""
    from ray.tune.utils.util import merge_dicts

    from distar.raytune.searcher import PARAMETER, paper_prior, search_space, search_tune_config

    code, out, err = dry_run("search", ["--set", "loss.huber_c=0.2"])
    assert code == 0, err
    assert "loss.huber_c 0.2 (not searched: --huber-c-range)" in out
    assert "first trials (--prior table2-best): out 100/7.5 c=0.2" in out
    code, _, err = dry_run("search", ["--set", "loss.huber_c=0.2", "--huber-c-range", "0.01", "1"])
    assert code == 2 and "--set loss.huber_c: the search sets it" in err
    ranges = ((1.0, 300.0), (0.0, 11.25), None)
    prior = paper_prior(0.2, *ranges)[:1]
    assert PARAMETER["huber_c"] not in prior[0]
    searcher = search_tune_config(6, 1, 0, 2, ("reward", "precision"), floor=0.9)
    searcher = searcher.search_alg
    ctx = SweepContext("s", "sqlite:////tmp/x.db", "e", "/tmp/storage", "parent")
    space = search_space(Config().with_overrides({**TINY, "loss.huber_c": 0.2}), 0, *ranges)(ctx)
    searcher.set_search_properties(None, None, space)
    cs = []
    for i in range(4):  # random draws, then the GP's
        spec = TrialSpec.from_params(merge_dicts(space, searcher.suggest(f"t{i}")))[0]
        cs.append(spec.flat_config["loss.huber_c"])
        result = {"objective": 0.01, "eval/reward": 0.01, "eval/precision": 0.95}
        searcher.on_trial_complete(f"t{i}", result=result | {"training_iteration": 1})
    assert cs == [0.2] * 4


def asha_stops(events: list[tuple[str, int, float]], **reduction) -> set[str]:
    """The trials the search's ASHA (4 evaluations; its default reduction unless given) stops,
    fed ``events`` (trial, evaluation, objective) in the order trials report them."""
    from types import SimpleNamespace

    from distar.raytune.searcher import search_tune_config

    pair = ("reward", "precision")
    asha = search_tune_config(9, 1, 0, 4, pair, floor=0.9, **reduction).scheduler
    trials = {name: SimpleNamespace(trial_id=name) for name, _, _ in events}
    for trial in trials.values():
        asha.on_trial_add(None, trial)
    stopped: set[str] = set()
    for name, evaluation, value in events:
        if name not in stopped:
            result = {"training_iteration": evaluation, "objective": value}
            if asha.on_trial_result(None, trials[name], result) == "STOP":
                stopped.add(name)
    return stopped


def test_the_searchs_asha_cuts_at_the_first_evaluation_only():
    """The default reduction (4), 4 evaluations: a trial weak at the first evaluation stops
    there; one that passed it and then trails at the second and third (as settings that end
    best do, behind those about to fall below the precision floor: measured curves, README)
    goes on. Reduction 2 (the former default) stops it at the second (the mutation, run here)."""
    ends_best = [0.040, 0.068, 0.094, 0.115]  # objective at steps 50..200 (search gp seed 1)
    collapses = [0.043, 0.077, 0.110, -0.320]
    events = [("ends_best", 1, ends_best[0]), ("collapses", 1, collapses[0])]
    events += [("weak", 1, 0.005), ("weak", 2, 0.004)]
    for i in (2, 3, 4):
        events += [("collapses", i, collapses[i - 1]), ("ends_best", i, ends_best[i - 1])]
    assert asha_stops(events) == {"weak"}
    assert asha_stops(events, reduction=2) == {"weak", "ends_best"}


def test_the_search_draws_only_once_the_priors_trials_have_ended():
    """ASHA lets the first trial at a rung through unjudged: a draw must not start before the
    prior's trials have ended (else it may reach the first evaluation first and train on), and
    the GP then models from the prior's trial instead of drawing a quarter of the budget at
    random. Mutations (run): the gate removed, the second suggestion is a draw at once; the gate
    opened on a first result, a draw starts beside the prior's trial; the GP's random start left
    at max(3, samples / 4), the last assertion fails."""
    from distar.raytune.searcher import paper_prior, search_space, search_tune_config

    ranges = ((1.0, 300.0), (0.0, 11.25), (0.01, 1.0))
    prior = paper_prior(0.1, *ranges)[:1]
    searcher = search_tune_config(
        8, 2, 0, 4, ("reward", "precision"), prior=prior, floor=0.9
    ).search_alg
    ctx = SweepContext("s", "sqlite:////tmp/x.db", "e", "/tmp/storage", "parent")
    searcher.set_search_properties(None, None, search_space(Config(), 0, *ranges)(ctx))
    first = searcher.suggest("t0")
    assert first["trial"]["paper"]["alpha_rew"] == 100.0
    assert searcher.suggest("t1") is None and searcher.suggest("t1") is None
    result = {"eval/reward": 0.02, "eval/precision": 0.95, "training_iteration": 1}
    searcher.on_trial_result("t0", result)
    assert searcher.suggest("t1") is None
    searcher.on_trial_complete("t0", result)
    assert searcher.suggest("t1") is not None
    assert searcher._sampler._n_startup_trials == 1


def test_a_drawn_point_that_a_finished_trial_holds_is_answered_not_trained(capsys):
    """The GP re-proposes a corner it has run (the trials share the search's seed: the same
    result). Such a proposal is told its twin's value and constraint and the model asked
    again; a model that insists has converged, and the search ends. Mutations (run): the
    answering loop removed, the second suggestion is the first's point; the end replaced by
    training the point, or twins compared exactly, the last assertions fail."""
    from optuna.trial import TrialState

    from distar.raytune.searcher import (
        CONSTRAINT,
        REPEATS_ANSWERED,
        search_space,
        search_tune_config,
    )

    ranges = ((1.0, 300.0), (0.0, 11.25), None)
    searcher = search_tune_config(8, 2, 0, 4, ("reward", "precision"), floor=0.9).search_alg
    ctx = SweepContext("s", "sqlite:////tmp/x.db", "e", "/tmp/storage", "parent")
    searcher.set_search_properties(None, None, search_space(Config(), 0, *ranges)(ctx))
    first = searcher.suggest("t0")
    point = searcher._ot_trials["t0"].params
    searcher.on_trial_complete("t0", {"eval/reward": 0.05, "eval/precision": 0.85})
    searcher._ot_study.enqueue_trial(point)  # what the model proposes next: the same point
    second = searcher.suggest("t1")
    assert second != first and searcher._ot_trials["t1"].params != point
    done = searcher._ot_study.get_trials(states=(TrialState.COMPLETE,))
    assert [(t.params == point, t.value, t.constraints) for t in done] == [
        (True, 0.05, {CONSTRAINT: pytest.approx(0.05)})
    ] * 2
    # a model that proposes nothing else, the point as it comes back through a log scale
    near = {k: v * (1 + 1e-15) if isinstance(v, float) else v for k, v in point.items()}
    for _ in range(REPEATS_ANSWERED + 1):
        searcher._ot_study.enqueue_trial(near)
    assert searcher.suggest("t2") == searcher.FINISHED
    assert "it has converged there; no more trials start" in capsys.readouterr().out


def climb(sampler: str, seed: int, trials: int = 11) -> float:
    """The best scalar objective (reward less 10 per unit of precision below 0.9, as the search
    scores a trial) among ``trials`` suggestions of the search's searcher on a known world:
    reward rises with log alpha_rew and falls with huber_c away from 0.1; precision holds up to
    alpha_rew 150 and collapses past it (below 0.9 from 183 on). Best: 0.913 at 183, c 0.1."""
    import math

    from ray.tune.utils.util import merge_dicts

    from distar.raytune.searcher import search_space, search_tune_config

    ranges = ((1.0, 300.0), (0.0, 11.25), (0.01, 1.0))
    space = search_space(Config().with_overrides(TINY), seed, *ranges)(
        SweepContext("s", "sqlite:////tmp/x.db", "e", "/tmp/storage", "parent")
    )
    pair = ("reward", "precision")
    searcher = search_tune_config(trials, 1, seed, 2, pair, sampler=sampler, floor=0.9)
    searcher = searcher.search_alg
    searcher.set_search_properties(None, None, space)
    best = -math.inf
    for i in range(trials):
        spec = TrialSpec.from_params(merge_dicts(space, searcher.suggest(f"t{i}")))[0]
        rew, c = spec.paper["alpha_rew"], spec.flat_config["loss.huber_c"]
        reward = math.log(rew) / math.log(300.0) - 0.1 * abs(math.log10(c / 0.1))
        precision = 1.0 - 0.5 * max(0.0, math.log(rew / 150.0))
        value = reward - 10.0 * max(0.0, 0.9 - precision)
        best = max(best, value)
        result = {"objective": value, "eval/reward": reward, "eval/precision": precision}
        searcher.on_trial_complete(f"t{i}", result=result | {"training_iteration": 1})
    return best


def test_the_default_search_climbs_to_the_floor_and_stops_there():
    """The default sampler (gp: reward modelled with the precision floor as a constraint)
    comes near the best a floor allows (0.913) in every seed 0-4 on a world whose precision
    collapses past the best reward scale, as the embedded world's does. Why 0.87: the best
    is a narrow band (alpha_rew 150-183 at c near 0.1, ~5 % of the log-uniform range); draws
    that ignore the floor overshoot it. Mutation check, the last line: the pareto sampler
    (trials spread along the reward-precision front) must fail the same bar in some seed."""
    assert min(climb("gp", seed) for seed in range(5)) >= 0.87
    assert min(climb("pareto", seed) for seed in range(5)) < 0.87


def test_a_cell_is_rounded_to_two_significant_digits_of_its_ci():
    """Digits beyond the CI's second are noise: a mean shows no more than its CI supports."""
    from analysis.runs import cell

    assert cell(0.123456, 0.0123) == "0.123 ± 0.012"
    assert cell(-27.9925, 3.5068) == "-28.0 ± 3.5"
    assert cell(0.0012345, 0.00951) == "0.0012 ± 0.0095"
    assert cell(1234.4, 120.0) == "1234 ± 120"
    assert cell(1.0, 0.0) == "1.000 ± 0"  # seeds that agree exactly
    assert cell(16.0, float("nan")) == "16.00"  # one seed: no CI, 4 significant digits
    assert cell(float("nan"), 0.1) == "–"


def test_paper_tables_1_to_3_from_runs_in_the_papers_units(tmp_path):
    from analysis.paper_tables import build

    best, init = TABLE2[-1].label, TABLE2[0].label
    runs = fake_runs(
        [
            (best, 0.1, 0, "FINISHED", 0.0),
            (best, 0.1, 1, "FINISHED", 0.0),
            (init, 0.1, 0, "FINISHED", 0.0),
            (init, 0.1, 1, "FAILED", 0.0),
        ]
    )
    for bench in ("parti", "coco"):
        runs[f"metrics.{bench}/pickscore"] = [0.230, 0.232, 0.225, float("nan")]  # cosine
        runs[f"metrics.{bench}/imagereward"] = [1.0, 1.1, 0.9, float("nan")]
    runs["metrics.coco/fid"] = [20.0, 22.0, 16.0, float("nan")]
    runs["metrics.parti/pickscore/Animals"] = [0.235, 0.230, 0.220, float("nan")]
    for style in ("anime", "concept-art", "paintings", "photo", "average"):
        runs[f"metrics.hps/{style}"] = [30.0, 30.5, 28.0, float("nan")]
    texts = build(runs, tmp_path)
    t1 = pd.read_csv(tmp_path / "table1.csv")
    mine = t1[(t1["benchmark"] == "parti") & (t1["row"] == best)].iloc[0]
    # (0.230 + 0.232) / 2, as logged, to the place its CI (t_1 x 0.001) supports
    assert mine["pickscore"] == "0.231 ± 0.013"
    assert mine["paper_pickscore"] == pytest.approx(0.2304) and mine["paper_model"] == "DI*-SDXL"
    coco_init = t1[(t1["benchmark"] == "coco") & (t1["row"] == init)].iloc[0]
    # torchmetrics' FID on the benchmark's images: no published number beside it (the paper's
    # 15.80 was measured another, unstated way)
    assert coco_init["fid"] == "16.00" and pd.isna(coco_init["paper_fid"])
    assert coco_init["fid_protocol"].startswith("torchmetrics")
    assert "never printed beside ours" in texts["table1"]
    assert "1 (1 of 2 seeds failed or unfinished)" in texts["table1"]
    # under DMD2's SDXL protocol, DMD2's published FID of the init model stands beside ours
    runs["params.eval.fid_protocol"] = "dmd2-sdxl"
    build(runs, tmp_path)
    t1 = pd.read_csv(tmp_path / "table1.csv").set_index(["benchmark", "row"])
    assert t1.loc[("coco", init), "paper_fid"] == pytest.approx(19.01)
    assert pd.isna(t1.loc[("coco", best), "paper_fid"])  # DMD2 published none for DI*
    assert t1.loc[("coco", best), "fid_protocol"] == "dmd2-sdxl"
    t2 = pd.read_csv(tmp_path / "table2.csv").set_index("row")
    assert t2.loc[best, "paper_pickscore"] == pytest.approx(0.2304)
    t3 = pd.read_csv(tmp_path / "table3.csv").set_index("row")
    # 30.25 ± 3.18 (t_1 x 0.25), rounded to the CI's two significant digits
    assert t3.loc[best, "average"] == "30.2 ± 3.2" and t3.loc[best, "paper_average"] == 30.22
    assert (tmp_path / "parti_categories.png").stat().st_size > 0


def test_evaluation_of_a_checkpoint_on_two_ray_workers_equals_one_process(ray_address, tmp_path):
    """``python -m distar.cli.evaluate --checkpoint RUN --ray-workers 2``: two actors, each loading
    the run's generator and the metrics once, give the rows and summaries of one process."""
    from distar.cli.evaluate import build_parser, resolve_job
    from distar.evaluation.standalone import run_evaluation
    from distar.loop.trainer import Trainer

    run_flat = {
        "train.steps": 2,
        "train.batch_size": 2,
        "eval.plot": False,
        "eval.benchmarks": "",
        "train.out_dir": str(tmp_path / "run"),
    }
    run_cfg = Config.for_world("sd15-tiny", run_flat)
    Trainer(run_cfg).train()
    args = [
        "--tiny",
        "--checkpoint",
        str(tmp_path / "run" / "checkpoints"),
        "--batch-size",
        "3",
        "--benchmark",
        "parti:7",
        "--benchmark",
        "coco:4",
        "--prompts",
        BENCH_PROMPTS.split(",")[0],
        "--prompts",
        BENCH_PROMPTS.split(",")[1],
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'eval.db'}",
    ]
    _, one = run_evaluation(resolve_job(build_parser().parse_args(args)), tmp_path / "a")
    job = resolve_job(build_parser().parse_args([*args, "--ray-workers", "2", "--run-name", "ray"]))
    _, two = run_evaluation(job, tmp_path / "b")
    for a, b in zip(one, two, strict=True):
        assert len(a.rows) == (7 if a.benchmark == "parti" else 4)
        # equal up to fp32 batch-composition rounding (a shard's batches hold other samples)
        pd.testing.assert_frame_equal(a.rows, b.rows, rtol=1e-4, atol=1e-5)
        assert a.summary == pytest.approx(b.summary, rel=1e-4, abs=1e-5)


def test_the_suites_ray_keeps_its_state_in_the_suites_home(ray_address):
    """Ray 2.60's first local ray.init() writes ~/.ray/auth_token, and every later Ray session of
    that user turns token authentication on: the session's Ray wrote it under the suite's own
    home (tests/conftest.py), never the user's."""
    from conftest import SUITE_HOME, USER_HOME

    assert Path.home() == SUITE_HOME != USER_HOME
    assert (SUITE_HOME / ".ray" / "auth_token").is_file()


def test_a_pipeline_evaluated_on_two_ray_workers_equals_one_process(ray_address, tmp_path):
    """``--pipeline DIR --ray-workers 2`` (a tiny FLUX-dev pipeline, fp32): each actor loads the
    pipeline once; the rows are those of one process, and the first actor times inference."""
    from distar.cli.evaluate import build_parser, resolve_job
    from distar.evaluation.standalone import run_evaluation
    from distar.worlds.flow.tiny_pipelines import resolve

    args = [
        *("--tiny", "--pipeline", resolve("tiny:flux"), "--steps", "3", "--dtype", "fp32"),
        *("--resolution", "64", "--batch-size", "2", "--benchmark", "parti:3"),
        *("--benchmark", "coco:2", "--prompts", BENCH_PROMPTS.split(",")[0]),
        *("--prompts", BENCH_PROMPTS.split(",")[1]),
        *("--tracking-uri", f"sqlite:///{tmp_path / 'eval.db'}"),
    ]
    _, one = run_evaluation(resolve_job(build_parser().parse_args(args)), tmp_path / "a")
    job = resolve_job(build_parser().parse_args([*args, "--ray-workers", "2", "--run-name", "ray"]))
    _, two = run_evaluation(job, tmp_path / "b")
    for a, b in zip(one, two, strict=True):
        pd.testing.assert_frame_equal(a.rows, b.rows, rtol=1e-4, atol=1e-5)
    client = tracking.client(f"sqlite:///{tmp_path / 'eval.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("distar-eval").experiment_id], "attributes.run_name = 'ray'"
    )
    assert run.data.metrics["infer_sec_per_10"] > 0 and run.data.params["pipeline.steps"] == "3"


def test_text_presets_search_held_out_metrics_and_refuse_the_trained_reward():
    """``search.py --world sd15-tiny --dry-run``: a held-out objective (Parti ImageReward) and
    fidelity axis (COCO CLIP score), not the PickScore it trains on; asking for that is refused
    unless --allow-trained-reward."""
    code, out, err = dry_run("search", ["--world", "sd15-tiny"])
    assert code == 0, err
    assert "'metric': 'parti/imagereward', 'floor_metric': 'coco/clip_score'" in out
    assert "pareto axes: parti/imagereward (maximised) vs coco/clip_score" in out
    for flags in (["--metric", "reward"], ["--floor-metric", "parti/pickscore"]):
        code, _, err = dry_run("search", ["--world", "sd15-tiny", *flags])
        assert code == 2 and "reward this world trains on" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        allowed = ["--world", "sd15-tiny", *flags, "--allow-trained-reward"]
        assert dry_run("search", allowed)[0] == 0
    embedded = dry_run("search", [])[1]
    assert "'metric': 'reward', 'floor_metric': 'precision', 'floor': 0.9" in embedded


def test_objective_floors_and_ceilings():
    from distar.raytune.spec import Objective, tune_result

    floor = Objective("parti/imagereward", "coco/clip_score", 31.0, 10.0)
    assert floor({"parti/imagereward": 1.0, "coco/clip_score": 32.0}) == 1.0
    assert floor({"parti/imagereward": 1.0, "coco/clip_score": 30.5}) == pytest.approx(-4.0)
    ceiling = Objective("parti/imagereward", "coco/fid", 20.0, 0.1)  # FID: lower is better
    assert ceiling({"parti/imagereward": 1.0, "coco/fid": 19.0}) == 1.0
    assert ceiling({"parti/imagereward": 1.0, "coco/fid": 25.0}) == pytest.approx(0.5)
    result = tune_result(
        {}, {"reward": 0.3, "parti/imagereward": 1.0, "coco/clip_score": 32.0}, 5, floor
    )
    assert result["eval/reward"] == 0.3 and result["parti/imagereward"] == 1.0
    assert result["objective"] == 1.0
