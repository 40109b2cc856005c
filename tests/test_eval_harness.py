"""The evaluation harness: batch-size-free seeds, summaries, MLflow tables, the embedded world."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from distar.data.prompts import HPS_STYLES, Prompt, PromptSet
from distar.evaluation import summary
from distar.evaluation.harness import HarnessOptions, evaluate, noise_for, sample_seed

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def Opts(**options) -> HarnessOptions:  # noqa: N802  (reads as the options it builds)
    return HarnessOptions(**{"progress": False, **options})


class NoiseImages:
    """Images that are a fixed function of (prompt, noise): any change of seeding shows."""

    noise_shape = (3, 4, 4)

    def __call__(self, prompts, noise):
        shift = torch.tensor([len(p) % 7 / 7 for p in prompts]).view(-1, 1, 1, 1)
        return torch.sigmoid(noise + shift).repeat_interleave(2, -1).repeat_interleave(2, -2)


class Brightness:
    name = "brightness"

    def score(self, images, prompts):
        return images.mean(dim=(1, 2, 3))


class CountingSet:
    name = "count"

    def reset(self):
        self.n = 0

    def update(self, images, prompts):
        self.n += len(images)

    def compute(self):
        return float(self.n)


def toy_prompts(n=10, groups=("a", "b")):
    return PromptSet(
        "toy", tuple(Prompt(f"p{i}" * (i + 1), groups[i % len(groups)], i) for i in range(n))
    )


def test_per_sample_seeds_do_not_depend_on_batch_size_or_subset():
    prompts, metrics = toy_prompts(), {"brightness": Brightness()}
    a = evaluate(NoiseImages(), prompts, metrics, Opts(batch_size=3, samples_per_prompt=2))
    b = evaluate(NoiseImages(), prompts, metrics, Opts(batch_size=16, samples_per_prompt=2))
    pd.testing.assert_frame_equal(a.rows, b.rows)
    part = evaluate(
        NoiseImages(),
        PromptSet("toy", prompts.prompts[4:7]),
        metrics,
        Opts(batch_size=2, samples_per_prompt=2),
    )
    pd.testing.assert_frame_equal(
        part.rows.reset_index(drop=True), a.rows.iloc[8:14].reset_index(drop=True)
    )
    assert len(set(a.rows["seed"])) == 20  # every (prompt, replica) its own seed
    other = evaluate(NoiseImages(), prompts, metrics, Opts(seed=1))
    assert not np.allclose(other.rows["brightness"], a.rows["brightness"][::2])
    assert torch.equal(noise_for([5, 6], (2,))[1], noise_for([6], (2,))[0])
    assert sample_seed(0, "parti", 3) != sample_seed(0, "coco", 3)


def test_rows_summaries_and_set_metrics():
    result = evaluate(
        NoiseImages(),
        toy_prompts(),
        {"brightness": Brightness(), "count": CountingSet()},
        Opts(),
    )
    assert list(result.rows.columns) == [
        "prompt",
        "group",
        "challenge",
        "index",
        "replica",
        "seed",
        "brightness",
    ]
    s = result.summary
    assert s["toy/brightness"] == pytest.approx(result.rows["brightness"].mean())
    assert s["ci95/toy/brightness_low"] < s["toy/brightness"] < s["ci95/toy/brightness_high"]
    assert s["toy/brightness/a"] == pytest.approx(result.rows["brightness"][::2].mean())
    assert s["toy/count"] == 10.0
    assert result.examples.shape == (10, 3, 8, 8)


def test_hps_summary_names_follow_the_paper_columns():
    rows = pd.DataFrame({"group": list(HPS_STYLES) * 2, "hpsv21": [30.0, 29, 28, 27] * 2})
    s = summary.summarise(rows, "hps", ["hpsv21"])
    assert s["hps/photo"] == 27.0 and s["hps/concept-art"] == 29.0
    assert s["hps/average"] == pytest.approx(28.5)
    assert summary.metric_name("parti", "pickscore", "Food & Beverage") == (
        "parti/pickscore/Food _ Beverage"
    )


def test_bootstrap_interval_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 2.0, 50), rng.normal(1.0, 2.0, 5000)
    lo_s, hi_s = summary.bootstrap_ci(small)
    lo_l, hi_l = summary.bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # width ~ 2 * 1.96 * sigma / sqrt(n)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(5000), rel=0.15)
    assert (hi_s - lo_s) / (hi_l - lo_l) == pytest.approx(10.0, rel=0.25)
    assert np.isnan(summary.bootstrap_ci(np.array([1.0]))[0])


def test_non_finite_images_or_scores_stop_the_evaluation():
    class Broken(NoiseImages):
        def __call__(self, prompts, noise):
            out = super().__call__(prompts, noise)
            out[0, 0, 0, 0] = float("nan")
            return out

    with pytest.raises(FloatingPointError, match="toy: non-finite"):
        evaluate(Broken(), toy_prompts(), {"brightness": Brightness()}, Opts())


@pytest.mark.skipif(not (DATA / "PartiPrompts.tsv").is_file(), reason="needs ../shared/data")
def test_evaluate_command_logs_tables_to_mlflow(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from distar.cli.evaluate import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    main(
        [
            "--smoke-test",
            "--tracking-uri",
            uri,
            "--experiment",
            "eval-test",
            "--prompts",
            f"parti={DATA / 'PartiPrompts.tsv'}",
            "--prompts",
            f"coco={DATA / 'coco2014_val_30k_captions.txt'}",
        ]
    )
    assert "parti/pickscore" in capsys.readouterr().out
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("eval-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    for bench in ("parti", "coco"):
        for metric in ("pickscore", "imagereward", "aesthetic", "clip_score"):
            assert f"{bench}/{metric}" in run.data.metrics
    assert "parti/pickscore/Animals" in run.data.metrics or any(
        k.startswith("parti/pickscore/") for k in run.data.metrics
    )
    assert run.data.params["benchmark.parti.n"] == "8"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {
        "eval/parti_samples.json",
        "eval/coco_samples.json",
        "eval/parti_groups.json",
        "eval/parti_grid.png",
    } <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "eval/parti_samples.json", tmp_path))
    table = json.loads(local.read_text())
    assert len(table["data"]) == 8 and "pickscore" in table["columns"]


def test_the_embedded_world_goes_through_the_same_harness(world_cache):
    from distar.config.gmm import GMMWorldConfig
    from distar.worlds.gmm.eval import GMMGenerator, gmm_metrics, prompt_set
    from distar.worlds.gmm.world import GMMWorld

    world = GMMWorld(GMMWorldConfig(), torch.device("cpu"))
    result = evaluate(
        GMMGenerator(world),
        prompt_set(world),
        gmm_metrics(world),
        Opts(samples_per_prompt=500, batch_size=256),
    )
    direct = world.evaluate(500, seed=0)  # other noise, same generator: agree to MC error
    s = result.summary
    assert len(result.rows) == 500 * world.mixture.n_prompts
    for name in ("reward", "loglik"):  # two independent means: within 4 standard errors
        se = result.rows[name].std() / np.sqrt(len(result.rows))
        assert abs(s[f"gmm/{name}"] - direct[name]) < 4 * np.sqrt(2) * se
    assert s["gmm/precision"] == pytest.approx(direct["precision"], abs=0.03)
    assert s["gmm/coverage"] == pytest.approx(direct["coverage"], abs=0.1)
    assert "gmm/reward/prompt 0" in s
