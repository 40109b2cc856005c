"""Benchmark evaluation inside training: configured and checked up front, sharded across ranks
with the same numbers as one process, logged by the trials (see test_sweep for the MLflow side)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from distar.config.benchmarks import EVAL_METRICS, WEIGHT_KEYS
from distar.config.tree import Config, ConfigError
from distar.evaluation.in_training import BenchmarkEvaluator
from distar.evaluation.preflight import preflight

SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"
PROMPTS = f"parti={SHARED / 'PartiPrompts.tsv'},coco={SHARED / 'coco2014_val_30k_captions.txt'}"
EVAL = {"eval.benchmarks": "parti:6,coco:3", "eval.tiny_metrics": True, "eval.prompts": PROMPTS}


def test_eval_config_is_validated_torch_free_and_names_the_field():
    import distar.evaluation.scorers  # noqa: F401  (registers the metrics)
    from distar.evaluation.metric_base import METRICS

    assert EVAL_METRICS == METRICS.names()
    cfg = Config.for_world("sd15-tiny", {**EVAL, "eval.metrics": "pickscore,fid"})
    assert cfg.eval.benchmarks == "parti:6,coco:3"
    for flat, field in [
        ({"eval.benchmarks": "party:3"}, "eval.benchmarks"),
        ({"eval.benchmarks": "parti:0"}, "eval.benchmarks"),
        ({"eval.benchmarks": "parti,parti"}, "eval.benchmarks"),
        ({"eval.metrics": "pickscore,beauty"}, "eval.metrics"),
        ({"eval.weights": "pickscore"}, "eval.weights"),
        ({"eval.weights": "picks=/x"}, "eval.weights"),
        ({"eval.prompts": "drawbench=/x"}, "eval.prompts"),
        ({"eval.images_per_prompt": 0}, "eval.images_per_prompt"),
    ]:
        with pytest.raises(ConfigError, match=field):
            Config.for_world("sd15-tiny", flat)
    with pytest.raises(ConfigError, match="no text-to-image generator"):
        Config.from_flat({"eval.benchmarks": "parti:3"})  # the embedded world
    assert "pickscore_processor" in WEIGHT_KEYS


def test_preflight_names_the_missing_file(world_cache, tmp_path):
    cfg = Config.for_world("sd15-tiny", {**EVAL, "eval.weights": f"pickscore={tmp_path}/none"})
    with pytest.raises(ConfigError, match=f"eval.weights \\(pickscore\\).*{tmp_path}/none"):
        preflight(cfg.eval)
    cfg = Config.for_world("sd15-tiny", {**EVAL, "eval.prompts": f"parti={tmp_path}/p.tsv"})
    with pytest.raises(ConfigError, match="eval.prompts \\(parti\\)"):
        preflight(cfg.eval)
    preflight(Config.for_world("sd15-tiny", EVAL).eval)  # everything there: no error


def test_sharded_evaluation_equals_one_process(world_cache):
    """Two shards, gathered, give the rows, summary and examples of one process."""
    from distar.worlds.builders import build_world

    cfg = Config.for_world(
        "sdxl-tiny", {**EVAL, "eval.images_per_prompt": 2, "eval.resolution": 48}
    )
    world = build_world(cfg.world, torch.device("cpu"))
    evaluator = BenchmarkEvaluator(cfg.eval, "cpu")
    generator = world.eval_generator(cfg.eval.resolution)
    whole = evaluator.run(generator)
    from_rank1: list = []  # rank 1's shard of each benchmark, in order

    def gather_rank1(obj):
        from_rank1.append(obj)
        return [None, obj]

    def gather_rank0(obj):
        return [obj, from_rank1.pop(0)]

    assert evaluator.run(generator, (1, 2), gather_rank1) == []  # rank 1 returns nothing
    sharded = evaluator.run(generator, (0, 2), gather_rank0)
    assert [r.benchmark for r in sharded] == ["parti", "coco"]
    for a, b in zip(whole, sharded, strict=True):
        assert len(a.rows) == (12 if a.benchmark == "parti" else 6)
        pd.testing.assert_frame_equal(a.rows, b.rows)
        assert a.summary == pytest.approx(b.summary, rel=1e-5, abs=1e-6)  # batch size in fp32
        torch.testing.assert_close(a.examples, b.examples)
        assert a.examples.shape[-2:] == (48, 48)  # eval.resolution
    assert {"parti/pickscore", "ci95/parti/pickscore_low", "coco/clip_score"} <= set(
        whole[0].summary | whole[1].summary
    )
