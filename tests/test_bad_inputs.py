"""Every bad input is refused in one line naming the flag or field and what is allowed, with
exit code 2, before anything starts, and leaves nothing behind (no output directory, no sweep
storage). Table-driven: (entry point, arguments, expected message)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweeps_common import script

ROOT = Path(__file__).resolve().parents[1]
PARTI = ROOT.parent / "shared" / "data" / "PartiPrompts.tsv"


def train(argv):
    from distar.cli.train import main

    return main(argv)


def evaluate(argv):
    from distar.cli.evaluate import main

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
    (
        train,
        [
            "--world",
            "sd15-tiny",
            "--set",
            "eval.benchmarks=parti:3",
            "--set",
            "eval.prompts=parti=/nope/p.tsv",
        ],
        "eval.prompts (parti)",
    ),
    (train, ["--world", "sd15-tiny", "--set", "world.resolution=12"], "a multiple of 8"),
    (
        train,
        ["--set", "loss.cfg_convention=diffusers", "--set", "loss.cfg_scale=0.5"],
        "loss.cfg_scale: got 0.5",
    ),
    (train, ["--set", "optim.assistant_rounds=0"], "optim.assistant_rounds: got 0"),
    (train, ["--set", "resources.strategy=zero3"], "resources.strategy: got 'zero3'"),
    (
        train,
        ["--world", "sd15-tiny", "--set", "noise.generator.sigma_max=80"],
        "noise.generator.sigma_max: got 80.0; allowed: <= 14.61",
    ),
    (train, ["--world", "sd15-tiny", "--set", "world.vae_dtype=fp16"], "force_upcast: true"),
    (
        train,
        ["--world", "sd15-tiny", "--set", "world.dtype=fp16"],
        "world.dtype: got 'fp16'; allowed: one of ('bf16', 'fp32') (fp16 trains without a loss",
    ),
    (train, ["--set", "resources.cpu_offload=true"], "resources.cpu_offload: got True"),
    (train, ["--set", "train.device=tpu"], "train.device: got 'tpu'"),
    (train, ["--world", "sdxl-tiny", "--set", "world.assistant=half"], "world.assistant"),
    (
        train,
        ["--world", "sdxl-tiny", "--set", "world.generator_timestep=1000"],
        "world.generator_timestep: got 1000",
    ),
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
    (
        "ablation_grid",
        ["--set", "loss.cfg_convention=diffusers"],
        "--set loss.cfg_convention: every trial's row sets it from the paper's alpha_rew",
    ),
    ("ablation_grid", ["--set", "loss.cfg_scale=2"], "use sweeps/search.py --alpha-rew-range"),
    ("search", ["--set", "loss.cfg_scale=2"], "--set loss.cfg_scale: the search sets it"),
    ("search", ["--set", "loss.cfg_convention=diffusers"], "use --alpha-cfg-range"),
    (
        "ablation_grid",
        ["--set", "loss.huber_c=0.2", "--huber-c", "0.1", "0.3"],
        "--set loss.huber_c: every trial",
    ),
    (
        "ablation_grid",
        [
            "--world",
            "sd15-tiny",
            "--set",
            "eval.benchmarks=parti:2",
            "--set",
            f"eval.prompts=parti={PARTI}",
            "--set",
            "eval.weights=pickscore=/nope/PickScore",
        ],
        "/nope/PickScore not found",
    ),
    (
        "ablation_grid",
        ["--name", "t2", "--resume", "--set", "train.steps=5"],
        "no sweep 't2' to resume",
    ),
    ("search", ["--samples", "-1"], "--samples: got -1"),
    ("search", ["--evals", "0"], "--evals: got 0"),
    ("search", ["--steps", "5", "--evals", "6"], "--evals: got 6; allowed: at most --steps"),
    ("search", ["--alpha-rew-range", "3", "1"], "--alpha-rew-range: got 3.0 1.0"),
    ("search", ["--alpha-cfg-range", "0", "inf"], "--alpha-cfg-range: got 0.0 inf"),
    ("search", ["--max-concurrent", "0"], "--max-concurrent: got 0"),
    ("search", ["--world", "nowhere"], "--world: got 'nowhere'"),
    ("search", ["--stop-run-sd", "0.01"], "--stop-run-sd: only with --stopper paired or both"),
    ("search", ["--stopper", "paired", "--stop-run-sd", "-1"], "--stop-run-sd: got -1.0"),
    (
        "search",
        ["--world", "sd15-tiny", "--stopper", "paired"],
        "--stop-run-sd: needed with --stopper paired on --world sd15-tiny",
    ),
    ("ablation_grid", ["--min-effect", "eval/reward"], "--min-effect: got 'eval/reward'"),
    ("ablation_grid", ["--min-effect", "eval/rewad=0.01"], "--min-effect: eval/rewad is not"),
    (report, ["--tracking-uri", "sqlite:///nope/mlflow.db"], "no MLflow store at nope/mlflow.db"),
    (report, ["--tracking-uri", "http://127.0.0.1:9"], "http://127.0.0.1:9: unreachable"),
    (evaluate, ["--benchmark", "parti:0"], "the count after ':' must be a positive integer"),
    (evaluate, ["--benchmark", "drawbench"], "--benchmark: got 'drawbench'"),
    (evaluate, ["--benchmark", "parti", "--ray-workers", "-1"], "--ray-workers"),
    (evaluate, ["--benchmark", "parti", "--world", "gmm"], "no text-to-image generator"),
    (evaluate, ["--benchmark", "parti", "--set", "world.x=1"], "--set: only with --world"),
    (evaluate, ["--benchmark", "parti", "--checkpoint", "/nope/run"], "/nope/run does not exist"),
    (evaluate, ["--benchmark", "parti", "--metrics", "beauty"], "--metrics: unknown ['beauty']"),
    (evaluate, ["--benchmark", "parti", "--steps", "4"], "--steps: only with --pipeline"),
    (
        evaluate,
        ["--benchmark", "parti", "--pipeline", "/nope/sdxl"],
        "--pipeline: /nope/sdxl is not",
    ),
    (
        evaluate,
        ["--benchmark", "parti", "--pipeline", ".", "--model", "SDXL"],
        "--model: got 'SDXL'; allowed: one of 'SDXL-Base'",
    ),
    (
        evaluate,
        ["--benchmark", "parti", "--pipeline", ".", "--scheduler", "Euler"],
        "--scheduler: got 'Euler'",
    ),
    (
        evaluate,
        ["--benchmark", "parti", "--pipeline", ".", "--timesteps", "399,999"],
        "--timesteps: got '399,999'; allowed: decreasing integers",
    ),
]


def plan(argv):
    from distar.cli.plan import main

    return main(argv)


def export(argv):
    from distar.cli.export import main

    return main(argv)


def evaluate_run(argv):
    """``distar.cli.evaluate`` for real (no --dry-run): refused before a model loads."""
    from distar.cli.evaluate import main

    return main(argv)


# The text worlds and the entry points' own flags (issue 19): "{in}" is a folder of bad inputs
# (the ``inputs`` fixture); an --out / --storage in the arguments replaces the test's own.
TEXT_CASES = [
    (
        evaluate,
        ["--benchmark", "parti", "--pipeline", "{in}/sdxl-index", "--scheduler", "EulerScheduler"],
        "--scheduler: got 'EulerScheduler'; diffusers has no such scheduler",
    ),
    (train, ["--config", "{in}/bad.yaml"], "--config {in}/bad.yaml: not valid YAML"),
    (train, ["--config", "{in}/list.yaml"], "top level is a list; allowed: a mapping of sections"),
    (train, ["--config", "{in}/nope.yaml"], "--config: {in}/nope.yaml is not a file"),
    (train, ["--resume", "{in}/nope"], "--resume: no checkpoint at {in}/nope"),
    (train, ["--resume", "{in}/empty"], "--resume: no checkpoint at {in}/empty"),
    (train, ["--resume", "{in}/dangling/checkpoints"], "--resume: no checkpoint at"),
    (train, ["--smoke-test", "--out", "{in}/afile"], "--out: {in}/afile is a file"),
    (train, ["--smoke-test", "--out", "/proc/distar/out"], "--out: /proc/distar/out cannot be"),
    (
        train,
        ["--set", "world.name=sdxl"],
        "world.name: got 'sdxl' on a 'gmm' config; allowed: --world sdxl",
    ),
    (train, ["--smoke-test", "--set", "train.device=cuda"], "train.device: got 'cuda' but torch"),
    (train, ["--world", "sdxl"], "world.reference is not set"),
    (
        train,
        ["--world", "sd15", "--set", "world.reference={in}/nope"],
        "world.reference: {in}/nope is not a directory",
    ),
    (
        train,
        ["--world", "sdxl-tiny", "--set", "world.reference={in}/empty"],
        "world.reference: {in}/empty lacks",
    ),
    (
        train,
        ["--world", "sdxl-tiny", "--set", "world.generator_init={in}/text.bin"],
        "world.generator_init: {in}/text.bin is not a state dict",
    ),
    (
        train,
        ["--world", "sdxl-tiny", "--set", "world.generator_init={in}/sd15.bin"],
        "does not fit the reference's UNet config",
    ),
    (
        train,
        ["--world", "sdxl-tiny", "--set", "world.generator_init={in}/notes.txt"],
        "world.generator_init: {in}/notes.txt: expected a UNet state dict",
    ),
    (
        train,
        ["--world", "sdxl-tiny", "--set", "world.prompts={in}/nope.txt"],
        "world.prompts: {in}/nope.txt is not a file",
    ),
    (
        train,
        ["--world", "sdxl-tiny", "--set", "world.reward_model={in}/nope"],
        "world.reward_model / world.reward_processor",
    ),
    (
        train,
        ["--world", "sd15-tiny", "--set", "world.cache_dir=/proc/distar"],
        "world.cache_dir (the cache folder): /proc/distar cannot be written",
    ),
    (
        train,
        ["--world", "sd15-tiny", "--set", "eval.fid_protocol=dmd2-sd15"],
        "eval.fid_protocol: got 'dmd2-sd15'; allowed: a protocol with coco:30000",
    ),
    (train, ["--world", "sd15-tiny", "--set", "eval.benchmarks=hps:4"], "eval.prompts (hps)"),
    ("ablation_grid", ["--storage", "{in}/afile"], "--storage: {in}/afile is a file"),
    ("ablation_grid", ["--name", "it's"], '--name: got "it\'s"'),
    ("ablation_grid", ["--experiment", ""], "--experiment: got ''"),
    ("ablation_grid", ["--world", "sdxl", "--smoke-test"], "world.reference is not set"),
    (
        "ablation_grid",
        ["--world", "sdxl-tiny", "--smoke-test", "--set", "world.generator_init={in}/text.bin"],
        "is not a state dict",
    ),
    (
        "ablation_grid",
        ["--world", "sd15-tiny", "--smoke-test", "--set", "world.prompts={in}/nope.txt"],
        "world.prompts: {in}/nope.txt",
    ),
    ("search", ["--smoke-test", "--evals", "0"], "--evals: not with --smoke-test"),
    ("search", ["--smoke-test", "--samples", "5"], "--samples: not with --smoke-test"),
    ("search", ["--floor-metric", "nope"], "--floor-metric: got 'nope'; allowed:"),
    ("search", ["--world", "sd15-tiny", "--metric", "reward"], "the reward this world trains on"),
    ("search", ["--huber-c-range", "0", "1"], "--huber-c-range: got 0.0 1.0; allowed: 0 < LOW"),
    ("search", ["--alpha-rew-range", "0", "10"], "--alpha-rew-range: got 0.0 10.0"),
    ("search", ["--world", "sdxl", "--smoke-test"], "world.reference is not set"),
    ("search", ["--name", ""], "--name: got ''"),
    ("search", ["--asha-reduction", "1"], "--asha-reduction: got 1; allowed: 2 to 1000"),
    (report, ["--tracking-uri", "sqlite:///{in}/notdb.db"], "cannot be read (DatabaseError"),
    (
        report,
        ["--tracking-uri", "sqlite:///{in}/store/mlflow.db", "--experiment", "nope"],
        "--experiment: no experiment 'nope'",
    ),
    (
        report,
        ["--tracking-uri", "sqlite:///{in}/store/mlflow.db", "--experiment", "Default"],
        "--experiment: no trial runs in 'Default'",
    ),
    (
        report,
        ["--tracking-uri", "sqlite:///{in}/store/mlflow.db", "--out", "{in}/afile"],
        "--out: {in}/afile is a file",
    ),
    (
        evaluate_run,
        ["--benchmark", "coco", "--fid-protocol", "dmd2-sd15", "--metrics", "fid"],
        "1000 captions in",
    ),
    (evaluate_run, ["--benchmark", "parti", "--experiment", ""], "--experiment: got ''"),
    (
        evaluate_run,
        ["--benchmark", "parti:4", "--tiny", "--device", "cuda"],
        "--device: got 'cuda' but torch sees no CUDA device",
    ),
    (evaluate_run, ["--benchmark", "parti", "--world", "sdxl"], "world.reference is not set"),
    (
        evaluate_run,
        ["--benchmark", "parti:4", "--metrics", "pickscore"],
        "eval.weights (pickscore)",
    ),
    (train, ["--world", "sd15-tiny", "--set", "train.init=random"], "train.init: got 'random'"),
    (plan, ["--check", "{in}/nope.jsonl"], "--check: {in}/nope.jsonl is not a file"),
    (plan, ["--check", "{in}/bad.yaml"], "--check: {in}/bad.yaml:1 is not a JSON row"),
    (export, ["{in}/empty", "--out", "out"], "no checkpoint at {in}/empty"),
    (export, ["{in}/dangling/checkpoints", "--out", "out"], "no checkpoint at"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, world_cache):
    """Bad inputs, written once: YAML that does not parse or is a list, a file where a folder
    belongs, an empty folder, a dangling checkpoint pointer, a text file named .bin, an SD1.5
    UNet state dict (for an SDXL reference), a store that is not a database, an empty store."""
    import torch
    from diffusers import UNet2DConditionModel
    from mlflow.tracking import MlflowClient

    from distar.worlds.sd.tiny_pipelines import resolve

    d = tmp_path_factory.mktemp("bad-inputs")
    (d / "bad.yaml").write_text("train: [1\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "afile").write_text("a file\n")
    (d / "notes.txt").write_text("not weights\n")
    (d / "text.bin").write_text("hello\n")
    (d / "notdb.db").write_text("not a database\n")
    (d / "empty").mkdir()
    (d / "sdxl-index").mkdir()  # a pipeline folder as far as its class goes
    (d / "sdxl-index" / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionXLPipeline"}'
    )
    (d / "dangling" / "checkpoints").mkdir(parents=True)
    (d / "dangling" / "checkpoints" / "latest").write_text("step_0000009")
    unet = UNet2DConditionModel.from_pretrained(resolve("tiny:sd15"), subfolder="unet")
    torch.save(unet.state_dict(), d / "sd15.bin")
    (d / "store").mkdir()
    MlflowClient(f"sqlite:///{d / 'store' / 'mlflow.db'}").search_experiments()
    return d


@pytest.fixture
def no_model_loads(monkeypatch):
    """Counts every diffusers / transformers ``from_pretrained`` while a case runs."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    calls = []
    for cls in (ModelMixin, PreTrainedModel):
        original = cls.from_pretrained.__func__

        def counted(klass, *args, _original=original, **kwargs):
            calls.append(klass.__name__)
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(counted))
    return calls


def run_case(entry, argv, out):
    if isinstance(entry, str):
        own = "--storage" in argv
        return script(entry)(argv if own else [*argv, "--storage", str(out)])
    if entry in (train, report):
        return entry(argv if "--out" in argv else [*argv, "--out", str(out)])
    return entry(argv)


@pytest.mark.parametrize(
    "entry,argv,message", CASES + TEXT_CASES, ids=[" ".join(c[1])[:60] for c in CASES + TEXT_CASES]
)
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(
    entry, argv, message, tmp_path, capsys, monkeypatch, inputs, no_model_loads
):
    """Exit 2, one line naming the flag or field, no traceback, no output folder, no model
    loaded, in seconds."""
    monkeypatch.chdir(tmp_path)  # a command that writes to its default folders writes here
    monkeypatch.delenv("DISTAR_HPS_PROMPTS", raising=False)
    if "train.device=cuda" in argv or "cuda" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    argv = [a.replace("{in}", str(inputs)) for a in argv]
    out = tmp_path / "out"
    started = time.perf_counter()
    code = run_case(entry, argv, out)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2
    assert message.replace("{in}", str(inputs)) in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    assert no_model_loads == [], f"loaded {no_model_loads} before refusing"
    assert seconds < 30, f"refused after {seconds:.1f} s"


def test_refusals_remove_fresh_outputs_keep_started_work_and_let_bugs_through(tmp_path, capsys):
    """An anticipated error: one line, exit 2, a folder the command made is removed -- unless
    work started in it (a sweep's trials/, a run's checkpoints/); anything else propagates."""
    from distar.config.tree import ConfigError
    from distar.util.refusals import refusing

    fresh, started = tmp_path / "fresh", tmp_path / "started"

    def body(outputs):
        outputs.watch(fresh, started)
        fresh.mkdir()
        (started / "trials").mkdir(parents=True)
        raise ConfigError("--flag: got 1; allowed: 2")

    assert refusing(body) == 2
    assert capsys.readouterr().err == "config error: --flag: got 1; allowed: 2\n"
    assert not fresh.exists() and (started / "trials").is_dir()

    def bug(outputs):
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        refusing(bug)


def test_a_sweep_whose_ray_cannot_start_records_nothing(tmp_path):
    """A dead RAY_ADDRESS: refused in seconds, in one line; no parent run or definition is left,
    so the same command is refused for the same reason again, never as "already has a run"."""
    from distar.runtime.local_ray import free_port

    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    out = tmp_path / "sweep"
    grid = [sys.executable, str(ROOT / "sweeps" / "ablation_grid.py"), "--smoke-test"]
    for _ in range(2):  # separate processes, as a user reruns a command
        started = time.perf_counter()
        done = subprocess.run(
            [*grid, "--storage", str(out)], env=env, capture_output=True, text=True, timeout=120
        )
        code, err = done.returncode, done.stderr
        assert code == 2 and "RAY_ADDRESS: Ray did not start" in err, err
        assert len(err.strip().splitlines()) == 1 and "already has" not in err
        assert not out.exists() and time.perf_counter() - started < 30
