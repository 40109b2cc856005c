"""The published weight files, as their publishers' own code writes them, load into distar's
scorers and score as the publishers' own scoring code does.

- ImageReward.pt: the ``image-reward`` 1.5 package's ``ImageReward`` module (BLIP_Pretrain +
  MLP), tiny, saved with ``torch.save(model.state_dict())``; scored by its own
  ``ImageReward.score(prompt, PIL image)`` (``tests/reference_imagereward.py`` lists the shims
  that let it import beside transformers 5).
- LAION's aesthetic head (``sac+logos+ava1-l14-linearMSE.pth``): the ``MLP`` class the
  ``image-reward`` package ships (``ImageReward/models/AestheticScore.py``, from
  christophschuhmann/improved-aesthetic-predictor), its ``state_dict`` saved with ``torch.save``.
- HPS_v2.1_compressed.pt: an open_clip model (hpsv2 1.2.0 vendors open_clip; its key set is
  that of open_clip 3.3 on the same config) saved in the dict hpsv2's own writer makes
  (``hpsv2/src/training/file_utils.py`` ``save_ckpt``: iterations, name, state_dict,
  optimizer), scored by the recipe of ``hpsv2/img_score.py`` ``score``: its evaluation
  transform (``ResizeMaxSize``, pad to a square, on the PIL image) rebuilt from the torchvision
  calls it makes, and open_clip's forward. hpsv2 itself does not import as shipped (its wheel
  lacks the BPE vocabulary file ``tokenizer.py`` opens at import; pins protobuf<4,
  pytest==7.2).

Tolerances: at the scorer's native size no resize happens and the two sides compute the same
fp32 ops (rel 1e-5). With a resize the references use 8-bit PIL bicubic and distar a float
antialiased bicubic in torch, which is differentiable: that difference is measured and bounded
by the 8-bit rounding it comes from (see each test).

Mutation checks: ``bash scripts/publisher_mutations.sh`` breaks each rule (the publisher's
unused keys not skipped, transformers' lenient load, clamping instead of refusing, HPSv2
stretching instead of padding, resizing without antialiasing) and the tests here or in
tests/test_metrics.py fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PROMPTS = ["a photo of a red cat", "blue car on the sky"]


def pictures(size: tuple[int, int], n: int = 2, seed: int = 0, detail: int = 4) -> list:
    """uint8 pictures, bilinear from ``detail`` x ``detail`` random colours: smooth enough not to
    alias, detailed enough (16) that a resize without antialiasing shows."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, detail, detail, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size, mode="bilinear", align_corners=False)
    return [(p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in smooth]


def as_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays]).float() / 255


def needs_image_reward() -> None:
    """Installed, not imported: its ``__init__`` fails beside our pins (the shims skip it)."""
    from reference_imagereward import package_root

    if package_root() is None:
        pytest.skip("the reference package: pip install --no-deps image-reward==1.5")


def reference_scores(reference, prompts, arrays) -> torch.Tensor:
    """ImageReward's own ``score(prompt, PIL image)``, one pair at a time."""
    pairs = zip(prompts, arrays, strict=True)
    return torch.tensor([reference.score(p, Image.fromarray(a)) for p, a in pairs]).double()


@pytest.fixture(scope="module")
def imagereward(tmp_path_factory):
    needs_image_reward()
    from reference_imagereward import tiny_reference

    from distar.evaluation.imagereward import ImageRewardScorer
    from distar.evaluation.scorers import blip_configs

    reference, checkpoint, bert, configs = tiny_reference(tmp_path_factory.mktemp("ir"))
    ours = ImageRewardScorer.load(checkpoint, bert, blip_configs(configs))
    return reference, ours, checkpoint


def test_imagereward_file_of_its_publisher_loads_and_scores_the_same(imagereward):
    from distar.evaluation.imagereward import UNUSED_KEYS

    reference, ours, checkpoint = imagereward
    state = torch.load(checkpoint, weights_only=True)
    assert set(UNUSED_KEYS) <= set(state)  # what the real file carries beside the weights
    arrays = pictures((32, 32))
    want = reference_scores(reference, PROMPTS, arrays)
    got = ours.score(as_tensor(arrays), PROMPTS).double()
    assert want.std() > 0.01  # the fixture's scores differ by prompt and image
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_imagereward_through_a_resize_differs_by_8_bit_rounding_only(imagereward):
    """At 96 x 80 -> 32 px the reference resizes a PIL image (uint8 in, bicubic, uint8 out:
    half a level, 0.5 / 255, per pixel), distar a float tensor (antialiased bicubic, as PIL
    filters). Measured gap: 0.0063 (scores spread 1.66 over these inputs); a wrong resize --
    antialiasing off -- leaves 0.042. Bound: 0.02, 3 x the rounding gap and half the wrong
    resize's."""
    reference, ours, _ = imagereward
    arrays = pictures((96, 80), n=4, seed=1, detail=16)
    prompts = PROMPTS * 2
    want = reference_scores(reference, prompts, arrays)
    got = ours.score(as_tensor(arrays), prompts).double()
    assert (got - want).abs().max() <= 0.02, got - want


def test_aesthetic_head_file_of_its_publisher(tmp_path):
    needs_image_reward()
    import importlib.util
    import sys
    import types

    from reference_imagereward import package_root

    from distar.rewards.heads import RewardHead, load_state_dict

    path = package_root() / "models" / "AestheticScore.py"
    sys.modules.setdefault("clip", types.ModuleType("clip"))  # imported, unused by MLP
    module_spec = importlib.util.spec_from_file_location("aesthetic_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    torch.manual_seed(0)
    reference = module.MLP(16).eval()
    torch.save(reference.state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    head = RewardHead(16).eval()
    head.load_state_dict(load_state_dict(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"))
    embeddings = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    with torch.no_grad():
        assert torch.equal(head(embeddings), reference(embeddings).squeeze(-1))


def hpsv2_preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """hpsv2 1.2.0's evaluation transform (``img_score.py`` builds it with
    ``light_augmentation=True``: ``src/open_clip/transform.py`` ``image_transform(...,
    resize_longest_max=True)``): ``ResizeMaxSize(size, fill=0)`` -- the longer side to
    ``size``, bicubic on the PIL image, zero padding to a centred square -- then ToTensor and
    OpenAI CLIP's normalisation; the same torchvision calls, as hpsv2 does not import."""
    import torchvision.transforms.functional as TF

    from distar.rewards.clip_common import CLIP_MEAN, CLIP_STD

    width, height = image.size
    scale = size / float(max(height, width))
    if scale != 1.0:
        new = (round(height * scale), round(width * scale))
        image = TF.resize(image, list(new), TF.InterpolationMode.BICUBIC)
        pad_h, pad_w = size - new[0], size - new[1]
        padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        image = TF.pad(image, padding, fill=0)
    return TF.normalize(TF.to_tensor(image.convert("RGB")), CLIP_MEAN, CLIP_STD)


def test_hps_file_as_hpsv2_writes_it_scores_as_hpsv2_does(tmp_path):
    """Native size: the same fp32 ops (measured 2e-6 on scores ~20; bound 1e-4). Through a
    resize to 32 px, 8-bit PIL against float torch: measured 0.035 at 96 x 96 and 0.0016 at
    96 x 80 (padded); antialiasing off leaves 0.19 and 0.17. Bound 0.1: ~3 x the rounding gap,
    about half the wrong resize's."""
    import open_clip

    from distar.evaluation.hps import HPSv2Scorer
    from distar.evaluation.tiny_metrics import TINY_HPS_ARCH, register_tiny_open_clip

    register_tiny_open_clip()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None, output_dict=True).eval()
    optimizer = torch.optim.AdamW(model.parameters())
    checkpoint = {  # hpsv2/src/training/file_utils.py save_ckpt, unwrapped model, no scaler
        "iterations": 10,
        "name": "tiny",
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(checkpoint, tmp_path / "HPS_v2.1_compressed.pt")
    ours = HPSv2Scorer.load(tmp_path / "HPS_v2.1_compressed.pt", TINY_HPS_ARCH)
    tokenizer = open_clip.get_tokenizer(TINY_HPS_ARCH)
    size = model.visual.image_size[0]
    for shape in ((size, size), (3 * size, 3 * size), (3 * size, 80)):
        arrays = pictures(shape, detail=16)
        want = []
        with torch.no_grad():  # hpsv2/img_score.py score(): preprocess_val, model, diagonal
            for prompt, array in zip(PROMPTS, arrays, strict=True):
                image = hpsv2_preprocess(Image.fromarray(array), size).unsqueeze(0)
                out = model(image, tokenizer([prompt]))
                want.append((out["image_features"] @ out["text_features"].T).diagonal())
        want = 100 * torch.cat(want).double()  # distar reports HPS x 100
        got = ours.score(as_tensor(arrays), PROMPTS).double()
        bound = 1e-4 if shape[0] == size else 0.1
        assert (got - want).abs().max() <= bound, (shape, got - want)


def test_clip_score_as_torchmetrics_and_pickscore_as_its_model_card(tmp_path):
    """The CLIP-score model and PickScore's folder are what transformers' ``save_pretrained``
    writes (``tiny_clip``: the publisher's writer). CLIP score against torchmetrics' own
    ``CLIPScore`` (1.x; its ``get_*_features`` expect 4.x tensors, so the model it is handed
    returns transformers 5's ``pooler_output``, the projected embedding); PickScore against its
    model card's recipe (processor on PIL images, normalised features, ``logit_scale.exp()``
    times the dot). Native size: same fp32 ops (measured 6e-6, 2e-6). Resized to 32 px by the
    processor from uint8 PIL against distar's float path: measured 0.012 (x 100 scale) and
    0.003 (logits); bounds 0.05 and 0.01."""
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    from distar.evaluation.scorers import MetricOptions, build_metric
    from distar.rewards.clip_common import pooled
    from distar.rewards.tiny_clip import tiny_clip

    class TensorFeatures(CLIPModel):
        def get_image_features(self, *args, **kwargs):
            return pooled(super().get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return pooled(super().get_text_features(*args, **kwargs))

    folder = tiny_clip(tmp_path / "clip")
    options = MetricOptions({"clip_score": str(folder), "pickscore": str(folder)})
    clip_score, pickscore = build_metric("clip_score", options), build_metric("pickscore", options)
    model = TensorFeatures.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    reference = CLIPScore(model_name_or_path=lambda: (model, processor))
    for shape in ((32, 32), (96, 96), (96, 80)):
        arrays = pictures(shape, detail=16)
        want_clip = torch.tensor(
            [
                float(reference(torch.from_numpy(a).permute(2, 0, 1), [p]))
                for a, p in zip(arrays, PROMPTS, strict=True)
            ]
        )
        with torch.no_grad():
            images = processor(images=[Image.fromarray(a) for a in arrays], return_tensors="pt")
            texts = processor(
                text=PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt"
            )
            image = torch.nn.functional.normalize(model.get_image_features(**images), dim=-1)
            text = torch.nn.functional.normalize(model.get_text_features(**texts), dim=-1)
            want_pick = (model.logit_scale.exp() * text @ image.T).diagonal()
        got_clip = clip_score.score(as_tensor(arrays), PROMPTS)
        got_pick = pickscore.score(as_tensor(arrays), PROMPTS) * model.logit_scale.exp()
        native = shape == (32, 32)
        assert (got_clip - want_clip).abs().max() <= (1e-4 if native else 0.05), shape
        assert (got_pick - want_pick).abs().max() <= (1e-4 if native else 0.01), shape


def test_fid_loads_torch_fidelitys_inception_as_its_own_class_writes_it(tmp_path, monkeypatch):
    """pt_inception-2015-12-05 is the state dict of torch-fidelity's own
    ``FeatureExtractorInceptionV3`` (0.4.0): built here with its download patched out, saved
    with ``torch.save``, loaded strictly by torch-fidelity inside distar's FID. A loading check
    only: random Inception weights make every FID ~0."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    from distar.evaluation.fid import FIDMetric

    with monkeypatch.context() as patch:
        patch.setattr(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda *a: None)
        torch.manual_seed(0)
        publisher = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    saved = publisher.state_dict()
    torch.save(saved, tmp_path / "weights-inception-2015-12-05-6726825d.pth")
    fid = FIDMetric(weights=tmp_path / "weights-inception-2015-12-05-6726825d.pth")
    loaded = fid.metric.inception.state_dict()
    assert loaded.keys() == saved.keys() and len(saved) > 500
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_dmd2_unet_bin_as_dmd2_writes_and_reads_it(world_cache, tmp_path):
    """DMD2's one-step UNet (``dmd2_sdxl_1step_unet_fp16.bin``): written by its training code
    as ``torch.save(feedforward_model.state_dict())`` of a diffusers UNet
    (tianweiy/DMD2@8d8fa55 ``main/train_sd.py``), read by its README as
    ``UNet2DConditionModel.from_config(base, subfolder="unet")`` then
    ``load_state_dict(torch.load(path))``. distar's ``world.generator_init`` holds the same
    weights as that recipe (fp16 file, fp32 masters), bit for bit."""
    from diffusers import UNet2DConditionModel

    from distar.config.tree import Config
    from distar.worlds.builders import build_world
    from distar.worlds.sd.loading import load_unet
    from distar.worlds.sd.tiny_pipelines import resolve

    base = Path(resolve("tiny:sdxl"))
    unet = load_unet(base, torch.float16)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.save(unet.state_dict(), tmp_path / "dmd2_sdxl_1step_unet_fp16.bin")
    readme = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
    readme.load_state_dict(torch.load(tmp_path / "dmd2_sdxl_1step_unet_fp16.bin"))
    sets = {"world.generator_init": str(tmp_path / "dmd2_sdxl_1step_unet_fp16.bin")}
    world = build_world(Config.for_world("sdxl-tiny", sets).world, torch.device("cpu"))
    got = dict(world.generator.denoiser.unet.named_parameters())
    for key, want in readme.named_parameters():
        assert got[key].dtype == torch.float32 and torch.equal(got[key], want.float()), key
