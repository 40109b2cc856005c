"""Protocol FID (``eval.fid_protocol``): DMD2's evaluator on clean-fid, held to a second
implementation written here from DMD2's and clean-fid's source, with pytorch-fid's Frechet
distance, on a tiny feature network; shards merge exactly; the config and the preflight refuse
what the protocol does not allow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from distar.config.benchmarks import FID_PROTOCOLS
from distar.config.tree import Config, ConfigError
from distar.evaluation.metric_base import MetricOptions
from distar.evaluation.preflight import preflight
from distar.evaluation.protocol_fid import ProtocolFID, load_inception_torchscript
from distar.evaluation.scorers import build_metric

COCO_30K = Path(__file__).resolve().parents[1].parent / "shared/data/coco2014_val_30k_captions.txt"
# a small resolution keeps the test fast; every step is the protocol's
PROTOCOL = dataclasses.replace(FID_PROTOCOLS["dmd2-sdxl"], resolution=48)


class TinyFeatures(nn.Module):
    """Stands in for Inception: 299 x 299 in [0, 255] -> 6 features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 23, stride=23)

    def forward(self, x):
        return torch.tanh(self.conv((x - 128) / 128).mean((2, 3)))


def second_implementation(images: list[np.ndarray], reference: list[np.ndarray], net) -> float:
    """DMD2's ``resize_and_center_crop`` (centre crop by box, LANCZOS), clean-fid's "clean"
    resize written out (per channel, mode "F", bicubic, clip, no quantisation), np.mean /
    np.cov, and pytorch-fid's Frechet distance."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    def pixels(img: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(img)
        w, h = pil.size
        side = min(w, h)
        left, top = int(round((w - side) / 2.0)), int(round((h - side) / 2.0))
        pil = pil.crop((left, top, left + side, top + side))
        pil = pil.resize((PROTOCOL.resolution,) * 2, Image.LANCZOS)
        arr = np.asarray(pil)
        channels = []
        for c in range(3):
            f = Image.fromarray(arr[:, :, c].astype(np.float32), mode="F")
            channels.append(np.asarray(f.resize((299, 299), Image.BICUBIC)).clip(0, 255))
        return np.stack(channels, axis=2).astype(np.float32)

    def features(batch: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack([pixels(i) for i in batch])).permute(0, 3, 1, 2)
        with torch.no_grad():
            return net(x).double().numpy()

    f1, f2 = features(images), features(reference)
    return calculate_frechet_distance(
        f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    )


@pytest.fixture
def reference(tmp_path) -> Path:
    """Real images of mixed sizes and aspect ratios, as COCO's are."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(24):
        h, w = rng.integers(40, 110, 2)
        ramp = np.linspace(0, 255, w)[None, :, None] * rng.random(3)
        img = (ramp + rng.normal(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def generated(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g) ** 1.5


def test_protocol_fid_equals_a_second_implementation(reference, tmp_path):
    net = TinyFeatures()
    metric = ProtocolFID(PROTOCOL, net, "tiny")
    metric.reference_from_folder(reference, tmp_path / "cache")
    images = generated(20, 0)
    for chunk in images.split(7):
        metric.update(chunk)
    ours = metric.compute()
    uint8 = (images.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    refs = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(reference.iterdir())]
    theirs = second_implementation(list(uint8), refs, net)
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9) and ours > 0
    # the cached reference statistics give the same number
    again = ProtocolFID(PROTOCOL, net, "tiny")
    assert again.reference_from_folder(reference, tmp_path / "cache").is_file()
    again.merge_shard_states([metric.shard_state()])
    assert again.compute() == pytest.approx(ours, rel=1e-12)
    assert again.reference_count == 24
    # the protocol's resolution is part of the number: another one gives another FID
    other = ProtocolFID(dataclasses.replace(PROTOCOL, resolution=32), net, "tiny")
    other.reference_from_folder(reference, None)
    other.update(images)
    assert abs(other.compute() - ours) > 1e-3 * ours


def test_shards_merge_exactly(reference):
    net = TinyFeatures()
    whole = ProtocolFID(PROTOCOL, net, "tiny")
    whole.reference_from_folder(reference, None)
    images = generated(12, 2)
    whole.update(images)
    shards = []
    for part in (images[0::2], images[1::2], images[:0]):  # a third shard drew nothing
        m = ProtocolFID(PROTOCOL, net, "tiny")
        if len(part):
            m.update(part)
        shards.append(m.shard_state())
    merged = ProtocolFID(PROTOCOL, net, "tiny")
    merged.reference = whole.reference
    merged.merge_shard_states(shards)
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-9)


def test_the_metric_registry_builds_it_from_a_torchscript_file(reference, tmp_path):
    """``eval.fid_protocol`` -> clean-fid's Inception wrapper on a file named as clean-fid
    names it (a tiny scripted stand-in with its ``layers`` and 2048 features)."""

    class Layers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.lin = nn.Conv2d(3, 4, 23, stride=23), nn.Linear(4, 2048)

        def forward(self, x):
            return self.lin(self.conv(x).mean((2, 3)))

    class Scripted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = Layers()

        def forward(self, x):
            return self.layers(x)

    file = tmp_path / "ts" / "inception-2015-12-05.pt"
    file.parent.mkdir()
    torch.jit.script(Scripted()).save(str(file))
    paths = {"fid_inception_torchscript": str(file), "fid_reference": str(reference)}
    metric = build_metric("fid", MetricOptions(paths, fid_protocol="dmd2-sdxl"))
    assert isinstance(metric, ProtocolFID) and metric.protocol.resolution == 512
    metric.update(generated(6, 3))
    assert np.isfinite(metric.compute())
    wrong = tmp_path / "inception.pt"
    wrong.write_bytes(file.read_bytes())
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        load_inception_torchscript(wrong)


def test_the_config_and_preflight_hold_the_protocol(tmp_path):
    with pytest.raises(ConfigError, match="eval.fid_protocol: got 'nope'"):
        Config.for_world("sd15", {"eval.fid_protocol": "nope"})
    with pytest.raises(ConfigError, match="eval.benchmarks: got 'coco:200'.*coco:30000"):
        Config.for_world("sd15", {"eval.fid_protocol": "dmd2-sd15", "eval.benchmarks": "coco:200"})
    with pytest.raises(ConfigError, match="with fid among its metrics"):
        Config.for_world(
            "sd15",
            {
                "eval.fid_protocol": "dmd2-sd15",
                "eval.benchmarks": "coco",
                "eval.metrics": "clip_score",
            },
        )
    with pytest.raises(ConfigError, match="eval.images_per_prompt: got 2"):
        Config.for_world(
            "sd15",
            {
                "eval.fid_protocol": "dmd2-sd15",
                "eval.benchmarks": "coco",
                "eval.images_per_prompt": 2,
            },
        )
    short = tmp_path / "coco.txt"
    short.write_text("a cat\na dog\n")
    flat = {"eval.fid_protocol": "dmd2-sd15", "eval.benchmarks": "coco", "eval.metrics": "fid"}
    cfg = Config.for_world("sd15", {**flat, "eval.prompts": f"coco={short}"}).eval
    with pytest.raises(ConfigError, match="2 captions in .*coco.txt, the protocol has 30000"):
        preflight(cfg)
    if COCO_30K.is_file():  # the protocol's own file passes; what is missing next is a weight
        cfg = dataclasses.replace(cfg, prompts=f"coco={COCO_30K}")
        with pytest.raises(ConfigError, match=r"eval.weights \(fid\).*inception-2015-12-05"):
            preflight(cfg)
