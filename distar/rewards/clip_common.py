"""What the CLIP-family scorers share: in-torch (differentiable) preprocessing, unwrapping
transformers 4.x / 5.x feature outputs, and the CLIP BPE tokenizer built from open_clip's copy."""

from __future__ import annotations

import functools
import gzip
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

# OpenAI CLIP's normalisation, used by PickScore, HPSv2, the aesthetic predictor and BLIP alike.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class WeightLayoutError(ValueError):
    """A weight file whose tensors do not match the model it should hold (missing, extra or
    misshapen keys): refused, instead of a model left partly at random initialisation."""


def from_pretrained_exactly(model_class, directory: Path):
    """``model_class.from_pretrained(directory)``, refusing a checkpoint with missing, unexpected
    or misshapen tensors. transformers itself only prints those (a missing projection would be
    left at random); the keys it drops by name (old ``*.position_ids`` buffers) stay dropped."""
    model, info = model_class.from_pretrained(directory, output_loading_info=True)
    problems = {
        kind: sorted(map(str, info.get(kind) or ()))
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        listed = "; ".join(
            f"{kind.replace('_', ' ')}: {', '.join(keys[:5])}"
            + (f" (+{len(keys) - 5})" if len(keys) > 5 else "")
            for kind, keys in problems.items()
        )
        raise WeightLayoutError(f"{directory}: not a {model_class.__name__} checkpoint ({listed})")
    return model


def check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [batch, 3, H, W], got {tuple(images.shape)}")
    if not torch.is_floating_point(images):
        raise ValueError(f"images: expected floats in [0, 1], got {images.dtype}")


def check_pixel_range(images: Tensor) -> None:
    """Refuse images outside [0, 1], the range every scorer and FID network is documented for
    (one host sync: evaluation paths only). Clamping instead scored [-1, 1] images silently
    wrong. NaN fails too."""
    check_images(images)
    low, high = torch.aminmax(images.detach()) if images.numel() else (torch.zeros(()),) * 2
    low, high = float(low), float(high)
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(
            f"images: expected values in [0, 1], got min {low:.4g}, max {high:.4g} (images in "
            "[-1, 1]: pass x / 2 + 0.5)"
        )


def clip_pixels(images: Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> normalised [B, 3, size, size]; differentiable. Bicubic resize of
    the shorter side to ``size`` (antialiased, like PIL), then a centre crop."""
    check_images(images)
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    out_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    if (h, w) != out_hw:
        images = F.interpolate(images, out_hw, mode="bicubic", antialias=True, align_corners=False)
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    images = images[..., top : top + size, left : left + size]
    m = _constant(tuple(mean), images.device, images.dtype)
    s = _constant(tuple(std), images.device, images.dtype)
    return (images - m) / s


@functools.cache
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A [1, C, 1, 1] constant made on the device once (no host-to-device copy per call)."""
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)


def pooled(output) -> Tensor:
    """``get_image_features`` / ``get_text_features`` return a tensor in transformers 4.x and a
    ``BaseModelOutputWithPooling`` in 5.x (projected embedding in ``pooler_output``)."""
    if isinstance(output, Tensor):
        return output
    if getattr(output, "pooler_output", None) is not None:
        return output.pooler_output
    raise TypeError(f"cannot find the embedding in {type(output).__name__}")


def normalised(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def write_clip_bpe_tokenizer(directory: str | Path) -> Path:
    """Write transformers' ``vocab.json`` + ``merges.txt`` for the real CLIP BPE vocabulary,
    derived from the copy open_clip ships; ids equal ``open_clip.tokenize``'s (tested)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice OpenAI's SimpleTokenizer uses
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # the slow-tokenizer file layout: transformers 4.x and 5.x both load it with from_pretrained
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def hub_layout_tokenizers(pipeline: Path, slow: Path) -> None:
    """Each ``tokenizer*/`` folder ``save_pretrained`` wrote into ``pipeline`` becomes a copy of
    ``slow`` (:func:`write_clip_bpe_tokenizer`'s files; ``slow`` is removed after): the layout
    the SD1.5 / SDXL hub folders ship. transformers 5 saves one 3.6 MB ``tokenizer.json``
    instead, which loads in ~0.3 s against ~0.05 s for these files (same ids, tested); the
    tests build a tiny world hundreds of times."""
    for folder in sorted(pipeline.glob("tokenizer*")):
        shutil.rmtree(folder)
        shutil.copytree(slow, folder)
    shutil.rmtree(slow)


def clip_tokenizer(directory: str | Path):
    """The CLIP tokenizer of a model directory (or of :func:`write_clip_bpe_tokenizer`'s)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(directory))
