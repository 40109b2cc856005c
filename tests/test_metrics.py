"""Reward and metric models on tiny random-init models of the real architectures, loaded from
disk by the real loading code; FID mechanics against a second implementation."""

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from torch import nn

from distar.evaluation import imagereward as ir
from distar.evaluation.fid import FIDMetric
from distar.evaluation.metric_base import MetricOptions
from distar.evaluation.scorers import blip_configs, build_metric
from distar.evaluation.tiny_metrics import original_layout, tiny_metric_paths
from distar.rewards.clip_common import clip_tokenizer, write_clip_bpe_tokenizer
from distar.rewards.weights import MissingWeightsError

SAMPLE_METRICS = ("pickscore", "clip_score", "aesthetic", "hpsv21", "imagereward")
PROMPTS = ['"G I G G L E" painted in thick paint', "a red car", "a photo of a cat", "x " * 100]


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    return tiny_metric_paths(tmp_path_factory.mktemp("tiny-metrics"))


@pytest.fixture(scope="module")
def metrics(tiny_paths):
    return {name: build_metric(name, MetricOptions(tiny_paths)) for name in SAMPLE_METRICS}


def smooth_images(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(h // 8, 1), max(w // 8, 1), generator=g)
    return nn.functional.interpolate(coarse, (h, w), mode="bilinear")


def assert_tokenises_as_open_clip(directory: Path) -> None:
    ours = clip_tokenizer(directory)(
        PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt"
    ).input_ids
    reference = open_clip.tokenize(PROMPTS)
    for a, b in zip(ours, reference, strict=True):
        n = int((b != 0).sum())  # open_clip pads with 0, transformers with <|endoftext|>
        assert torch.equal(a[:n], b[:n])
    assert reference[3, -1] == 49407 and ours[3, -1] == 49407  # truncated, still ends in EOT


def test_real_clip_bpe_tokenizer_matches_open_clip(tmp_path):
    assert_tokenises_as_open_clip(write_clip_bpe_tokenizer(tmp_path))


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd35", "flux"])
def test_the_tiny_pipelines_tokenizers_are_the_hubs_files(world_cache, name):
    """vocab.json + merges.txt in every tokenizer folder, as the SD1.5 / SDXL hub folders hold
    them (not the one tokenizer.json transformers 5 saves: ~6x slower to load), tokenising as
    open_clip does."""
    from distar.worlds.flow.tiny_pipelines import resolve as flow_folder
    from distar.worlds.sd.tiny_pipelines import resolve as sd_folder

    writer = {"sd15": sd_folder, "sdxl": sd_folder, "sd35": flow_folder, "flux": flow_folder}
    folder = Path(writer[name](f"tiny:{name}", str(world_cache)))
    tokenizers = sorted(folder.glob("tokenizer*"))
    assert len(tokenizers) == {"sd15": 1, "sdxl": 2, "sd35": 3, "flux": 2}[name]
    for directory in tokenizers:
        files = sorted(p.name for p in directory.iterdir())
        assert files == ["merges.txt", "tokenizer_config.json", "vocab.json"], directory
        assert_tokenises_as_open_clip(directory)


@pytest.mark.parametrize("name", SAMPLE_METRICS)
def test_every_metric_scores_each_sample(metrics, name):
    images = smooth_images(4, 48, 40)
    scores = metrics[name].score(images, PROMPTS)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert not scores.requires_grad
    # the same pair scores the same in any batch
    single = metrics[name].score(images[1:2], PROMPTS[1:2])
    assert torch.allclose(single, scores[1:2], atol=1e-4)


def test_score_ranges(metrics):
    images = smooth_images(4, 32, 32)
    clip = metrics["clip_score"].score(images, PROMPTS)
    assert ((clip >= 0) & (clip <= 100)).all()  # max(100 cos, 0)
    pick = metrics["pickscore"]
    assert (pick.score(images, PROMPTS).abs() <= pick.scale() + 1e-4).all()
    assert (metrics["hpsv21"].score(images, PROMPTS).abs() <= 100 + 1e-4).all()


def test_pickscore_is_the_cosine_the_paper_prints(metrics):
    """*/pickscore is on the paper's scale (DI*-SDXL: 0.2304): the model's logit over its learnt
    logit scale, the same number in charts, tables and reports."""
    from distar.rewards.clip_scorers import ClipPairScorer

    pick = metrics["pickscore"]
    logit = ClipPairScorer("pickscore", pick.model, pick.tokenizer, pick.processor)
    assert logit.scale() > 2  # the tiny model's learnt scale: dividing by it shows
    images = smooth_images(4, 32, 32)
    cosine = pick.score(images, PROMPTS)
    assert torch.allclose(cosine, logit.score(images, PROMPTS) / logit.scale(), atol=1e-6)
    assert (cosine.abs() <= 1 + 1e-6).all()


@pytest.mark.parametrize("size", [(32, 32), (48, 40), (96, 96)])
def test_differentiable_pickscore_matches_the_processor_path(metrics, size):
    pick = metrics["pickscore"]
    assert pick.processor is not None  # score() really goes through the image processor
    images = smooth_images(4, *size).requires_grad_(True)
    diff = pick.differentiable(images, PROMPTS)
    diff.sum().backward()
    grad = images.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # transformers 5 preprocesses in torch (identical); 4.x goes through PIL with uint8 rounding
    gap = (diff.detach() - pick.score(images.detach(), PROMPTS)).abs().max()
    assert gap <= 0.005 * pick.scale()


def test_imagereward_loads_the_original_checkpoint_layout(metrics, tiny_paths, tmp_path):
    scorer = metrics["imagereward"]
    state = original_layout(scorer)
    assert "blip.visual_encoder.blocks.0.attn.qkv.weight" in state
    assert "blip.visual_encoder.norm.weight" in state and "mlp.layers.7.bias" in state
    # what the publisher's module writes beside the weights the score reads (image-reward 1.5,
    # BLIP_Pretrain: vision_proj, text_proj; med.py: position_ids) is skipped by name
    assert set(ir.UNUSED_KEYS) <= set(state)
    vision, text, head = ir.split_checkpoint(state)
    assert set(vision) == set(scorer.vision.state_dict())
    assert "embeddings.position_ids" not in text
    missing = dict(state)
    missing.pop("mlp.layers.7.bias")
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*layers\.7\.bias"):
        ir.ImageRewardScorer.load(
            tmp_path / "missing.pt",
            Path(tiny_paths["bert_tokenizer"]),
            blip_configs(Path(tiny_paths["imagereward_configs"])),
        )
    state["blip.visual_encoder.blocks.0.attn.relative_bias"] = torch.zeros(1)
    with pytest.raises(KeyError, match="relative_bias"):
        ir.split_checkpoint(state)
    state.pop("blip.visual_encoder.blocks.0.attn.relative_bias")
    state["blip.text_decoder.cls.bias"] = torch.zeros(1)
    with pytest.raises(KeyError, match="unexpected key blip.text_decoder"):
        ir.split_checkpoint(state)
    # every renamed tensor lands where it belongs: perturb all weights, save in the original
    # layout, load through the real loader, get the same scores
    source = ir.ImageRewardScorer.load(
        Path(tiny_paths["imagereward"]),
        Path(tiny_paths["bert_tokenizer"]),
        blip_configs(Path(tiny_paths["imagereward_configs"])),
    )
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(original_layout(source), tmp_path / "ImageReward.pt")
    loaded = ir.ImageRewardScorer.load(
        tmp_path / "ImageReward.pt",
        Path(tiny_paths["bert_tokenizer"]),
        blip_configs(Path(tiny_paths["imagereward_configs"])),
    )
    images = smooth_images(3, 32, 32)
    expected = source.score(images, PROMPTS[:3])
    assert torch.equal(loaded.score(images, PROMPTS[:3]), expected)
    assert not torch.allclose(expected, scorer.score(images, PROMPTS[:3]))


def test_missing_weights_name_the_file_and_the_source(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTAR_HPS21", raising=False)
    with pytest.raises(MissingWeightsError, match=r"HPS_v2\.1_compressed\.pt.*DISTAR_HPS21"):
        build_metric("hpsv21")
    with pytest.raises(MissingWeightsError, match=r"not found.*xswu/HPSv2"):
        build_metric("hpsv21", MetricOptions({"hpsv21": str(tmp_path / "nope.pt")}))
    with pytest.raises(MissingWeightsError, match="yuvalkirstain/PickScore_v1"):
        build_metric("pickscore", MetricOptions({"pickscore": str(tmp_path)}))
    with pytest.raises(KeyError, match="known: aesthetic, clip_score, fid"):
        build_metric("pickscore_v2")


class TinyFeatures(nn.Module):
    """A fixed random conv feature extractor standing in for Inception."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.Tanh(), nn.AdaptiveAvgPool2d(2))
        self.num_features = 32

    def forward(self, x):
        return self.net(x.float()).flatten(1)


def test_fid_of_a_set_with_itself_is_zero_and_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    features = TinyFeatures()
    x, y = smooth_images(200, 32, 32, seed=1), smooth_images(200, 32, 32, seed=2) ** 2
    fid = FIDMetric(features, feature_id="tiny")
    fid.add_reference(x)
    fid.update(x)
    assert abs(fid.compute()) < 1e-3
    fid.reset()  # generated features only
    fid.update(y)
    ours = fid.compute()
    with torch.no_grad():
        fx, fy = features(x).double().numpy(), features(y).double().numpy()
    theirs = calculate_frechet_distance(
        fy.mean(0), np.cov(fy, rowvar=False), fx.mean(0), np.cov(fx, rowvar=False)
    )
    assert ours > 0.01 and ours == pytest.approx(theirs, rel=1e-3)


def test_fid_reference_statistics_are_cached(tmp_path):
    from torchvision.utils import save_image

    folder = tmp_path / "reference"
    folder.mkdir()
    for i, image in enumerate(smooth_images(12, 40, 48, seed=3)):
        save_image(image, folder / f"{i:03d}.png")
    generated = smooth_images(12, 32, 32, seed=4)
    first = FIDMetric(TinyFeatures(), feature_id="tiny")
    cache = first.reference_from_folder(folder, tmp_path / "cache", image_size=32, batch_size=5)
    first.update(generated)
    second = FIDMetric(TinyFeatures(), feature_id="tiny")
    assert second.reference_from_folder(folder, tmp_path / "cache", image_size=32) == cache
    assert int(second.metric.real_features_num_samples) == 12
    second.update(generated)
    assert cache.is_file() and second.compute() == pytest.approx(first.compute(), rel=1e-6)
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(Exception, match="broken.png|cannot identify"):
        FIDMetric(TinyFeatures(), feature_id="tiny").reference_from_folder(folder, None, 32)
    with pytest.raises(RuntimeError, match="no reference statistics"):
        FIDMetric(TinyFeatures(), feature_id="tiny").compute()


def test_pooled_handles_transformers_4_and_5_return_types():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from distar.rewards.clip_common import pooled

    emb = torch.randn(2, 16)
    assert pooled(emb) is emb  # transformers 4.x: the projected embedding itself
    wrapped = BaseModelOutputWithPooling(last_hidden_state=torch.randn(2, 5, 32), pooler_output=emb)
    assert pooled(wrapped) is emb  # 5.x: inside pooler_output
    with pytest.raises(TypeError, match="cannot find the embedding"):
        pooled(BaseModelOutputWithPooling(last_hidden_state=emb))


def test_fid_merged_from_shards_equals_fid_of_the_whole_set():
    """The generated-image feature sums of two shards add up exactly to one process's."""
    torch.manual_seed(1)
    reference, generated = torch.rand(24, 3, 32, 32), torch.rand(20, 3, 32, 32) * 0.8
    whole = FIDMetric(TinyFeatures(), feature_id="tiny")
    whole.add_reference(reference)
    whole.update(generated)
    shards = []
    for part in (generated[0::2], generated[1::2]):
        one = FIDMetric(TinyFeatures(), feature_id="tiny")
        one.update(part)
        shards.append(one.shard_state())
    merged = FIDMetric(TinyFeatures(), feature_id="tiny")
    merged.add_reference(reference)
    merged.update(generated[:3])  # replaced by the merge
    merged.merge_shard_states(shards)
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-6)
    assert whole.compute() > 0.01


def test_clip_loaders_refuse_a_file_that_is_not_the_model(tmp_path):
    """PickScore's, CLIP score's and the aesthetic backbone's folders (transformers'
    ``save_pretrained`` layout, the publisher's writer): a missing or extra tensor is refused by
    name; transformers would only print a report and leave a missing one at random. What 4.x
    wrote beside the weights (``*.embeddings.position_ids``) still loads."""
    from safetensors.torch import load_file, save_file

    from distar.rewards.clip_common import WeightLayoutError
    from distar.rewards.clip_scorers import AestheticScorer, load_clip
    from distar.rewards.tiny_clip import tiny_clip

    folder = tiny_clip(tmp_path / "clip")
    (weights,) = folder.glob("*.safetensors")
    state = load_file(weights)
    positions = state["text_model.embeddings.token_embedding.weight"].new_zeros(1, 8).long()
    save_file({**state, "text_model.embeddings.position_ids": positions}, weights)
    load_clip(folder)  # 4.x's buffer: dropped by transformers, by name
    save_file({**state, "logit_bias": torch.zeros(1)}, weights)
    with pytest.raises(WeightLayoutError, match="unexpected keys: logit_bias"):
        load_clip(folder)
    save_file({k: v for k, v in state.items() if k != "visual_projection.weight"}, weights)
    with pytest.raises(WeightLayoutError, match="missing keys: visual_projection.weight"):
        load_clip(folder)
    with pytest.raises(WeightLayoutError, match="missing keys: visual_projection.weight"):
        AestheticScorer.load(folder, tmp_path / "head.pth")


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan")])
def test_every_scorer_refuses_images_outside_0_1(metrics, value):
    """Every sample metric, FID and the protocol FID refuse what is not an image in [0, 1] in one
    line, naming the range, instead of clamping ([-1, 1] images were scored 0.44 for 0.18)."""
    from distar.evaluation.fid import FIDMetric
    from distar.evaluation.protocol_fid import to_uint8

    images = smooth_images(2, 32, 32)
    images[1, 2, 5, 7] = value
    refusal = r"images: expected values in \[0, 1\], got min"
    for metric in metrics.values():
        with pytest.raises(ValueError, match=refusal):
            metric.score(images, PROMPTS[:2])
        assert torch.isfinite(metric.score(images.nan_to_num().clamp(0, 1), PROMPTS[:2])).all()
    fid = FIDMetric.__new__(FIDMetric)  # the check comes before any network
    for call in (fid.update, fid.add_reference, to_uint8):
        with pytest.raises(ValueError, match=refusal):
            call(images)


def test_hps_pads_a_non_square_image_as_hpsv2_does(metrics):
    """hpsv2 1.2.0's ``ResizeMaxSize(224, fill=0)`` (``hpsv2/src/open_clip/transform.py``, which
    takes tensors too): the longer side resized, then zero padding to a centred square --
    rebuilt here from torchvision's own resize and pad, the calls that class makes."""
    import torchvision.transforms.functional as TF

    from distar.evaluation.hps import longest_side_padded

    images = smooth_images(2, 48, 40)
    got = longest_side_padded(images, 224)
    h, w = round(48 * 224 / 48), round(40 * 224 / 48)
    want = TF.resize(images, [h, w], TF.InterpolationMode.BICUBIC, antialias=True)
    pad_w = 224 - w
    want = TF.pad(want, [pad_w // 2, 0, pad_w - pad_w // 2, 0], fill=0)
    assert got.shape == (2, 3, 224, 224)
    assert torch.allclose(got, want, atol=1e-6)
    assert (got[..., : pad_w // 2] == 0).all() and (got[..., -(pad_w - pad_w // 2) :] == 0).all()
    hps = metrics["hpsv21"]
    stretched = torch.nn.functional.interpolate(images, (48, 48), mode="bicubic").clamp(0, 1)
    assert not torch.allclose(hps.score(images, PROMPTS[:2]), hps.score(stretched, PROMPTS[:2]))
