"""Tiny random-init models of the real metric architectures, written to disk in the published
file formats, so the real loading code runs offline (tests, the throughput benchmark, the demo).
The real CLIP BPE vocabulary is used (from open_clip's package); BERT gets a tiny WordPiece one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from distar.evaluation.imagereward import (
    PROJECTION_WIDTH,
    ImageRewardScorer,
    blip_tokenizer,
    rename_vision_key,
)
from distar.evaluation.scorers import blip_configs
from distar.rewards.heads import RewardHead
from distar.rewards.tiny_clip import CLIP_VOCAB, tiny_clip, tiny_clip_config, tiny_text_encoder
from distar.util.cache import materialise

__all__ = ["tiny_clip", "tiny_clip_config", "tiny_text_encoder"]

TINY_HPS_ARCH = "distar-tiny-ViT"
_TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": CLIP_VOCAB,
        "width": 32,
        "heads": 2,
        "layers": 1,
    },
}


def tiny_aesthetic_head(path: Path, input_dim: int = 16, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(RewardHead(input_dim).state_dict(), path)
    return path


def tiny_hps(path: Path, seed: int = 0) -> Path:
    """An open_clip model of a tiny registered config, saved like HPS_v2.1_compressed.pt."""
    register_tiny_open_clip()
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def register_tiny_open_clip() -> None:
    from open_clip.factory import _MODEL_CONFIGS

    _MODEL_CONFIGS.setdefault(TINY_HPS_ARCH, _TINY_OPEN_CLIP)


def tiny_bert_tokenizer(directory: Path) -> Path:
    """A WordPiece vocabulary: BERT's specials, letters, digits and a few words."""
    directory.mkdir(parents=True, exist_ok=True)
    words = "a an the of on in with and photo painting cat dog red blue car tree sky house".split()
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *[f"##{c}" for c in chars[:26]]]
    (directory / "vocab.txt").write_text("\n".join(vocab + words) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return directory


# the tiny BLIP's shapes (ImageReward's ViT and BERT, one layer each)
BLIP_WIDTH, BLIP_IMAGE_SIZE, BLIP_POSITIONS = 32, 32, 64


def tiny_blip_configs(directory: Path, vocab: int) -> Path:
    """``vision.json`` / ``text.json`` of the tiny BLIP in ``directory`` (what
    :func:`distar.evaluation.scorers.blip_configs` reads)."""
    vision = {
        "hidden_size": BLIP_WIDTH,
        "intermediate_size": 2 * BLIP_WIDTH,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": BLIP_IMAGE_SIZE,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
    }
    text = {
        "vocab_size": vocab,
        "hidden_size": BLIP_WIDTH,
        "encoder_hidden_size": BLIP_WIDTH,
        "intermediate_size": 2 * BLIP_WIDTH,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": BLIP_POSITIONS,
        "bos_token_id": 1,
        "sep_token_id": 3,
        "pad_token_id": 0,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vision.json").write_text(json.dumps(vision))
    (directory / "text.json").write_text(json.dumps(text))
    return directory


def tiny_imagereward(directory: Path, seed: int = 0) -> dict[str, Path]:
    """ImageReward.pt in the original layout (BLIP names), its BLIP configs and a tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = tiny_bert_tokenizer(directory / "bert")
    configs = tiny_blip_configs(directory / "configs", len(blip_tokenizer(tokenizer_dir)))
    torch.manual_seed(seed)
    model = ImageRewardScorer.build(*blip_configs(configs), blip_tokenizer(tokenizer_dir))
    torch.save(original_layout(model), directory / "ImageReward.pt")
    return {
        "imagereward": directory / "ImageReward.pt",
        "bert_tokenizer": tokenizer_dir,
        "imagereward_configs": configs,
    }


def original_layout(model) -> dict[str, torch.Tensor]:
    """Our scorer's weights under ImageReward.pt's key names, with the tensors the publisher's
    module also writes (:data:`~distar.evaluation.imagereward.UNUSED_KEYS`, random here)."""
    vision_width, text_width = model.vision.config.hidden_size, model.text.config.hidden_size
    positions = model.text.config.max_position_embeddings
    state = {
        "blip.vision_proj.weight": torch.randn(PROJECTION_WIDTH, vision_width),
        "blip.vision_proj.bias": torch.zeros(PROJECTION_WIDTH),
        "blip.text_proj.weight": torch.randn(PROJECTION_WIDTH, text_width),
        "blip.text_proj.bias": torch.zeros(PROJECTION_WIDTH),
        "blip.text_encoder.embeddings.position_ids": torch.arange(positions)[None],
    }
    for key, value in model.vision.state_dict().items():
        state[f"blip.visual_encoder.{rename_vision_key(key, to_original=True)}"] = value
    for key, value in model.text.state_dict().items():
        state[f"blip.text_encoder.{key}"] = value
    for key, value in model.head.state_dict().items():
        state[f"mlp.{key}"] = value
    return state


def tiny_metric_paths(directory: Path) -> dict[str, str]:
    """Every built-in sample metric's files, tiny, under ``directory``: MetricOptions.paths."""
    directory.mkdir(parents=True, exist_ok=True)
    clip = str(tiny_clip(directory / "clip"))
    paths = {
        "pickscore": clip,
        "clip_score": clip,
        "aesthetic_clip": clip,
        "aesthetic_head": str(tiny_aesthetic_head(directory / "aesthetic_head.pth")),
        "hpsv21": str(tiny_hps(directory / "hps.pt")),
        "hps_arch": TINY_HPS_ARCH,
    }
    paths.update({k: str(v) for k, v in tiny_imagereward(directory / "imagereward").items()})
    return paths


def cached_tiny_metric_paths(cache_dir: str = "") -> dict[str, str]:
    """:func:`tiny_metric_paths` written once into the cache (shared by runs and trials)."""
    path = materialise(f"tiny-metrics-v{TINY_METRICS_VERSION}", __name__, ["metrics"], cache_dir)
    relative = json.loads((path / "paths.json").read_text())
    return {k: str(path / v) if (path / v).exists() else v for k, v in relative.items()}


TINY_METRICS_VERSION = "2"  # 2: ImageReward.pt with the publisher's unused tensors


def main(argv: list[str]) -> None:
    """``metrics DIRECTORY``: every tiny metric and ``paths.json`` naming its files
    (:func:`distar.util.cache.materialise`)."""
    root = Path(argv[1])
    written = tiny_metric_paths(root)  # stored relative: the directory is renamed into place
    relative = {k: v.removeprefix(f"{root}/") for k, v in written.items()}
    (root / "paths.json").write_text(json.dumps(relative))


if __name__ == "__main__":  # python -m distar.evaluation.tiny_metrics metrics DIRECTORY
    import sys

    main(sys.argv[1:])
