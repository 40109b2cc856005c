"""Inference time per 10 images (the paper's Table 1 column), measured on the device the
evaluation ran on: warm (the benchmarks already ran the generator at this batch size; one more
untimed image first), synchronised (CUDA work is waited for before the clock stops), at the
evaluation's batch size, on its first prompts and their noise. The device is named beside the
number."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import torch

from distar.data.prompts import PromptSet
from distar.evaluation.harness import HarnessOptions, noise_for, sample_seed

IMAGES = 10  # the paper's unit: seconds per 10 images


@dataclass(frozen=True)
class InferenceTime:
    seconds_per_10: float
    device: str  # "NVIDIA H100 80GB HBM3" or "cpu: <processor>, N threads"
    batch_size: int

    def metrics(self) -> dict[str, float]:
        return {"infer_sec_per_10": self.seconds_per_10}

    def params(self) -> dict[str, object]:
        return {"timing.device": self.device, "timing.batch_size": self.batch_size}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    return f"cpu: {cpu}, {torch.get_num_threads()} threads of {os.cpu_count()}"


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def time_generation(generator, prompts: PromptSet, options: HarnessOptions) -> InferenceTime:
    """Seconds to generate 10 images (prompts cycled if fewer), in batches of the evaluation's
    batch size, after one untimed warm-up image."""
    texts = [prompts.prompts[i % len(prompts.prompts)].text for i in range(IMAGES)]
    seeds = [sample_seed(options.seed, prompts.name, i) for i in range(IMAGES)]
    batch = min(options.batch_size, IMAGES)
    noise = noise_for(seeds, generator.noise_shape, options.device)
    with torch.no_grad():
        generator(texts[:1], noise[:1])  # lazily built state (caches, allocator) is not timed
        synchronise(options.device)
        started = time.perf_counter()
        for lo in range(0, IMAGES, batch):
            generator(texts[lo : lo + batch], noise[lo : lo + batch])
        synchronise(options.device)
    elapsed = time.perf_counter() - started
    return InferenceTime(elapsed, device_name(options.device), batch)
