"""A second text-to-image world built only from the shared building blocks (``distar.t2i``,
``distar.data.prompts``, ``distar.rewards``), as a PixArt or FLUX world would be -- nothing from
``distar.worlds.sd``. It satisfies the World protocol: the evaluation harness scores it and the
trainer takes a DI* step on it."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from distar.config.sd import SD_DEFAULTS
from distar.config.tree import Config
from distar.data.prompts import BUILT_IN, Prompt, PromptSet
from distar.evaluation.harness import HarnessOptions, evaluate
from distar.loop.trainer import Trainer
from distar.rewards.clip_common import clip_tokenizer
from distar.rewards.pickscore import load_pickscore
from distar.rewards.tiny_clip import tiny_clip, tiny_text_encoder
from distar.t2i.edm import DDPMSchedule, OneStepGenerator, UNetDenoiser
from distar.t2i.text import TextEncoders
from distar.worlds.base import World


class TinyTextWorld:
    """Latents 4 x 8 x 8; "decoding" is the first three channels squashed into [0, 1]."""

    sigma_data = 0.5
    placed = True

    def __init__(self, tmp) -> None:
        self.config, self.device = Config().world, torch.device("cpu")
        text_dir = tiny_text_encoder(tmp / "text")
        encoder = CLIPTextModel.from_pretrained(text_dir)
        self.text = TextEncoders([clip_tokenizer(text_dir)], [encoder], 64)
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=8,
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        )
        schedule = DDPMSchedule(DDPMScheduler(beta_schedule="scaled_linear").alphas_cumprod)
        self.sigma_range = (schedule.sigma_min, schedule.sigma_max)
        net = lambda u: UNetDenoiser(u, schedule, "epsilon", torch.float32)  # noqa: E731
        self.reference = net(copy.deepcopy(unet).requires_grad_(False))
        self.assistant = net(copy.deepcopy(unet))
        self.generator = OneStepGenerator(net(unet), 999)
        self.scorer = load_pickscore(tiny_clip(tmp / "pickscore"))

    def reference_pair(self, x, sigma, cond, null):
        both = self.reference(torch.cat([x, x]), torch.cat([sigma, sigma]), cond.cat(null))
        return both[: len(x)], both[len(x) :]

    def sample_conditions(self, n, rng, keep=None):
        drawn = torch.randint(0, 16, (n,), generator=rng)[keep or slice(None)]
        return self.text.encode([BUILT_IN[i] for i in drawn])

    def frozen_networks(self):
        return []

    def shard(self, offload):
        raise NotImplementedError("this test world trains unsharded")

    def null_conditions(self, cond):
        return self.text.unconditional(cond, "empty", self.text.encode([""]))

    def sample_latents(self, n, rng):
        return torch.randn(n, 4, 8, 8, generator=rng, device=rng.device)

    def decode(self, x0):
        return F.interpolate(torch.sigmoid(x0[:, :3]), size=(32, 32), mode="bilinear")

    def reward(self, x0, cond):
        return self.scorer.differentiable(self.decode(x0), cond.prompts)

    def eval_generator(self, resolution=0):
        world = self

        class Images:
            noise_shape = (4, 8, 8)

            def __call__(self, prompts, noise):
                return world.decode(world.generator(noise, world.text.encode(list(prompts))))

        return Images()

    def evaluate(self, samples_per_prompt, seed):
        prompts = PromptSet("built-in", tuple(Prompt(t, "", i) for i, t in enumerate(BUILT_IN[:2])))
        options = HarnessOptions(seed, samples_per_prompt, progress=False)
        result = evaluate(self.eval_generator(), prompts, {"reward": self.scorer}, options)
        return {"reward": result.summary["built-in/reward"]}

    def item_scores(self, samples_per_prompt, seed):
        return None  # a text world's items are its benchmarks' rows

    def plot(self, path, samples_per_prompt, seed):
        return path


# a DDPM UNet knows the noise levels of its schedule only (Trainer refuses others)
SD_NOISE = {k: v for k, v in SD_DEFAULTS.items() if k.startswith("noise.")}


def test_a_new_text_world_from_the_shared_blocks_is_evaluated_and_trained(tmp_path, world_cache):
    world = TinyTextWorld(tmp_path)
    assert isinstance(world, World)  # every method the loop and the harness call
    before = world.evaluate(2, seed=0)["reward"]
    flat = {
        "train.batch_size": 2,
        "loss.reward_scale": 1.0,
        "loss.cfg_scale": 1.0,
        "train.out_dir": str(tmp_path),
        **SD_NOISE,
    }
    config = Config().with_overrides(flat)
    trainer = Trainer(config, world=world)
    start = [p.detach().clone() for p in trainer.method.params["generator"]]
    metrics = trainer.train_step()
    assert torch.isfinite(metrics["loss/generator"]) and metrics["loss/reward"] != 0
    moved = zip(start, trainer.method.params["generator"], strict=True)
    assert any(not torch.equal(a, b) for a, b in moved)
    assert world.evaluate(2, seed=0)["reward"] != before  # the harness sees the trained generator
