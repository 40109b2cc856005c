"""Tiny random CLIP models in the real transformers layout (with the real CLIP BPE tokenizer),
so reward and text-encoder loading code runs offline: tests, ``sd*-tiny`` worlds, benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from distar.rewards.clip_common import write_clip_bpe_tokenizer

CLIP_VOCAB = 49408


def tiny_clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": CLIP_VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )


def tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A transformers CLIPModel (32 px, width 32) + real BPE tokenizer + image processor."""
    from transformers import CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    CLIPModel(tiny_clip_config()).save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(directory)
    write_clip_bpe_tokenizer(directory)
    return directory


def tiny_text_encoder(directory: Path, seed: int = 0) -> Path:
    """A CLIPTextModel directory (what a Stable Diffusion ``text_encoder/`` holds) + tokenizer."""
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    CLIPTextModel(tiny_clip_config().text_config).save_pretrained(directory)
    write_clip_bpe_tokenizer(directory)
    return directory


# ``tiny:pickscore`` for every world's reward (:func:`distar.t2i.parts.tiny_folder`): the writer
# module (run as ``python -m MODULE pickscore DIR``) and its version (bump when it changes)
TINY_PICKSCORE = {"pickscore": (__name__, "2")}


def main(argv: list[str]) -> None:
    """``pickscore DIRECTORY``: write the tiny PickScore (:func:`distar.util.cache.materialise`)."""
    tiny_clip(Path(argv[1]))


if __name__ == "__main__":  # python -m distar.rewards.tiny_clip pickscore DIRECTORY
    main(sys.argv[1:])
