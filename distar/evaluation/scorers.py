"""The built-in metrics: which files each loads, where to get them, and their registry entries.

Every path can be given in ``MetricOptions.paths`` (key in brackets below) or by its environment
variable. Sizes are those of the published files.
"""

from __future__ import annotations

import json
from pathlib import Path

from distar.evaluation.metric_base import METRICS, MetricOptions
from distar.rewards.pickscore import (
    HF,
    MODEL_FILES,
    load_pickscore,
)
from distar.rewards.weights import WeightFile

CLIPSCORE = WeightFile(  # [clip_score]
    "DISTAR_CLIPSCORE",
    "CLIP score backbone (a transformers CLIPModel; we use CLIP ViT-g/14 laion2B, ~5.5 GB)",
    f"Get it with `{HF} laion/CLIP-ViT-g-14-laion2B-s12B-b42K --local-dir <dir>`.",
    directory=True,
    contains=MODEL_FILES,
)
AESTHETIC_CLIP = WeightFile(  # [aesthetic_clip]
    "DISTAR_AESTHETIC_CLIP",
    "OpenAI CLIP ViT-L/14 (transformers format, ~1.7 GB), the aesthetic predictor's backbone",
    f"Get it with `{HF} openai/clip-vit-large-patch14 --local-dir <dir>`.",
    directory=True,
    contains=MODEL_FILES,
)
AESTHETIC_HEAD = WeightFile(  # [aesthetic_head]
    "DISTAR_AESTHETIC_HEAD",
    "LAION aesthetic predictor v2 head sac+logos+ava1-l14-linearMSE.pth (~3.7 MB)",
    "Download it from github.com/christophschuhmann/improved-aesthetic-predictor.",
)
HPS21 = WeightFile(  # [hpsv21]
    "DISTAR_HPS21",
    "HPSv2.1 checkpoint HPS_v2.1_compressed.pt (open_clip ViT-H-14, ~1.7 GB)",
    f"Get it with `{HF} xswu/HPSv2 HPS_v2.1_compressed.pt --local-dir <dir>`.",
)
IMAGEREWARD = WeightFile(  # [imagereward]
    "DISTAR_IMAGEREWARD",
    "ImageReward v1.0 checkpoint ImageReward.pt (BLIP ViT-L + BERT, ~1.8 GB)",
    f"Get it with `{HF} THUDM/ImageReward ImageReward.pt --local-dir <dir>`.",
)
BERT_TOKENIZER = WeightFile(  # [bert_tokenizer]
    "DISTAR_BERT_TOKENIZER",
    "bert-base-uncased tokenizer files (vocab.txt, tokenizer_config.json; < 1 MB), for ImageReward",
    f"Get them with `{HF} google-bert/bert-base-uncased --include '*.txt' '*.json' "
    "--local-dir <dir>`.",
    directory=True,
    contains=("vocab.txt",),
)
FID_INCEPTION = WeightFile(  # [fid_inception]
    "DISTAR_FID_INCEPTION",
    "FID Inception-v3 weights weights-inception-2015-12-05-6726825d.pth (torch-fidelity, ~91 MB)",
    "Download it from github.com/toshas/torch-fidelity/releases (v0.2.0 assets).",
)
FID_REFERENCE = WeightFile(  # [fid_reference]
    "DISTAR_FID_REFERENCE",
    "FID reference images (e.g. the COCO-2014 val images of the 30k captions)",
    "Point it at a folder of images; its statistics are computed once and cached.",
    directory=True,
)


@METRICS.register("pickscore")
def pickscore(options: MetricOptions):
    paths = (options.path("pickscore"), options.path("pickscore_processor"))
    return load_pickscore(*paths).to(options.device)


@METRICS.register("clip_score")
def clip_score(options: MetricOptions):
    """torchmetrics' convention: max(100 * cos(image, text), 0)."""
    from distar.rewards.clip_scorers import ClipPairScorer, load_clip

    model, tokenizer, processor = load_clip(CLIPSCORE.resolve(options.path("clip_score")))
    scorer = ClipPairScorer("clip_score", model, tokenizer, processor, scale=100.0, floor=0.0)
    return scorer.to(options.device)


@METRICS.register("aesthetic")
def aesthetic(options: MetricOptions):
    from distar.rewards.clip_scorers import AestheticScorer

    clip_dir = AESTHETIC_CLIP.resolve(options.path("aesthetic_clip"))
    head = AESTHETIC_HEAD.resolve(options.path("aesthetic_head"))
    return AestheticScorer.load(clip_dir, head).to(options.device)


@METRICS.register("hpsv21")
def hpsv21(options: MetricOptions):
    from distar.evaluation.hps import HPSv2Scorer

    arch = str(options.path("hps_arch") or "ViT-H-14")  # tests register a tiny open_clip config
    return HPSv2Scorer.load(HPS21.resolve(options.path("hpsv21")), arch).to(options.device)


@METRICS.register("imagereward")
def imagereward(options: MetricOptions):
    from distar.evaluation.imagereward import ImageRewardScorer

    configs = None
    if options.path("imagereward_configs"):  # a folder with vision.json + text.json (tests)
        configs = blip_configs(Path(options.path("imagereward_configs")))
    checkpoint = IMAGEREWARD.resolve(options.path("imagereward"))
    tokenizer = BERT_TOKENIZER.resolve(options.path("bert_tokenizer"))
    return ImageRewardScorer.load(checkpoint, tokenizer, configs).to(options.device)


@METRICS.register("fid")
def fid(options: MetricOptions):
    from distar.evaluation.fid import FIDMetric

    weights = FID_INCEPTION.resolve(options.path("fid_inception"))
    metric = FIDMetric(2048, weights, f"inception-2048-{weights.stat().st_size}", options.device)
    metric.reference_from_folder(
        FID_REFERENCE.resolve(options.path("fid_reference")), options.cache_dir
    )
    return metric


def blip_configs(directory: Path):
    from transformers import BlipTextConfig, BlipVisionConfig

    vision = json.loads((directory / "vision.json").read_text())
    text = json.loads((directory / "text.json").read_text())
    return BlipVisionConfig(**vision), BlipTextConfig(**text)
