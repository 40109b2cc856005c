"""``python -m distar.plan``: the memory model against every measured row, what fits which
GPUs, and flags that are the config's own."""

from __future__ import annotations

import pytest

from distar.config import Config, parse_override
from distar.plan import calibrate, main, peak_gib, plan, setup_of, stale_gib
from distar.worlds.sd.footprint import MEASURED, OUT_OF_MEMORY


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
    assert speeds[0] >= max(speeds) / 1.05  # best first (within the 5 % tie band)


def test_the_printed_flags_are_a_valid_config(capsys):
    assert main(["--world", "sdxl", "--gpus", "8", "--gpu-memory", "80", "--top", "3"]) == 0
    out = capsys.readouterr().out
    lines = [x.split(". ", 1)[1] for x in out.splitlines() if x.startswith("  1. ")]
    flags = dict(parse_override(f.strip()) for f in lines[0].split("--set ")[1:])
    config = Config.for_world("sdxl", flags)
    assert config.resources.strategy == "fsdp" and config.resources.num_workers == 8


def test_it_says_plainly_when_nothing_fits(capsys):
    assert main(["--world", "sdxl", "--gpus", "1", "--gpu-memory", "16"]) == 0
    assert "nothing fits" in capsys.readouterr().out
    assert main(["--world", "flux"]) == 2
    assert "allowed: sdxl, sd15" in capsys.readouterr().err


def test_check_compares_the_model_with_benchmark_rows(tmp_path, capsys):
    """``--check`` reads what benchmarks/sd_step.py --json writes (the GPU script runs it)."""
    import json

    row = {"arch": "sdxl", "batch": 2, "grad_ckpt": True, "lora_rank": 0, "chunk": 0,
           "fsdp": False, "vae_dtype": "bf16", "peak_gib": 90.8, "images_per_s": 0.58}  # fmt: skip
    rows = tmp_path / "sd_step.jsonl"
    rows.write_text(json.dumps(row) + "\n" + json.dumps({**row, "arch": "tiny"}) + "\n")
    assert main(["--check", str(rows)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "| 90.8 | 90.8 | +0.1% | 0.58 | 0.58 |" in out[2]
