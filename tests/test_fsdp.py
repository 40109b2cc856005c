"""FSDP2 (``resources.strategy=fsdp``) on two gloo ranks gives the step one process takes with
the same global batch -- losses and updated weights -- on both tiny text worlds, in fp32 and in
the bf16 SD users run, with the SD presets' weighting and reuse, copy and LoRA assistants,
chunked and not, offloaded and not, on the exact and the detached gradient paths. Watched from
inside the ranks: every UNet gets its exact fp32 timestep, every trained unit reduces in fp32,
and a step issues the collectives the planner counts. Evaluation works on a sharded generator
with uneven forwards; a sharded checkpoint resumes exactly.

Mutation checks (each breaks one fix and names the test that fails):
- ``distar.runtime.sharding.initialise_now`` not called: the LoRA bf16 cases crash at step 0 (bf16
  gradient into fp32 shards), every test of this module errors;
- ``cast_forward_inputs=True`` in ``shard_network``: test_every_unet_sees_its_exact_fp32_timestep;
- the assistant left trainable in the generator step (``frozen`` dropped in
  ``DIStar.generator_update``): test_the_loop_issues_the_collectives_the_planner_counts (its
  reduce-scatters become 1 + chunks);
- the reference not held gathered (``gathered(*world.frozen_networks())`` dropped): the same
  test, chunked copy cases (one gather per chunk);
- offload on an NCCL-only group: tests/test_distributed.py (``backend``, the refusal).

``bash scripts/fsdp_mutations.sh`` applies each and runs the tests that must fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from distar.config.tree import Config


@dataclass(frozen=True)
class Case:
    """One equivalence case: a tiny world's options as an SD user sets them."""

    world: str
    assistant: str  # copy | lora
    path: str  # loss.gradient_path: exact | detached
    reuse: bool  # optim.reuse_generator_samples (the SD presets: true)
    dtype: str = "fp32"  # world.dtype (the SD presets: bf16)
    weighting: str = "uniform"  # loss.weighting (the SD presets: dmd_normalised)
    chunk: int = 0  # train.generator_chunk
    offload: bool = False  # resources.cpu_offload
    cfg: float | None = None  # loss.cfg_scale (None: the preset's)

    @property
    def name(self) -> str:
        flags = [self.dtype, self.world, self.assistant, self.path]
        flags += ["reuse"] * self.reuse + ["dmd"] * (self.weighting != "uniform")
        flags += [f"chunk{self.chunk}"] * bool(self.chunk) + ["offload"] * self.offload
        return "-".join(flags)


# Reusing, the first generator step meets an assistant still equal to the reference: on the
# exact path the gradient through D_psi - D_ref is rounding alone (a LoRA at zero gives Delta = 0
# bit for bit, yet the Jacobians' difference is not: its norm moved 10 % with the thread count),
# and Adam turns it into a step of up to ~lr that the next step inherits -- so in fp32 the exact
# path is compared in the paper's order, and reuse on the detached path (where Delta = 0 gives
# a zero gradient); the bf16 reuse cases compare only what rounding cannot move.
CASES = [
    Case("sdxl-tiny", "copy", "exact", False),
    Case("sdxl-tiny", "lora", "exact", False),
    Case("sdxl-tiny", "copy", "detached", True, weighting="dmd_normalised", chunk=1),
    Case("sdxl-tiny", "lora", "detached", False, offload=True),
    Case("sd15-tiny", "copy", "exact", False, weighting="dmd_normalised", offload=True),
    Case("sd15-tiny", "lora", "detached", True, chunk=1),
    # the path SDXL users run: bf16, the presets' weighting and reuse, LoRA (whose first
    # forward is the reference with its adapters off: the lazy-init dtype trap), chunking,
    # offload; sd15's t_g = 999 is where a bf16 timestep would read 1000
    Case("sdxl-tiny", "lora", "detached", True, "bf16", "dmd_normalised"),
    Case("sdxl-tiny", "lora", "exact", True, "bf16", "dmd_normalised", chunk=1, offload=True),
    Case("sdxl-tiny", "copy", "exact", False, "bf16", "dmd_normalised", chunk=1),
    Case("sdxl-tiny", "copy", "detached", True, "bf16", "dmd_normalised", offload=True),
    Case("sd15-tiny", "copy", "exact", False, "bf16", "dmd_normalised"),
    Case("sd15-tiny", "lora", "exact", False, "bf16", "dmd_normalised", chunk=1),
    # the flow worlds, built for sharding: rank 0's transformers wait on the host, rank 1's on
    # the meta device, and reach the ranks' shards in shard() (shard_from_rank0)
    Case("flux-tiny", "lora", "exact", False, "bf16", "dmd_normalised"),
    # alpha = 1, not the preset's g - 1: there the copy assistant (fed g) starts equal to the
    # guided target and the first step's Delta is rounding alone, as with reuse above
    Case("flux-tiny", "copy", "detached", True, weighting="dmd_normalised", offload=True, cfg=1.0),
    Case("sd35-tiny", "copy", "exact", False, chunk=1),
]
STEPS = 2
PER_RANK = 2
# The generator loss and its divergence term are linear in Delta = D_psi - D_ref, ~1/400 to
# 1/2300 of |D| after one LoRA assistant step: fp32 rounding of the two forwards (~2.5 u =
# 1.5e-7 of |D|) times |D|/|Delta|, times ~3 for per-sample terms of both signs, moves them by
# up to 4e-4 between batch layouts alone (train.generator_chunk 2 vs 0: 4.0e-4 in one process;
# against float64, one process is 2.8e-4 off and the sharded run 1.5e-4). A wrong gradient or
# draw is off by percents, and the 10 % weight-update check below still catches it.
DELTA_KEYS = {"loss/generator", "loss/divergence"}
# bf16 (u = 2^-8, its unit roundoff). Sharded, every trained weight is gathered in bf16 and
# every op runs on it; one process keeps fp32 masters and autocast rounds only matmul and
# conv inputs: the two layouts round different ops, each output by ~u. So:
# - quantities that are batch means of the networks' outputs (the assistant's denoising loss,
#   the reward, |Delta|) agree within BF16_REL = 8 u (measured: 1.3e-2 at most);
# - the generator's gradient is linear in Delta, whose rounding is ~u |D| against |Delta|:
#   a LoRA assistant moves D by ~1/1000 after one step at lr 1e-3, below bf16's resolution, so
#   there its gradient is rounding in *any* layout (whole-update cosine 0.4 between two
#   correct runs). At lr 1e-2 |Delta| is ~100 u |D| and the comparison sees the gradient;
# - weight updates are compared whole (cosine of the update over a network >= 0.9, i.e. the
#   rounding part of a gradient at most ~half its signal; measured >= 0.96) and per tensor by
#   size (within [1/2, 2] of one process's: a missing gradient is 0; measured >= 0.86), not
#   per element: Adam's first step maps every element to +-lr, so a rounding-sized gradient
#   element flips a whole lr in either layout.
BF16_REL = 8 * 2.0**-8
BF16_KEYS = {"loss/assistant", "reward", "delta_norm"}
ASSISTANT_LR = {("lora", "bf16"): 1e-2}


def case_config(
    case: Case, batch: int, strategy: str, out_dir: str, steps: int = STEPS, **extra
) -> Config:
    return Config.for_world(
        case.world,
        {
            "world.assistant": case.assistant,
            "world.dtype": case.dtype,
            "loss.gradient_path": case.path,
            "loss.weighting": case.weighting,
            "optim.reuse_generator_samples": case.reuse,
            "train.generator_chunk": case.chunk,
            "train.batch_size": batch,
            "train.steps": steps,
            # a logging step adds the per-term gradient norms (a backward through the assistant
            # per term): step 0 is the plain step whose collectives are counted, step 1 logs
            "train.log_every": 2,
            "train.out_dir": out_dir,
            "train.device": "cpu",
            "eval.benchmarks": "",
            # a wrong gradient moves the weights visibly (~lr); with eps = lr, Adam's update is
            # continuous in the gradient (lr * g / (|g| + eps)), so summation order alone
            # cannot flip the ~lr step of a near-zero gradient
            "optim.generator.lr": 1e-3,
            "optim.assistant.lr": ASSISTANT_LR.get((case.assistant, case.dtype), 1e-3),
            "optim.generator.eps": 1e-3,
            "optim.assistant.eps": 1e-3,
            "eval.plot": False,
            "resources.strategy": strategy,
            "resources.cpu_offload": case.offload and strategy == "fsdp",
            **({"loss.cfg_scale": case.cfg} if case.cfg is not None else {}),
            **extra,
        },
    )


def full_weights(trainer) -> dict[str, np.ndarray]:
    from distar.runtime.sharding import full_tensor

    out = {}
    for name, params in trainer.method.params.items():
        named = dict(trainer.modules()[name].named_parameters())
        ids = {id(p) for p in params}
        for key, p in named.items():
            if id(p) in ids:
                out[f"{name}.{key}"] = full_tensor(p.detach()).numpy().copy()
    return out


def full_ema(trainer) -> dict[str, np.ndarray]:
    """The generator EMA's weights, whole, under ``generator_ema.<name>``."""
    from distar.runtime.callbacks import GeneratorEma
    from distar.runtime.sharding import full_tensor

    (ema,) = [cb for cb in trainer.callbacks if isinstance(cb, GeneratorEma)]
    return {f"generator_ema.{k}": full_tensor(v).numpy().copy() for k, v in ema.shadow.items()}


# the resume case runs the training callbacks too: the EMA's shards and the warm-up's state
# go into the sharded checkpoint and come back
CALLBACKS = {"train.ema": 0.9, "optim.warmup_steps": 3}


def train(trainer, steps: int) -> list[dict[str, float]]:
    from distar.runtime.distributed import mean_across_ranks
    from distar.runtime.step_parts import to_floats

    return [to_floats(mean_across_ranks(trainer.train_step())) for _ in range(steps)]


def _rank(rank: int, port: int, out, root: str) -> None:
    import torch.distributed as dist

    from distar.loop.trainer import Trainer
    from distar.runtime.sharding import gathered

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for i, case in enumerate(CASES):
            trainer = Trainer(case_config(case, PER_RANK, "fsdp", f"{root}/case{i}"))
            observed = observe(trainer)
            evaluation, _ = trainer.evaluate()
            with gathered(trainer.world.generator):  # rank 0 alone runs forwards
                if rank == 0:
                    trainer.world.generate(["a red cube"], seed=0)
            dist.barrier()
            weights = full_weights(trainer)
            if rank == 0:
                out.put((i, observed.pop("metrics"), evaluation, weights, observed))
        resumed, saved = resume_exactly(rank, f"{root}/resume")
        if rank == 0:
            out.put(("resume", resumed, saved, f"{root}/resume/a/checkpoints"))
        out.put((f"received{rank}", world_tensors(case_config(CASES[1], 1, "ddp", root))))
    except BaseException as error:  # the parent reports it instead of waiting for a timeout
        out.put(("error", f"rank {rank}: {type(error).__name__}: {error}"))
        raise
    finally:
        dist.destroy_process_group()


def observe(trainer) -> dict:
    """STEPS training steps, watched: every UNet forward's timestep, the collectives of the
    first (a plain step: no gradient-norm diagnostics), the trained units' reduce dtypes."""
    from fsdp_probes import counted_collectives, recorded_timesteps, reduce_dtypes

    timesteps: list = []
    counts: dict = {}
    with recorded_timesteps(trainer.world, timesteps):
        with counted_collectives(trainer.world, counts):
            metrics = train(trainer, 1)
        metrics += train(trainer, STEPS - 1)
    return {
        "metrics": metrics,
        "timesteps": timesteps,
        "collectives": counts,
        "reduce_dtypes": reduce_dtypes(trainer.world),
    }


def resume_exactly(rank: int, root: str) -> tuple[bool, dict[str, np.ndarray]]:
    """4 steps straight vs 2 steps, a sharded checkpoint, a fresh trainer resuming to 4, with
    the generator EMA and the LR warm-up on; also the weights (and EMA) the checkpoint holds."""
    import torch.distributed as dist

    from distar.loop.trainer import Trainer

    case = CASES[1]  # LoRA on the shared reference: the trickiest state
    straight = Trainer(case_config(case, PER_RANK, "fsdp", f"{root}/a", 4, **CALLBACKS))
    train(straight, 2)
    straight.save()
    saved = {**full_weights(straight), **full_ema(straight)}
    train(straight, 2)
    resumed = Trainer(case_config(case, PER_RANK, "fsdp", f"{root}/b", 4, **CALLBACKS))
    resumed.resume(f"{root}/a/checkpoints")
    assert resumed.step == 2
    train(resumed, 2)
    a = {**full_weights(straight), **full_ema(straight)}
    b = {**full_weights(resumed), **full_ema(resumed)}
    lrs = [
        [g["lr"] for o in t.optimizers().values() for g in o.param_groups]
        for t in (straight, resumed)
    ]
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a) and lrs[0] == lrs[1]
    flags = [None, None]
    dist.all_gather_object(flags, same)
    return all(flags), saved


def world_tensors(config: Config) -> tuple[dict[str, np.ndarray], list[int], int]:
    """Every parameter and buffer of every network of a freshly built world; the elements of
    each broadcast its build issued, and of every distinct tensor of its networks."""
    from test_distributed import counted_broadcasts

    from distar.worlds.builders import build_world

    calls = counted_broadcasts()
    world = build_world(config.world, torch.device("cpu"))
    tensors = {id(t): t for net in world.networks() for t in [*net.parameters(), *net.buffers()]}
    named = {
        f"{i}.{name}": t.detach().float().numpy().copy()
        for i, net in enumerate(world.networks())
        for name, t in [*net.named_parameters(), *net.named_buffers()]
    }
    return named, calls, sum(t.numel() for t in tensors.values())


def run_two_ranks(root) -> dict:
    from test_distributed import spawn_two

    # the cases, "resume", "received0", "received1"
    return spawn_two(_rank, str(root), expect=len(CASES) + 3, timeout=600)


@pytest.fixture(scope="module")
def sharded(world_cache, tmp_path_factory):
    return run_two_ranks(tmp_path_factory.mktemp("fsdp"))


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.name for c in CASES])
def test_two_sharded_ranks_take_the_step_of_one_process(sharded, i, tmp_path):
    from distar.loop.trainer import Trainer

    metrics, evaluation, weights, _ = sharded[i]
    bf16 = CASES[i].dtype == "bf16"
    torch.manual_seed(0)
    one = Trainer(case_config(CASES[i], 2 * PER_RANK, "ddp", str(tmp_path)))
    initial = full_weights(one)
    expected = train(one, STEPS)
    expected_weights = full_weights(one)
    for step, (got, want) in enumerate(zip(metrics, expected, strict=True)):
        assert got.keys() == want.keys()
        # the assistant still *is* the reference (Delta = 0 exactly: a LoRA at zero, reusing):
        # the generator's gradient is then rounding alone (its norm moved 10 % with the thread
        # count in one process: 2.3e-4 vs 2.1e-4), nothing to compare
        exact_keys = BF16_KEYS & want.keys() if bf16 or want["delta_norm"] == 0.0 else want
        for key in exact_keys:
            rel = BF16_REL if bf16 else 1e-3 if key in DELTA_KEYS else 1e-4
            assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-6), (step, key)
    assert weights.keys() == expected_weights.keys()
    moved = max(np.abs(expected_weights[k] - initial[k]).max() for k in initial)
    assert moved > 1e-4  # the test can see a wrong update
    if bf16:
        same_updates_in_bf16(weights, expected_weights, initial)
    else:
        # each tensor's update within 10 % of one process's (a wrong gradient is off by ~100 %;
        # summation order alone moved the tiny cross-attention updates by up to 3.4 %)
        for key, want in expected_weights.items():
            update = np.abs(want - initial[key]).max()
            assert np.abs(weights[key] - want).max() <= 0.1 * update + 1e-7, key
    assert evaluation == pytest.approx(one.evaluate()[0], rel=BF16_REL if bf16 else 1e-4)


def same_updates_in_bf16(got: dict, want: dict, initial: dict) -> None:
    """Each network's whole update points the same way, each tensor's is of the same size
    (BF16_REL's comment says why not element by element)."""
    for net in ("generator", "assistant"):
        keys = [k for k in want if k.startswith(net + ".")]
        a = np.concatenate([(got[k] - initial[k]).ravel() for k in keys])
        b = np.concatenate([(want[k] - initial[k]).ravel() for k in keys])
        assert a @ b >= 0.9 * np.linalg.norm(a) * np.linalg.norm(b), net
        for k in keys:
            size = np.linalg.norm(got[k] - initial[k]) / np.linalg.norm(want[k] - initial[k])
            assert 0.5 <= size <= 2.0, (k, size)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.name for c in CASES])
def test_every_unet_sees_its_exact_fp32_timestep(sharded, i):
    """No sharded module casts the network's inputs: timesteps arrive in fp32, the generator's
    at t_g exactly (a bf16 cast gives 399 -> 400, 999 -> 1000), the others between bf16's
    representable values."""
    from fsdp_probes import bf16_exact

    timesteps = sharded[i][3]["timesteps"]
    world = case_config(CASES[i], 1, "ddp", "unused").world
    # what the generator's network is fed: DMD2's t_g; SD3's t_g x 1000; FLUX's t_g in [0, 1]
    t_g = getattr(world, "generator_timestep", None)
    if t_g is None:
        t_g = world.generator_time * (1000 if world.name == "sd35" else 1)
    assert {name for name, _, _ in timesteps} >= {"generator", "assistant"}
    assert {dtype for _, dtype, _ in timesteps} == {"torch.float32"}
    generator = [t for name, _, values in timesteps if name == "generator" for t in values]
    assert set(generator) == {float(t_g)}
    others = [t for name, _, values in timesteps if name != "generator" for t in values]
    assert not all(bf16_exact(t) for t in others)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.name for c in CASES])
def test_every_trained_unit_reduces_in_fp32(sharded, i):
    assert sharded[i][3]["reduce_dtypes"] == {"torch.float32"}


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.name for c in CASES])
def test_the_loop_issues_the_collectives_the_planner_counts(sharded, i):
    """Counted in the run: all-gathers and reduce-scatters of one step per network, against
    ``distar.cli.plan.collectives`` (the assistant frozen in the generator step issues no
    reduce-scatter; the copy reference is gathered once however many chunks)."""
    from distar.cli.plan import Setup, collectives

    case = CASES[i]
    setup = Setup("sdxl", 2, "fsdp", case.assistant, PER_RANK, chunk=bool(case.chunk))
    want = collectives(setup, rounds=1, reuse=case.reuse, exact=case.path == "exact")
    assert sharded[i][3]["collectives"] == {k: tuple(map(float, v)) for k, v in want.items()}


def test_a_rank_that_reads_no_weights_receives_rank_0s(sharded, world_cache):
    """Rank 1 builds every network on the meta device (no weight file read, no host copy) and
    receives rank 0's weights and buffers: the two worlds are identical."""
    from distar.worlds.sd.loading import load_components

    empty = load_components(case_config(CASES[1], 1, "ddp", "unused").world, empty=True)
    assert all(p.is_meta for p in empty.generator.parameters())
    assert all(p.is_meta for p in empty.scorer.parameters())
    ((first, calls, elements),), ((second, _, _),) = sharded["received0"], sharded["received1"]
    assert first.keys() == second.keys() and len(first) > 100
    for key, value in first.items():
        assert np.array_equal(value, second[key]), key
    # the world's one start-up broadcast: each distinct tensor once, coalesced (bf16 and fp32
    # runs of at most 64 MiB: a few calls for hundreds of tensors)
    assert sum(calls) == elements and len(calls) < len(first) / 10


def test_a_sharded_checkpoint_resumes_exactly(sharded):
    assert sharded["resume"][0] is True


def test_a_sharded_checkpoint_exports_bit_exactly(sharded, tmp_path):
    """One process reads the shards back (no process group) into a diffusers UNet folder and a
    single state-dict file: the generator EMA's weights, as the run kept one."""
    from diffusers import UNet2DConditionModel

    from distar.worlds.sd.unet_export import GENERATOR_PREFIX, export_generator

    _, saved, checkpoints = sharded["resume"]
    written = export_generator(Path(checkpoints), tmp_path)
    unet = UNet2DConditionModel.from_pretrained(written["folder"])
    want = {
        k.removeprefix("generator_ema." + GENERATOR_PREFIX): v
        for k, v in saved.items()
        if k.startswith("generator_ema.")
    }
    got = unet.state_dict()
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert np.array_equal(got[key].numpy(), value), key
