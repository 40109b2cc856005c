"""PickScore, the paper's explicit reward and a benchmark metric: its files, and one loader that
training (differentiable, on decoded images) and evaluation both use."""

from __future__ import annotations

import os
from pathlib import Path

from distar.rewards.weights import WeightFile

HF = "huggingface-cli download"
MODEL_FILES = ("config.json", "*.safetensors|*.bin|*.index.json")  # a transformers model
PICKSCORE = WeightFile(  # [pickscore]
    "DISTAR_PICKSCORE",
    "PickScore_v1 (CLIP ViT-H/14, transformers format, ~3.9 GB)",
    f"Get it with `{HF} yuvalkirstain/PickScore_v1 --local-dir <dir>`.",
    directory=True,
    contains=MODEL_FILES,
)
PICKSCORE_PROCESSOR = WeightFile(  # [pickscore_processor]; its tokenizer + image processor
    "DISTAR_PICKSCORE_PROCESSOR",
    "PickScore's processor (laion/CLIP-ViT-H-14-laion2B-s32B-b79K configs, < 5 MB)",
    f"Get it with `{HF} laion/CLIP-ViT-H-14-laion2B-s32B-b79K --include '*.json' '*.txt' "
    "--local-dir <dir>`.",
    directory=True,
    contains=("preprocessor_config.json", "tokenizer.json|vocab.json"),
)


def load_pickscore(
    model: str | Path | None = None,
    processor: str | Path | None = None,
    empty: bool = False,
    scale: float | None = None,
):
    """The PickScore ``ClipPairScorer`` (frozen) from ``model`` / ``processor`` directories or
    ``$DISTAR_PICKSCORE`` / ``$DISTAR_PICKSCORE_PROCESSOR``; raises ``MissingWeightsError``
    naming the file and where to get it. Without a processor the model's own files serve.
    ``scale``: None scores the model's logit (its learnt scale x the cosine), 1.0 the cosine."""
    from distar.rewards.clip_scorers import ClipPairScorer, load_clip

    model_dir, processor_dir = pickscore_paths(model and str(model), processor and str(processor))
    loaded = load_clip(model_dir, processor_dir or model_dir, empty)
    return ClipPairScorer("pickscore", *loaded, scale=scale)


def pickscore_paths(model: str, processor: str) -> tuple[Path, Path | None]:
    """The PickScore model folder and, when one is named (here or by
    ``$DISTAR_PICKSCORE_PROCESSOR``), its processor folder: what :func:`load_pickscore` will
    read, checked without loading (raises ``MissingWeightsError``)."""
    model_dir = PICKSCORE.resolve(model or None)
    processor_dir = None
    if processor or os.environ.get(PICKSCORE_PROCESSOR.env):
        processor_dir = PICKSCORE_PROCESSOR.resolve(processor or None)
    return model_dir, processor_dir
