"""What the SD worlds cost a GPU (torch-free): SD1.5's and SDXL's sizes, per-image activation
estimates and the measured step rows the planner is calibrated on, registered with
:mod:`distar.worlds.cost_model`.

Sources: parameter counts from diffusers' ``UNet2DConditionModel`` in the SD1.5 / SDXL
configurations (counted on the meta device), FSDP unit = the largest attention or resnet;
activation estimates per image from ``shared/research/sd-worlds.md`` §7.2-7.3 (saved tensors of
one generator step, measured on CPU); step rows from the README's measured table
(``benchmarks/sd_step.py`` on one H200, fp32 masters, bf16 VAE and PickScore, copy assistant).
"""

from __future__ import annotations

from distar.worlds.cost_model import ARCHES, MEASURED, OUT_OF_MEMORY, Arch, MeasuredRow

ARCHES["sdxl"] = Arch(
    "sdxl",
    1024,
    2.567e9,
    0.351e9,
    0.818e9,
    83.7e6,
    196.8e6,
    act_ckpt=8.1,
    act_full=22.7,
    chunk_img_ckpt=0.55,
    chunk_fixed_ckpt=7.5,
    chunk_img_full=6.42,
    chunk_fixed_full=16.3,
    vae_act_ckpt=6.84,
    vae_act_full=11.11,
)
ARCHES["sd15"] = Arch(
    "sd15",
    512,
    0.860e9,
    0.049e9,
    0.123e9,
    83.7e6,
    67.3e6,
    act_ckpt=2.18,
    act_full=4.6,
    chunk_img_ckpt=0.14,
    chunk_fixed_ckpt=2.04,
    chunk_img_full=0.87,
    chunk_fixed_full=3.7,
    vae_act_ckpt=1.7,
    vae_act_full=2.78,
)
MEASURED += [
    MeasuredRow("sdxl", 2, True, 3457, 90.8),
    MeasuredRow("sdxl", 4, True, 3965, 116.5),
    MeasuredRow("sd15", 8, True, 1676, 53.4, stale_grads=True),
    MeasuredRow("sd15", 16, True, 2093, 80.0, stale_grads=True),
    MeasuredRow("sd15", 8, False, 1033, 101.9, stale_grads=True),
]
# gpu-step-floor.md: SDXL batch 2 without checkpointing, fp32 masters, both networks'
# gradients alive: out of memory on a 139.8 GiB H200 -- a lower bound the model must respect
OUT_OF_MEMORY.append(MeasuredRow("sdxl", 2, False, 0.0, 139.8, stale_grads=True))
