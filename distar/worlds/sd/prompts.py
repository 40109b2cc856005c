"""The prompts an SD world trains on: a Parti ``.tsv`` or a file with one prompt per line (the
COCO captions file, your own), or a small built-in list that only exists to make the tiny worlds
and first runs work without files."""

from __future__ import annotations

from pathlib import Path

BUILT_IN = (
    "a photo of a red fox in a snowy forest",
    "an oil painting of a lighthouse at dawn",
    "a bowl of ramen on a wooden table, studio lighting",
    "a watercolor of a city street in the rain",
    "a close-up portrait of an elderly fisherman",
    "a futuristic train crossing a desert canyon",
    "a cat wearing a tiny wizard hat, digital art",
    "a mountain lake reflecting autumn trees",
    "a robot reading a book in a library",
    "a bouquet of sunflowers in a blue vase",
    "an astronaut riding a horse on the moon",
    "a cozy cabin interior with a fireplace",
    "a hummingbird drinking from a flower, macro photo",
    "a medieval castle on a cliff above the sea",
    "a plate of colorful macarons, pastel background",
    "a neon-lit alley in Tokyo at night",
)


def training_prompts(spec: str) -> list[str]:
    """``""``: the built-in list; ``*.tsv``: Parti prompts; otherwise one prompt per line."""
    from distar.prompts import load_coco, load_parti

    if not spec:
        return list(BUILT_IN)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"world.prompts: {path} is not a file (a Parti .tsv, or one prompt per line)"
        )
    prompts = load_parti(path) if path.suffix == ".tsv" else load_coco(path)
    return prompts.texts()
