"""Table 1 measured: released models on diffusers pipelines through the one evaluation harness.

Tiny random SDXL, SD3.5 and FLUX pipelines (written with ``save_pretrained``: the real folder
formats) run the whole multi-step path on CPU. Tolerances: fp32 runs of one network agree to
rounding (~1e-6 on images in [0, 1]; 1e-5 allowed); settings that must change images change them
by orders of magnitude more.
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from distar.config import paper
from distar.config.pipelines import MODEL_CARDS, PipelineConfig
from distar.config.tree import ConfigError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PAPER_CSV = DATA / "paper_tables.csv"
FP32_TOLERANCE = 1e-5


def tiny(name: str) -> str:
    from distar.worlds.flow.tiny_pipelines import resolve as flow
    from distar.worlds.sd.tiny_pipelines import resolve as sd

    return sd(f"tiny:{name}") if name in ("sd15", "sdxl") else flow(f"tiny:{name}")


def generator(world_cache, name: str, **settings):
    from distar.evaluation.pipeline_generator import PipelineGenerator, load_pipeline

    config = PipelineConfig(path=tiny(name), resolution=64, **settings)
    return PipelineGenerator(*load_pipeline(config, "cpu"))


def noise(shape, n=2, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_cards_fill_unset_settings_and_refuse_bad_ones():
    sdxl = PipelineConfig(path="x").resolved("sdxl")
    assert (sdxl.steps, sdxl.guidance, sdxl.scheduler, sdxl.dtype) == (50, 5.0, "folder", "fp16")
    dmd2 = PipelineConfig(model="DMD2-SDXL").resolved("sdxl")
    assert (dmd2.steps, dmd2.timesteps, dmd2.guidance, dmd2.scheduler) == (
        1,
        "399",
        0.0,
        "LCMScheduler",
    )
    # a --steps of one's own drops the card's timesteps; --timesteps sets the steps
    assert PipelineConfig(model="DMD2-SDXL", steps=4).resolved("sdxl").timesteps == ""
    assert PipelineConfig(timesteps="999,499").resolved("sdxl").steps == 2
    flux = PipelineConfig(guidance=0.0).resolved("flux")  # 0 is a setting, not "unset"
    assert (flux.guidance, flux.max_sequence_length, flux.calls_per_image()) == (0.0, 512, 50)
    assert PipelineConfig().resolved("sdxl").calls_per_image() == 100  # CFG: two per step
    for bad, field in (
        (dict(model="Nope"), "pipeline.model"),
        (dict(scheduler="Euler"), "pipeline.scheduler"),
        (dict(timesteps="399,999"), "pipeline.timesteps"),
        (dict(resolution=1000), "pipeline.resolution"),
        (dict(dtype="fp8"), "pipeline.dtype"),
        (dict(guidance=-2.0), "pipeline.guidance"),
    ):
        with pytest.raises(ConfigError, match=field):
            PipelineConfig(**bad)
    with pytest.raises(ConfigError, match="pipeline.steps"):
        PipelineConfig(steps=2, timesteps="399").resolved("sdxl")
    with pytest.raises(ConfigError, match="flux model"):
        PipelineConfig(model="FLUX-dev").resolved("sdxl")
    flat = PipelineConfig(path="p", model="SIM-SDXL").to_flat()
    assert PipelineConfig.from_flat(json.loads(json.dumps(flat))).to_flat() == flat


def test_the_paper_table1_is_the_printed_one():
    printed = pd.read_csv(PAPER_CSV)
    printed = printed[printed["table"] == 1]
    # the paper names the long-trained models differently on Parti and COCO
    same = {
        "DI*-SDXL (longer training)": "DI*-SDXL (long train)",
        "DI*-SDXL-DDPO (long train)": "DI*-SDXL-DPO (long train)",
    }
    rows = {
        (b, same.get(m, m)): r
        for b, m, r in zip(printed.benchmark, printed.model, printed.itertuples(), strict=True)
    }
    assert set(rows) == set(paper.TABLE1)
    for key, scores in paper.TABLE1.items():
        r = rows[key]
        assert (scores.image_reward, scores.aesthetic, scores.pickscore, scores.clip_score) == (
            r.image_reward,
            r.aesthetic,
            r.pickscore,
            r.clip_score,
        )
        assert math.isnan(scores.coco_fid) if key[0] == "parti" else scores.coco_fid == r.coco_fid
    for model in paper.TABLE1_MODELS:
        r = rows[("parti", model.name)]
        assert (model.steps, model.params, model.infer_sec_per_10) == (
            r.steps,
            r.params,
            r.infer_sec_per_10,
        )
    # every card is a Table 1 model, at the paper's steps
    steps = {m.name: m.steps for m in paper.TABLE1_MODELS}
    assert all(steps[c.name] == c.steps for c in MODEL_CARDS.values())


def test_the_planner_reproduces_the_papers_inference_times():
    """The estimate is fitted on SDXL's two rows and gives SD3.5's and FLUX's from their own:
    each card's calls per image must land on its paper time (a wrong call count does not)."""
    from distar.worlds.cost_model import inference_seconds
    from distar.worlds.footprints import ARCHES

    for model in paper.TABLE1_MODELS:
        card = MODEL_CARDS.get(model.name)
        if card is None:
            continue
        calls = PipelineConfig(model=card.name).resolved(card.family).calls_per_image()
        assert card.arch in ARCHES
        assert inference_seconds(card.arch, calls, 10) == pytest.approx(model.infer_sec_per_10)


def test_the_dmd2_card_samples_the_worlds_one_step_generator(world_cache, tmp_path):
    """LCMScheduler at t=399 with no guidance (the DMD2 / DI* release's sampling) on a UNet is
    the SD world's one-step generator G(z) = D(sqrt(1 + s^2) z; s) on the same UNet: one map,
    two code paths, equal in fp32."""
    from distar.config.tree import Config
    from distar.worlds.builders import build_world

    overrides = {"world.dtype": "fp32", "world.vae_dtype": "fp32"}
    world = build_world(Config.for_world("sdxl-tiny", overrides).world, torch.device("cpu"))
    ours = world.eval_generator()
    pipe = generator(world_cache, "sdxl", model="DMD2-SDXL", dtype="fp32")
    z = noise(pipe.noise_shape, 3)
    prompts = ["a red cube on a table", "two cats", ""]
    a, b = ours(prompts, z), pipe(prompts, z)
    assert (a - b).abs().max() < FP32_TOLERANCE
    other_noise = pipe(prompts, noise(pipe.noise_shape, 3, seed=1))
    assert (a - other_noise).abs().max() > 100 * FP32_TOLERANCE
    # the generator as distar.cli.export writes it (one safetensors state dict), put on the base
    # pipeline with --unet: a trained generator (here: its weights perturbed) is what is sampled
    from safetensors.torch import save_file

    unet = world.generator.denoiser.unet
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    save_file(state, tmp_path / "g.safetensors")
    unet_file = str(tmp_path / "g.safetensors")
    trained = generator(world_cache, "sdxl", model="DMD2-SDXL", dtype="fp32", unet=unet_file)
    c = trained(prompts, z)
    assert (ours(prompts, z) - c).abs().max() < FP32_TOLERANCE
    assert (c - b).abs().max() > 100 * FP32_TOLERANCE


@pytest.mark.parametrize(
    "name, setting",
    [
        ("sdxl", dict(negative_prompt="blurry, low quality")),
        ("sd35", dict(guidance=1.5)),
        ("flux", dict(guidance=1.0)),  # FLUX-dev's guidance embedding
    ],
)
def test_each_sample_is_fixed_by_its_noise_and_settings_reach_the_pipeline(
    world_cache, name, setting
):
    """A sample's image depends on its own noise only (not on the batch), and a recorded setting
    (negative prompt, guidance, FLUX's guidance embedding) changes the images."""
    g = generator(world_cache, name, steps=4, dtype="fp32")
    z = noise(g.noise_shape, 2)
    both = g(["a lighthouse at dusk", "a bowl of fruit"], z)
    alone = g(["a bowl of fruit"], z[1:])
    assert both.shape == (2, 3, 64, 64) and 0 <= both.min() and both.max() <= 1
    assert (both[1:] - alone).abs().max() < FP32_TOLERANCE
    # the noise is the pipeline's initial latents (FLUX's packed by diffusers' own packing): a
    # direct call with them and an unrelated generator makes the same images
    latents = z if name != "flux" else g.pipe._pack_latents(z, 2, *z.shape[1:])
    direct = g.pipe(
        prompt=["a lighthouse at dusk", "a bowl of fruit"],
        latents=latents,
        generator=torch.Generator().manual_seed(123),
        **g.call_options(2),
    ).images
    assert (both - direct).abs().max() < FP32_TOLERANCE
    other = generator(world_cache, name, steps=4, dtype="fp32", **setting)
    changed = other(["a lighthouse at dusk", "a bowl of fruit"], z)
    assert (changed - both).abs().max() > 100 * FP32_TOLERANCE


def test_timing_is_ten_images_after_a_warm_up():
    from distar.data.prompts import Prompt, PromptSet
    from distar.evaluation.harness import HarnessOptions
    from distar.evaluation.inference_time import time_generation

    class Counting:
        noise_shape = (2,)
        calls: list[int] = []

        def __call__(self, prompts, noise):
            self.calls.append(len(prompts))
            return noise

    g = Counting()
    prompts = PromptSet("parti", [Prompt(f"p{i}", "g", i) for i in range(3)])
    timing = time_generation(g, prompts, HarnessOptions(batch_size=4))
    assert g.calls == [1, 4, 4, 2]  # one untimed image, then 10 in batches of the eval's size
    assert timing.seconds_per_10 > 0 and timing.device.startswith("cpu")
    assert timing.params()["timing.batch_size"] == 4


def models_dir(root: Path) -> Path:
    """SDXL-Base, SD3.5-Large, FLUX-dev and DMD2 (an fp16 UNet state dict, as released) under
    their released folder names."""
    from diffusers import UNet2DConditionModel

    names = {
        "stable-diffusion-xl-base-1.0": "sdxl",
        "stable-diffusion-3.5-large": "sd35",
        "FLUX.1-dev": "flux",
    }
    root.mkdir()
    for folder, name in names.items():
        (root / folder).symlink_to(tiny(name))
    unet = UNet2DConditionModel.from_pretrained(tiny("sdxl"), subfolder="unet")
    (root / "DMD2").mkdir()
    state = {k: v.half() for k, v in unet.state_dict().items()}
    torch.save(state, root / "DMD2" / MODEL_CARDS["DMD2-SDXL"].unet_files[0])
    return root


def table1_argv(tmp_path: Path, models: Path) -> list[str]:
    return [
        "--models-dir",
        str(models),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--out",
        str(tmp_path / "out"),
        "--tiny",
        "--benchmark",
        "parti:3",
        "--benchmark",
        "coco:2",
        "--prompts",
        f"parti={DATA / 'PartiPrompts.tsv'}",
        "--prompts",
        f"coco={DATA / 'coco2014_val_30k_captions.txt'}",
        "--resolution",
        "64",
        "--batch-size",
        "4",
    ]


def test_table1_dry_run_plans_every_model_found(world_cache, tmp_path, capsys):
    from analysis.table1 import main

    argv = table1_argv(tmp_path, models_dir(tmp_path / "models"))
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "skip SDXL-DPO: not found" in out and "skip DI*-SDXL-DPO (long train)" in out
    for name in ("SDXL-Base", "SD3.5-Large", "FLUX-dev", "DMD2-SDXL"):
        assert f"\n{name}: " in out
    assert "50 steps, 100 network calls per image" in out  # SDXL-Base under CFG
    assert "1 steps, 1 network calls per image, guidance 0, LCMScheduler" in out
    assert out.count("GiB at batch 4") == 4
    assert not (tmp_path / "mlflow.db").exists()  # a plan evaluates nothing


def test_table1_from_tiny_sdxl_sd3_and_flux_pipelines(world_cache, tmp_path, capsys):
    """The one command: every model found evaluated through distar.cli.evaluate --pipeline in
    its card's dtype (fp16 SDXL, bf16 SD3.5 / FLUX), one MLflow run each with its settings,
    tables and inference time, and Table 1 built from those runs beside the paper's rows."""
    from mlflow.tracking import MlflowClient

    from analysis.table1 import main

    argv = table1_argv(tmp_path, models_dir(tmp_path / "models"))
    assert main(argv) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("distar-table1")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"SDXL-Base", "SD3.5-Large", "FLUX-dev", "DMD2-SDXL"}
    seeds = []
    for name, run in runs.items():
        card = MODEL_CARDS[name]
        assert run.info.status == "FINISHED"
        assert run.data.tags["distar.label"] == run.data.tags["paper.method"] == name
        params = run.data.params
        assert params["pipeline.steps"] == str(card.steps)
        assert params["pipeline.dtype"] == card.dtype and params["pipeline.resolution"] == "64"
        assert params["timing.device"].startswith("cpu")
        assert run.data.metrics["infer_sec_per_10"] > 0
        assert "parti/pickscore" in run.data.metrics and "coco/clip_score" in run.data.metrics
        rows = json.loads(
            Path(
                client.download_artifacts(run.info.run_id, "eval/parti_samples.json", tmp_path)
            ).read_text()
        )
        seeds.append([r[rows["columns"].index("seed")] for r in rows["data"]])
    assert all(s == seeds[0] for s in seeds)  # the same prompts and noise for every model
    table = pd.read_csv(tmp_path / "out" / "table1.csv")
    parti = table[table.benchmark == "parti"].set_index("model")
    assert list(parti.index[:4]) == ["SDXL-Base", "SDXL-DPO", "SD3.5-Large", "FLUX-dev"]
    assert (parti.loc[list(runs), "measured"] == "yes").all()
    assert parti.loc["SDXL-DPO", "measured"] == "not measured"
    assert parti.loc["SDXL-Base", "paper_imagereward"] == 0.887
    assert parti.loc["FLUX-dev", "paper_infer_sec_per_10"] == 118.64
    assert " ± " in parti.loc["SD3.5-Large", "pickscore"]
    out = capsys.readouterr().out
    assert "## Table 1" in out and "checkpoint-level" in out
    # a failed evaluation never counts: its row says so (the table rebuilt from the runs alone)
    tags = {"distar.evaluated": "pipeline", "distar.label": "SDXL-DPO"}
    failed = client.create_run(experiment.experiment_id, run_name="SDXL-DPO", tags=tags)
    client.log_metric(failed.info.run_id, "parti/pickscore", 9.0)
    client.set_terminated(failed.info.run_id, status="FAILED")
    assert main(argv[2:6]) == 0  # --tracking-uri, --out: no evaluation
    again = pd.read_csv(tmp_path / "out" / "table1.csv")
    dpo = again[(again.benchmark == "parti") & (again.model == "SDXL-DPO")].iloc[0]
    assert dpo["measured"] == "failed (1 runs)" and pd.isna(dpo["pickscore"])
