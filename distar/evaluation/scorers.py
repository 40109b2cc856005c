"""The built-in metrics' registry entries: each loads its files (listed, with where to get
them, in :mod:`distar.evaluation.metric_files`) from ``MetricOptions.paths`` or its variable."""

from __future__ import annotations

import json
from pathlib import Path

from distar.config.benchmarks import FID_PROTOCOLS
from distar.evaluation.fid import FIDMetric
from distar.evaluation.hps import HPSv2Scorer
from distar.evaluation.imagereward import ImageRewardScorer
from distar.evaluation.metric_base import METRICS, MetricOptions
from distar.evaluation.metric_files import (
    AESTHETIC_CLIP,
    AESTHETIC_HEAD,
    BERT_TOKENIZER,
    CLIPSCORE,
    FID_INCEPTION,
    FID_REFERENCE,
    FID_TORCHSCRIPT,
    HPS21,
    IMAGEREWARD,
)
from distar.evaluation.protocol_fid import ProtocolFID, load_inception_torchscript
from distar.rewards.clip_scorers import AestheticScorer, ClipPairScorer, load_clip
from distar.rewards.pickscore import load_pickscore


def build_metric(name: str, options: MetricOptions | None = None):
    """The registered metric ``name``, its weights from ``options`` (or its variables)."""
    return METRICS.get(name)(options or MetricOptions())


@METRICS.register("pickscore")
def pickscore(options: MetricOptions):
    """PickScore as the DI* paper prints it (0.2304): the cosine of image and prompt embeddings,
    not the model's logit (its learnt scale ~100 x the cosine). One scale everywhere: charts,
    tables, reports, and an SD world's reward in its default ``world.reward_units``."""
    paths = (options.path("pickscore"), options.path("pickscore_processor"))
    return load_pickscore(*paths, scale=1.0).to(options.device)


@METRICS.register("clip_score")
def clip_score(options: MetricOptions):
    """torchmetrics' convention: max(100 * cos(image, text), 0)."""
    model, tokenizer, processor = load_clip(CLIPSCORE.resolve(options.path("clip_score")))
    scorer = ClipPairScorer("clip_score", model, tokenizer, processor, scale=100.0, floor=0.0)
    return scorer.to(options.device)


@METRICS.register("aesthetic")
def aesthetic(options: MetricOptions):
    clip_dir = AESTHETIC_CLIP.resolve(options.path("aesthetic_clip"))
    head = AESTHETIC_HEAD.resolve(options.path("aesthetic_head"))
    return AestheticScorer.load(clip_dir, head).to(options.device)


@METRICS.register("hpsv21")
def hpsv21(options: MetricOptions):
    arch = str(options.path("hps_arch") or "ViT-H-14")  # tests register a tiny open_clip config
    return HPSv2Scorer.load(HPS21.resolve(options.path("hpsv21")), arch).to(options.device)


@METRICS.register("imagereward")
def imagereward(options: MetricOptions):
    configs = None
    if options.path("imagereward_configs"):  # a folder with vision.json + text.json (tests)
        configs = blip_configs(Path(options.path("imagereward_configs")))
    checkpoint = IMAGEREWARD.resolve(options.path("imagereward"))
    tokenizer = BERT_TOKENIZER.resolve(options.path("bert_tokenizer"))
    return ImageRewardScorer.load(checkpoint, tokenizer, configs).to(options.device)


@METRICS.register("fid")
def fid(options: MetricOptions):
    """torchmetrics' FID, or under ``eval.fid_protocol`` the published protocol's."""
    reference = FID_REFERENCE.resolve(options.path("fid_reference"))
    if options.fid_protocol:
        file = FID_TORCHSCRIPT.resolve(options.path("fid_inception_torchscript"))
        protocol = FID_PROTOCOLS[options.fid_protocol]
        feature_id = f"torchscript-{file.stat().st_size}"
        metric = ProtocolFID(protocol, load_inception_torchscript(file), feature_id, options.device)
        metric.reference_from_folder(reference, options.cache_dir)
        return metric
    weights = FID_INCEPTION.resolve(options.path("fid_inception"))
    metric = FIDMetric(2048, weights, f"inception-2048-{weights.stat().st_size}", options.device)
    metric.reference_from_folder(reference, options.cache_dir)
    return metric


def blip_configs(directory: Path):
    from transformers import BlipTextConfig, BlipVisionConfig

    vision = json.loads((directory / "vision.json").read_text())
    text = json.loads((directory / "text.json").read_text())
    return BlipVisionConfig(**vision), BlipTextConfig(**text)
