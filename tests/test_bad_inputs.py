"""Every bad input is refused in one line naming the flag or field and what is allowed, with
exit code 2, before anything starts, and leaves nothing behind (no output directory, no sweep
storage). Table-driven: (entry point, arguments, expected message)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTI = ROOT.parent / "shared" / "data" / "PartiPrompts.tsv"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def train(argv):
    from distar.train import main

    return main(argv)


def evaluate(argv):
    from distar.evaluate import main

    return main([*argv, "--dry-run"])


def report(argv):
    from analysis.report import main

    return main(argv)


CASES = [
    (train, ["--set", "loss.huber_c=inf"], "loss.huber_c: got inf; allowed: a finite number"),
    (train, ["--set", "loss.reward_scale=nan"], "loss.reward_scale: got nan"),
    (train, ["--set", "train.steps=-1"], "train.steps: got -1"),
    (train, ["--set", "world.bogus=1"], "unknown config key(s): 'world.bogus'"),
    (train, ["--set", "loss.guidance=sideways"], "loss.guidance: got 'sideways'"),
    (train, ["--set", "loss.guidance"], "expected KEY=VALUE"),
    (train, ["--world", "nowhere"], "--world: got 'nowhere'"),
    (train, ["--world", "gmm", "--config", "x.yaml"], "--world: give it alone"),
    (train, ["--resume-fallback"], "--resume-fallback: only with --resume"),
    (train, ["--set", "eval.benchmarks=parti:3"], "eval.benchmarks: got 'parti:3'"),
    (train, ["--world", "sd15-tiny", "--set", "eval.benchmarks=parti:3",
             "--set", "eval.prompts=parti=/nope/p.tsv"], "eval.prompts (parti)"),
    (train, ["--world", "sd15-tiny", "--set", "world.resolution=12"], "a multiple of 8"),
    (train, ["--set", "loss.cfg_convention=diffusers", "--set", "loss.cfg_scale=0.5"],
     "loss.cfg_scale: got 0.5"),
    (train, ["--set", "optim.assistant_rounds=0"], "optim.assistant_rounds: got 0"),
    (train, ["--set", "resources.strategy=zero3"], "resources.strategy: got 'zero3'"),
    (train, ["--world", "sd15-tiny", "--set", "noise.generator.sigma_max=80"],
     "noise.generator.sigma_max: got 80.0; allowed: <= 14.61"),
    (train, ["--world", "sd15-tiny", "--set", "world.vae_dtype=fp16"], "force_upcast: true"),
    (train, ["--set", "resources.cpu_offload=true"], "resources.cpu_offload: got True"),
    (train, ["--set", "train.device=tpu"], "train.device: got 'tpu'"),
    (train, ["--world", "sdxl-tiny", "--set", "world.assistant=half"], "world.assistant"),
    (train, ["--world", "sdxl-tiny", "--set", "world.generator_timestep=1000"],
     "world.generator_timestep: got 1000"),
    (train, ["--set", "eval.weights=pickscore"], "eval.weights: got 'pickscore'"),
    (train, ["--set", "train.steps=1000000000000"], "train.steps: got 1000000000000"),
    (train, ["--set", "train.batch_size=100000000"], "train.batch_size: got 100000000"),
    (train, ["--set", "resources.max_failures=-1"], "resources.max_failures: got -1"),
    (train, ["--set", "resources.cpus_per_worker=inf"], "resources.cpus_per_worker: got inf"),
    ("ablation_grid", ["--max-concurrent", "0"], "--max-concurrent: got 0"),
    ("ablation_grid", ["--smoke-test", "--steps", "5"], "--steps: not with --smoke-test"),
    ("ablation_grid", ["--steps", "0"], "--steps: got 0"),
    ("ablation_grid", ["--seeds", "0", "0"], "--seeds: [0] given more than once"),
    ("ablation_grid", ["--huber-c", "0.1", "0.1"], "--huber-c: [0.1] given more than once"),
    ("ablation_grid", ["--huber-c", "-1"], "loss.huber_c: got -1.0"),
    ("ablation_grid", ["--set", "loss.reward_scale=5"], "--set loss.reward_scale: every trial"),
    ("ablation_grid", ["--set", "loss.cfg_convention=diffusers"],
     "--set loss.cfg_convention: every trial's row sets it from the paper's alpha_rew"),
    ("ablation_grid", ["--set", "loss.cfg_scale=2"], "use sweeps/search.py --alpha-rew-range"),
    ("search", ["--set", "loss.cfg_scale=2"], "--set loss.cfg_scale: the search sets it"),
    ("search", ["--set", "loss.cfg_convention=diffusers"], "use --alpha-cfg-range"),
    ("ablation_grid", ["--set", "loss.huber_c=0.2", "--huber-c", "0.1", "0.3"],
     "--set loss.huber_c: every trial"),
    ("ablation_grid", ["--world", "sd15-tiny", "--set", "eval.benchmarks=parti:2",
                       "--set", f"eval.prompts=parti={PARTI}",
                       "--set", "eval.weights=pickscore=/nope/PickScore"],
     "/nope/PickScore not found"),
    ("ablation_grid", ["--name", "t2", "--resume", "--set", "train.steps=5"],
     "no sweep 't2' to resume"),
    ("search", ["--samples", "-1"], "--samples: got -1"),
    ("search", ["--evals", "0"], "--evals: got 0"),
    ("search", ["--steps", "5", "--evals", "6"], "--evals: got 6; allowed: at most --steps"),
    ("search", ["--alpha-rew-range", "3", "1"], "--alpha-rew-range: got 3.0 1.0"),
    ("search", ["--alpha-cfg-range", "0", "inf"], "--alpha-cfg-range: got 0.0 inf"),
    ("search", ["--max-concurrent", "0"], "--max-concurrent: got 0"),
    ("search", ["--world", "nowhere"], "--world: got 'nowhere'"),
    (report, ["--tracking-uri", "sqlite:///nope/mlflow.db"], "no MLflow store at nope/mlflow.db"),
    (report, ["--tracking-uri", "http://127.0.0.1:9"], "http://127.0.0.1:9: unreachable"),
    (evaluate, ["--benchmark", "parti:0"], "the count after ':' must be a positive integer"),
    (evaluate, ["--benchmark", "drawbench"], "--benchmark: got 'drawbench'"),
    (evaluate, ["--benchmark", "parti", "--ray-workers", "-1"], "--ray-workers"),
    (evaluate, ["--benchmark", "parti", "--world", "gmm"], "no text-to-image generator"),
    (evaluate, ["--benchmark", "parti", "--set", "world.x=1"], "--set: only with --world"),
    (evaluate, ["--benchmark", "parti", "--checkpoint", "/nope/run"], "/nope/run does not exist"),
    (evaluate, ["--benchmark", "parti", "--metrics", "beauty"], "--metrics: unknown ['beauty']"),
]  # fmt: skip


@pytest.mark.parametrize("entry,argv,message", CASES, ids=[" ".join(c[1])[:60] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(
    entry, argv, message, tmp_path, capsys, world_cache
):
    out = tmp_path / "out"
    if isinstance(entry, str):
        code = script(entry)([*argv, "--storage", str(out)])
    elif entry is train:
        code = train([*argv, "--out", str(out)])
    elif entry is report:
        code = report([*argv, "--out", str(out)])
    else:
        code = entry(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
