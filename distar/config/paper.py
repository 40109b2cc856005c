"""The paper (Luo et al., "Diff-Instruct*"), in one place: its Table 2 ablation rows, the numbers
it publishes (Tables 1-3, transcribed from the paper), and the one translation of its
(alpha_rew, alpha_cfg) into a world's config.

Names. A paper value is called ``paper.alpha_rew`` / ``paper.alpha_cfg`` everywhere: the MLflow
tags of a run, a Tune result, the console, the reports. World-unit values exist only under
``loss.*`` (``loss.reward_scale``, ``loss.cfg_scale`` with ``loss.cfg_convention``).

Units. The paper's alpha_cfg is the alpha of ``D_c + alpha (D_c - D_null)`` (distar's CFG
convention; diffusers' guidance_scale would be 1 + alpha), and its alpha_rew multiplies
PickScore's logit. Each world's preset says how large those are in its own units
(``WorldPreset.paper_scales``): the embedded world's reward is in [-1, 1] and its CFG acts on a
2-D mixture, so the paper's 100 / 7.5 become 1.0 / 1.0 there; the SD worlds take them as printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from distar.config.tree import world_preset

ALPHA_REW = "paper.alpha_rew"
ALPHA_CFG = "paper.alpha_cfg"
MODEL = "paper.model"  # the model column of the paper's Table 2
METHOD = "paper.method"  # the model of the same method in Tables 1 and 3 ("" if none)
CFG_CONVENTION = "distar"  # the paper's alpha_cfg: D_c + alpha (D_c - D_null)
# what the paper's numbers fix: a --set of these would change what a row means
PAPER_KEYS = ("loss.reward_scale", "loss.cfg_scale", "loss.cfg_convention")


@dataclass(frozen=True)
class Scores:
    """The paper's columns (Tables 1 and 2): ImageReward, Aesthetic, PickScore (as a cosine),
    CLIP score, and COCO FID (Table 1, COCO only)."""

    image_reward: float
    aesthetic: float
    pickscore: float
    clip_score: float
    coco_fid: float = float("nan")


@dataclass(frozen=True)
class AblationRow:
    label: str
    model: str  # the paper's Table 2 model name
    divergence: str
    guidance: str
    alpha_rew: float
    alpha_cfg: float
    published: Scores  # the paper's Table 2 numbers for this row (Parti prompts)
    method: str = ""  # the model of the same method in Tables 1 and 3
    trains: bool = True  # False: the initial model, evaluated without training
    short: str = ""  # the method in a run's name, after its scales: "100/7.5 DI*-In s0"


TABLE2: tuple[AblationRow, ...] = (
    AblationRow(
        label="init (stage 0 / DMD2)",
        model="DMD2-SDXL (init model)",
        divergence="kl",
        guidance="in",
        alpha_rew=0,
        alpha_cfg=0,
        published=Scores(0.938, 5.51, 0.2249, 32.97),
        method="DMD2-SDXL",
        trains=False,
        short="init",
    ),
    AblationRow(
        label="KL, no CFG",
        model="DI++-SDXL (KL)",
        divergence="kl",
        guidance="in",
        alpha_rew=0,
        alpha_cfg=0,
        published=Scores(0.846, 5.5, 0.2243, 32.66),
        short="KL",
    ),
    AblationRow(
        label="Diff-Instruct (KL + CFG)",
        model="DI++-SDXL (= Diff-Instruct)",
        divergence="kl",
        guidance="in",
        alpha_rew=0,
        alpha_cfg=7.5,
        published=Scores(1.058, 5.6, 0.2253, 33.02),
        method="Diff-Instruct-SDXL",
        short="Diff-Instruct",
    ),
    AblationRow(
        label="DI++ (KL + reward + CFG)",
        model="DI++-SDXL (KL)",
        divergence="kl",
        guidance="in",
        alpha_rew=100,
        alpha_cfg=7.5,
        published=Scores(1.061, 5.58, 0.226, 32.94),
        method="DI++-SDXL",
        short="DI++",
    ),
    AblationRow(
        label="DI*-Out",
        model="DI*-Out-SDXL",
        divergence="score",
        guidance="out",
        alpha_rew=100,
        alpha_cfg=7.5,
        published=Scores(1.082, 5.63, 0.2263, 33.03),
        short="DI*-Out",
    ),
    AblationRow(
        label="DI*-In, no reward, no CFG",
        model="DI*-In-SDXL (baseline no reward)",
        divergence="score",
        guidance="in",
        alpha_rew=0,
        alpha_cfg=0,
        published=Scores(0.782, 5.74, 0.2256, 32.16),
        short="DI*-In",
    ),
    AblationRow(
        label="SIM (score + CFG)",
        model="DI*-In-SDXL (= SIM only CFG)",
        divergence="score",
        guidance="in",
        alpha_rew=0,
        alpha_cfg=7.5,
        published=Scores(1.049, 5.66, 0.2273, 32.93),
        method="SIM-SDXL",
        short="SIM",
    ),
    AblationRow(
        label="DI*-In α_rew 1",
        model="DI*-In-SDXL (human reward + CFG)",
        divergence="score",
        guidance="in",
        alpha_rew=1,
        alpha_cfg=7.5,
        published=Scores(1.031, 5.69, 0.2274, 32.87),
        short="DI*-In",
    ),
    AblationRow(
        label="DI*-In α_rew 10",
        model="DI*-In-SDXL",
        divergence="score",
        guidance="in",
        alpha_rew=10,
        alpha_cfg=7.5,
        published=Scores(1.048, 5.66, 0.2278, 32.91),
        short="DI*-In",
    ),
    AblationRow(
        label="DI*-In α_rew 100, α_cfg 4.5",
        model="DI*-In-SDXL",
        divergence="score",
        guidance="in",
        alpha_rew=100,
        alpha_cfg=4.5,
        published=Scores(1.02, 5.68, 0.2278, 32.82),
        short="DI*-In",
    ),
    AblationRow(
        label="DI*-In α_rew 100, α_cfg 7.5",
        model="DI*-In-SDXL",
        divergence="score",
        guidance="in",
        alpha_rew=100,
        alpha_cfg=7.5,
        published=Scores(1.067, 5.74, 0.2304, 32.82),
        method="DI*-SDXL",
        short="DI*-In",
    ),
)


@dataclass(frozen=True)
class Table1Model:
    """A model of the paper's Table 1: its sampling steps, network, size, and inference time per
    10 images (seconds, on a GPU the paper does not name)."""

    name: str
    steps: int
    network: str
    params: str
    infer_sec_per_10: float


TABLE1_MODELS: tuple[Table1Model, ...] = (
    Table1Model("SDXL-Base", 50, "UNet", "2.6B", 111),
    Table1Model("SDXL-DPO", 50, "UNet", "2.6B", 111),
    Table1Model("SD3.5-Large", 28, "DiT", "8B", 66.23),
    Table1Model("FLUX-dev", 50, "DiT", "12B", 118.64),
    *(
        Table1Model(name, 1, "UNet", "2.6B", 2.22)
        for name in (
            "DMD2-SDXL",
            "Diff-Instruct-SDXL",
            "SIM-SDXL",
            "DI++-SDXL",
            "DI*-SDXL",
            "DI*-SDXL (long train)",
            "DI*-SDXL-DPO (long train)",
        )
    ),
)
# Table 1, on Parti and COCO-2014 30k prompts (the paper's rows, in its order; its COCO rows name
# the long-trained models "longer training" and "-DPO", its Parti rows "long train" and "-DDPO")
TABLE1: dict[tuple[str, str], Scores] = {
    ("parti", "SDXL-Base"): Scores(0.887, 5.72, 0.2274, 32.72),
    ("parti", "SDXL-DPO"): Scores(1.102, 5.77, 0.2290, 33.03),
    ("parti", "SD3.5-Large"): Scores(1.133, 5.70, 0.2306, 32.70),
    ("parti", "FLUX-dev"): Scores(1.132, 5.90, 0.2317, 31.70),
    ("parti", "DMD2-SDXL"): Scores(0.930, 5.51, 0.2249, 32.97),
    ("parti", "Diff-Instruct-SDXL"): Scores(1.058, 5.60, 0.2253, 33.02),
    ("parti", "SIM-SDXL"): Scores(1.049, 5.66, 0.2273, 32.93),
    ("parti", "DI++-SDXL"): Scores(1.061, 5.58, 0.2260, 32.94),
    ("parti", "DI*-SDXL"): Scores(1.067, 5.74, 0.2304, 32.82),
    ("parti", "DI*-SDXL (long train)"): Scores(1.140, 5.83, 0.2331, 32.75),
    ("parti", "DI*-SDXL-DPO (long train)"): Scores(1.210, 5.90, 0.2342, 32.91),
    ("coco", "SDXL-Base"): Scores(0.825, 5.55, 0.2281, 31.86, 15.89),
    ("coco", "SDXL-DPO"): Scores(0.950, 5.69, 0.2295, 32.17, 21.48),
    ("coco", "SD3.5-Large"): Scores(1.048, 5.46, 0.2305, 31.85, 17.69),
    ("coco", "FLUX-dev"): Scores(1.065, 5.64, 0.2333, 30.88, 24.77),
    ("coco", "DMD2-SDXL"): Scores(0.822, 5.42, 0.2251, 31.89, 15.80),
    ("coco", "Diff-Instruct-SDXL"): Scores(0.907, 5.48, 0.2264, 31.85, 21.62),
    ("coco", "SIM-SDXL"): Scores(0.925, 5.54, 0.2277, 31.90, 18.84),
    ("coco", "DI++-SDXL"): Scores(0.908, 5.53, 0.2265, 31.85, 21.42),
    ("coco", "DI*-SDXL"): Scores(0.933, 5.57, 0.2305, 31.75, 19.09),
    ("coco", "DI*-SDXL (long train)"): Scores(0.983, 5.65, 0.2335, 31.57, 21.15),
    ("coco", "DI*-SDXL-DPO (long train)"): Scores(1.034, 5.65, 0.2342, 31.58, 22.12),
}
# Table 3: HPSv2.1 per style of the same one-step methods
HPS_STYLES = ("animation", "concept_art", "painting", "photo", "average")
TABLE3: dict[str, tuple[float, float, float, float, float]] = {
    "DMD2-SDXL": (29.72, 27.96, 27.64, 26.55, 27.97),
    "Diff-Instruct-SDXL": (31.15, 29.71, 29.72, 28.20, 29.70),
    "SIM-SDXL": (31.97, 30.46, 30.13, 28.08, 30.16),
    "DI++-SDXL": (31.19, 29.88, 29.61, 28.21, 29.72),
    "DI*-SDXL": (32.26, 30.57, 30.10, 27.95, 30.22),
}


def to_world(alpha_rew: float, alpha_cfg: float, world: str) -> dict[str, object]:
    """The paper's (alpha_rew, alpha_cfg) as a world preset's ``loss.*`` values: scaled by the
    preset's ``paper_scales``, in the paper's CFG convention. The only translation there is:
    the grid's rows and the searcher's draws both go through it (``TrialSpec.config``)."""
    reward_factor, cfg_factor = world_preset(world).paper_scales
    return {
        "loss.reward_scale": alpha_rew * reward_factor,
        "loss.cfg_scale": alpha_cfg * cfg_factor,
        "loss.cfg_convention": CFG_CONVENTION,
    }


def tags(alpha_rew: float, alpha_cfg: float, model: str = "", method: str = "") -> dict[str, str]:
    """A run's paper values as MLflow tags (what the reports read back)."""
    out = {ALPHA_REW: f"{alpha_rew:g}", ALPHA_CFG: f"{alpha_cfg:g}"}
    out.update({k: v for k, v in ((MODEL, model), (METHOD, method)) if v})
    return out


def published(model: str, alpha_rew: float, alpha_cfg: float) -> Scores | None:
    """The paper's Table 2 numbers of the row with this model and these scales, if any."""
    for row in TABLE2:
        if (row.model, row.alpha_rew, row.alpha_cfg) == (model, alpha_rew, alpha_cfg):
            return row.published
    return None


def row_order(label: str) -> int:
    """Table 2's order of a row label (unknown labels last)."""
    return next((i for i, row in enumerate(TABLE2) if row.label == label), len(TABLE2))
