"""The files each built-in metric loads, where to get them, and which ``MetricOptions.paths``
key (in brackets) or environment variable points at them; torch-free, so a sweep checks them
before anything starts. Sizes are those of the published files."""

from __future__ import annotations

from distar.rewards.pickscore import HF, MODEL_FILES, PICKSCORE, PICKSCORE_PROCESSOR
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
FID_TORCHSCRIPT = WeightFile(  # [fid_inception_torchscript]
    "DISTAR_FID_INCEPTION_TORCHSCRIPT",
    "Inception-v3 TorchScript inception-2015-12-05.pt (clean-fid / StyleGAN2-ADA, ~92 MB), for "
    "eval.fid_protocol",
    "Download https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
    "inception-2015-12-05.pt (the file clean-fid fetches) and keep its name.",
)
FID_REFERENCE = WeightFile(  # [fid_reference]
    "DISTAR_FID_REFERENCE",
    "FID reference images (e.g. the COCO-2014 val images of the 30k captions)",
    "Point it at a folder of images; its statistics are computed once and cached.",
    directory=True,
)


# metric -> (MetricOptions key, WeightFile, required) of each file it loads
METRIC_FILES: dict[str, tuple[tuple[str, WeightFile, bool], ...]] = {
    "pickscore": (
        ("pickscore", PICKSCORE, True),
        ("pickscore_processor", PICKSCORE_PROCESSOR, False),
    ),
    "clip_score": (("clip_score", CLIPSCORE, True),),
    "aesthetic": (
        ("aesthetic_clip", AESTHETIC_CLIP, True),
        ("aesthetic_head", AESTHETIC_HEAD, True),
    ),
    "hpsv21": (("hpsv21", HPS21, True),),
    "imagereward": (("imagereward", IMAGEREWARD, True), ("bert_tokenizer", BERT_TOKENIZER, True)),
    "fid": (("fid_inception", FID_INCEPTION, True), ("fid_reference", FID_REFERENCE, True)),
}
# "fid" under eval.fid_protocol: clean-fid's Inception instead of torch-fidelity's
PROTOCOL_FID_FILES = (
    ("fid_inception_torchscript", FID_TORCHSCRIPT, True),
    ("fid_reference", FID_REFERENCE, True),
)
