"""``python -m distar.cli.plan``: the memory model against every measured row, what fits which
GPUs, and flags that are the config's own."""

from __future__ import annotations

import pytest

import distar.cli.plan
from distar.cli.plan import (
    Setup,
    basis,
    calibrate,
    collectives,
    fsdp_ms,
    leave_one_out,
    main,
    peak_gib,
    plan,
    setup_of,
    stale_gib,
    startup_gib,
    step_gib,
)
from distar.config.tree import Config, parse_override
from distar.worlds.footprints import MEASURED, OUT_OF_MEMORY

SDXL_UNET = 2.567e9  # parameters (cost_model.ARCHES), for the hand sums below


@pytest.mark.parametrize("row", MEASURED, ids=lambda r: f"{r.arch}-b{r.batch}-{r.checkpointing}")
def test_the_model_reproduces_every_measured_row_within_one_percent(row):
    predicted = peak_gib(setup_of(row), calibrate()) + stale_gib(row)
    assert predicted == pytest.approx(row.peak_gib, rel=0.01)


def test_the_model_agrees_with_the_measured_out_of_memory():
    for row in OUT_OF_MEMORY:
        assert peak_gib(setup_of(row), calibrate()) + stale_gib(row) > row.peak_gib


def test_full_sdxl_fine_tuning_needs_sharding_on_80_gb_cards():
    fits = plan("sdxl", 8, 80.0)
    kinds = {(s.strategy, s.assistant) for _, _, s in fits}
    assert ("fsdp", "copy") in kinds and ("ddp", "copy") not in kinds
    assert ("ddp", "lora") in kinds  # the LoRA assistant fits without sharding
    assert all(peak <= 78.0 for _, peak, _ in fits)
    speeds = [speed for speed, _, _ in fits]
    assert speeds == sorted(speeds, reverse=True)  # best first, by the speed the table shows


def test_the_printed_flags_are_a_valid_config(capsys):
    assert main(["--world", "sdxl", "--gpus", "8", "--gpu-memory", "80", "--top", "3"]) == 0
    out = capsys.readouterr().out
    table = [x.split(" | ") for x in out.splitlines() if x.startswith("| ") and "#" not in x]
    lines = [x.split(". ", 1)[1] for x in out.splitlines() if x.startswith("  ")]
    assert len(lines) == 3
    for row, line in zip(table, lines, strict=True):
        flags = dict(parse_override(f.strip()) for f in line.split("--set ")[1:])
        config = Config.for_world("sdxl", flags)
        assert config.resources.strategy == row[5] and config.resources.num_workers == 8
        assert config.train.batch_size == int(row[7])


def test_it_says_plainly_when_nothing_fits(capsys):
    assert main(["--world", "sdxl", "--gpus", "1", "--gpu-memory", "16"]) == 0
    assert "nothing fits" in capsys.readouterr().out
    assert main(["--world", "wan"]) == 2
    assert "allowed: sd35, flux, sdxl, sd15" in capsys.readouterr().err


def test_check_compares_the_model_with_benchmark_rows(tmp_path, capsys):
    """``--check`` reads what benchmarks/sd_step.py --json writes (the GPU script runs it)."""
    import json

    row = {
        "arch": "sdxl",
        "batch": 2,
        "grad_ckpt": True,
        "lora_rank": 0,
        "chunk": 0,
        "fsdp": False,
        "vae_dtype": "bf16",
        "peak_gib": 90.8,
        "images_per_s": 0.58,
    }
    rows = tmp_path / "sd_step.jsonl"
    rows.write_text(json.dumps(row) + "\n" + json.dumps({**row, "arch": "tiny"}) + "\n")
    assert main(["--check", str(rows)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "| 90.8 | 90.8 | +0.1% | n/a / " in out[2]
    assert out[2].endswith("| 0.58 | 0.58 |")


# ---- what the code does under FSDP: collectives, start-up, offload ------------------------------
def fsdp(assistant: str, chunk: bool, **kw) -> Setup:
    return Setup("sdxl", 8, "fsdp", assistant, batch=4, chunk=chunk, **kw)


@pytest.mark.parametrize(
    ("assistant", "chunk", "want"),
    [  # batch 4: c = 4 chunks with train.generator_chunk=1, else 1; R = 1, samples reused
        ("copy", False, {"generator": (2, 1), "assistant": (2 + 2, 1), "reference": (1, 0)}),
        ("copy", True, {"generator": (2, 1), "assistant": (2 * 4 + 2, 1), "reference": (1, 0)}),
        ("lora", False, {"generator": (2, 1), "assistant": (4 + 2, 1)}),
        ("lora", True, {"generator": (2, 1), "assistant": (4 * 4 + 2, 1)}),
    ],
)
def test_collectives_per_step_are_what_the_loop_issues(assistant, chunk, want):
    assert collectives(fsdp(assistant, chunk)) == want


def test_collectives_with_more_rounds_fresh_samples_and_the_detached_path():
    copy, lora = fsdp("copy", True), fsdp("lora", True)
    # two rounds, neither reusing the generator step's samples: two no-grad generator forwards
    assert collectives(copy, rounds=2, reuse=False)["generator"] == (2 + 2, 1)
    assert collectives(copy, rounds=2, reuse=True)["generator"] == (2 + 1, 1)
    assert collectives(copy, rounds=2)["assistant"] == (2 * 4 + 2 * 2, 2)
    # detached: no backward through the frozen networks in the generator step
    assert collectives(copy, exact=False)["assistant"] == (4 + 2, 1)
    assert collectives(lora, exact=False)["assistant"] == (2 * 4 + 2, 1)
    assert collectives(Setup("sdxl", 8, "ddp", batch=4)) == {}


def test_fsdp_time_counts_bf16_gathers_and_fp32_reduce_scatters_of_the_trained_params():
    u, n = SDXL_UNET, 8
    gathers, scatters = 2 + 4 + 1, 2  # generator 2, assistant 4, reference 1; 2 x 1 scatter
    traffic = (2 * gathers * u + 4 * scatters * u) * (n - 1) / n
    want = 1000 * (1 - distar.cli.plan.OVERLAP) * traffic / (distar.cli.plan.BUS_GBPS * 1e9)
    assert fsdp_ms(fsdp("copy", False)) == pytest.approx(want)
    lora = 196.8e6  # rank-64 adapters: gathered with their UNet (bf16), reduce-scattered alone
    traffic = (2 * (2 * u + 6 * (u + lora)) + 4 * (u + lora)) * (n - 1) / n
    want = 1000 * (1 - distar.cli.plan.OVERLAP) * traffic / (distar.cli.plan.BUS_GBPS * 1e9)
    assert fsdp_ms(fsdp("lora", False)) == pytest.approx(want)


def test_the_start_up_holds_every_network_unsharded_and_bounds_the_peak():
    """SDXL, copy assistant: fp32 generator and assistant, bf16 reference UNet and text
    encoders, bf16 VAE, PickScore still fp32 (cast after the broadcast), before sharding."""
    by_hand = 4 * SDXL_UNET + 4 * SDXL_UNET + 2 * SDXL_UNET + 2 * 0.818e9 + 2 * 83.7e6 + 4 * 0.986e9
    s = fsdp("copy", False)
    assert startup_gib(s) == pytest.approx(by_hand / 2**30, abs=0.01)
    assert peak_gib(s, calibrate()) == max(startup_gib(s), step_gib(s, calibrate()))
    ddp = Setup("sdxl", batch=2)  # DDP holds at least as much in every step
    assert step_gib(ddp, calibrate()) > startup_gib(ddp)


def test_cpu_offload_on_one_gpu_still_counts_the_unsharded_start_up():
    k = calibrate()
    offload = Setup("sd15", 1, "fsdp", "copy", batch=1, offload=True)
    assert startup_gib(offload) == startup_gib(Setup("sd15", 1, "fsdp", "copy", batch=1))
    assert step_gib(offload, k) < startup_gib(offload) == peak_gib(offload, k)
    sdxl = Setup("sdxl", 1, "fsdp", "copy", batch=1, offload=True)
    assert peak_gib(sdxl, k) >= 10 * SDXL_UNET / 2**30  # 2 x fp32 UNets + the bf16 reference


# ---- validation apart from calibration -------------------------------------------------------
def test_leave_one_out_is_printed_and_says_where_it_cannot_be(capsys):
    assert main(["--calibration", "--world", "sd15"]) == 0
    out = capsys.readouterr().out
    assert "validation, leave-one-out" in out
    assert "n/a (the only row of its mode)" in out and "no leave-one-out is possible" in out
    assert main(["--world", "sdxl", "--gpus", "8", "--gpu-memory", "80"]) == 0
    assert "leave-one-out error on the 5 measured rows: max |e|" in capsys.readouterr().out


def test_a_left_out_row_is_predicted_without_its_own_measurement(monkeypatch):
    errors = {(r.arch, r.batch, r.checkpointing): (i, o) for r, i, o in leave_one_out()}
    inside, held = errors[("sd15", 16, True)]
    assert held != pytest.approx(inside, abs=1e-3)  # a refit, not the in-sample error again
    assert errors[("sd15", 8, False)][1] is None  # the only non-checkpointed row

    def predicted(rows) -> float:  # the left-out prediction for sd15 batch 16, in GiB
        monkeypatch.setattr(distar.cli.plan, "MEASURED", rows)
        row, _, e = next(x for x in leave_one_out() if (x[0].arch, x[0].batch) == ("sd15", 16))
        return row.peak_gib * (1 + e)

    moved = tuple(
        type(r)(r.arch, r.batch, r.checkpointing, r.step_ms, r.peak_gib + 10, stale_grads=True)
        if (r.arch, r.batch) == ("sd15", 16)
        else r
        for r in MEASURED
    )
    assert predicted(moved) == pytest.approx(predicted(MEASURED))  # its value is not used


def test_rows_outside_the_measured_ones_say_they_are_extrapolated(capsys):
    assert basis(Setup("sdxl", batch=2)) == "measured"
    assert basis(Setup("sdxl", 8, "fsdp", "lora", batch=16, chunk=True)) == (
        "extrapolated: 8 GPUs, fsdp, lora, chunk, batch 16"
    )
    assert main(["--world", "sdxl", "--gpus", "8", "--gpu-memory", "80"]) == 0
    rows = [x for x in capsys.readouterr().out.splitlines() if "| fsdp |" in x]
    assert rows and all("| extrapolated: 8 GPUs, fsdp" in x for x in rows)


def test_the_gpu_benchmark_runs_its_fsdp_offload_chunk_row_on_cpu(tmp_path, monkeypatch):
    """``benchmarks/gpu_checks.sh`` spends its few lent GPU minutes on ``sd_step.py``: the
    script itself is run here on tiny networks (FSDP2 at world size 1, offload, chunked), and
    writes every field ``--check`` reads."""
    import json
    from pathlib import Path

    import torch.distributed as dist

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    from sd_step import main as sd_step

    out = tmp_path / "rows.jsonl"
    argv = [
        "--tiny",
        "--device",
        "cpu",
        "--fsdp",
        "--offload",
        "--chunk",
        "1",
        "--weighting",
        "dmd_normalised",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--reps",
        "1",
    ]
    try:
        assert sd_step([*argv, "--json", str(out)]) == 0
    finally:  # FSDP2 at world size 1 started a one-rank group in this process
        if dist.is_initialized():
            dist.destroy_process_group()
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    for key in (
        "arch",
        "batch",
        "grad_ckpt",
        "lora_rank",
        "chunk",
        "fsdp",
        "offload",
        "vae_dtype",
        "peak_gib",
        "startup_gib",
        "images_per_s",
    ):
        assert key in row, key
    assert row["fsdp"] and row["offload"] and row["chunk"] == 1


def test_an_ema_costs_one_fp32_copy_of_the_generators_shards(capsys):
    """``--ema``: the step holds the generator EMA's fp32 shards (none on the GPU when the
    trained shards are offloaded), and the printed flags turn it on."""
    from distar.worlds.cost_model import GIB, Setup, resident_gib
    from distar.worlds.footprints import ARCHES

    for strategy, gpus, offload in (("ddp", 1, False), ("fsdp", 8, False), ("fsdp", 8, True)):
        plain = Setup("sdxl", gpus, strategy, offload=offload)
        ema = Setup("sdxl", gpus, strategy, offload=offload, ema=True)
        want = 0.0 if offload else 4 * ARCHES["sdxl"].network / (gpus if strategy == "fsdp" else 1)
        assert resident_gib(ema) - resident_gib(plain) == pytest.approx(want / GIB)
    assert main(["--world", "sdxl", "--gpus", "8", "--top", "2", "--ema"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  ")]
    assert lines and all("--set train.ema=0.999" in x for x in lines)


# ---- the flow worlds: sizes from diffusers' own classes, memory without a measured speed ------
@pytest.mark.parametrize("world", ["sd35", "flux"])
def test_flow_sizes_are_diffusers_counts(world):
    """The footprint's transformer, FSDP unit, LoRA and text-encoder sizes are the counts of
    diffusers' and transformers' own classes at real size on the meta device (0.1 %
    rounding)."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from distar.t2i.lora import LORA_TARGETS
    from distar.worlds.flow import footprint
    from distar.worlds.footprints import ARCHES

    cls = SD3Transformer2DModel if world == "sd35" else FluxTransformer2DModel
    with torch.device("meta"):
        net = cls(**(footprint.SD35_LARGE if world == "sd35" else footprint.FLUX_DEV))
        texts = [T5EncoderModel(T5Config(**footprint.T5_XXL))]
        if world == "sd35":  # CLIP-L and bigG with their projections
            texts += [
                CLIPTextModelWithProjection(CLIPTextConfig(**c))
                for c in (footprint.CLIP_L, footprint.CLIP_BIGG)
            ]
        else:
            texts.append(CLIPTextModel(CLIPTextConfig(**footprint.CLIP_L)))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    blocks = [*net.transformer_blocks, *getattr(net, "single_transformer_blocks", [])]
    lora = sum(
        64 * (m.in_features + m.out_features)
        for name, m in net.named_modules()
        if isinstance(m, torch.nn.Linear)
        and any(name.endswith(t) for t in LORA_TARGETS["joint_attention"])
    )
    arch = ARCHES[world]
    assert arch.network == pytest.approx(count(net), rel=1e-3)
    assert arch.fsdp_unit == pytest.approx(max(count(b) for b in blocks), rel=1e-3)
    assert arch.lora_r64 == pytest.approx(lora, rel=1e-3)
    assert arch.text_encoders == pytest.approx(sum(count(t) for t in texts), rel=1e-3)


def test_a_world_without_measured_rows_gets_memory_and_no_speed(capsys):
    assert main(["--world", "sd35", "--gpus", "8", "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "| n/a | n/a |" in out and "sd35 not measured" in out
    assert "sd35: no step measured yet" in out
