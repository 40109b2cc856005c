"""The sd35 / flux worlds on tiny random pipelines written with save_pretrained and loaded
through the same code as a user's real folders (CPU, offline).

- The world's networks are the diffusers pipelines' own: the one-step generator is the
  pipeline's one-step sample, and the reference denoiser at the second step's time is the
  pipeline's two-step sample (text conditioning, time units, FLUX's packing and guidance).
- FLUX.1-dev's CFG means what the world's docstring says: on a transformer whose velocity is
  affine in its guidance value, ``in`` at alpha is the teacher at guidance ``1 + alpha`` (as
  diffusers' ``guidance_scale`` on the other worlds), and ``out``'s direction is one unit of
  guidance; at alpha = g - 1 it is the real transformer at g; FLUX.1-schnell refuses CFG
  before loading.
- DI* steps train both networks (score / KL, CFG in / out, copy / LoRA assistant, bf16), the
  LoRA reference is the base exactly, and the score term's gradient reaches x0 through the
  assistant's input.

Tolerances: the pipeline comparisons run the same fp32 modules on the same inputs in another
order of a few operations (1e-5 relative); the CFG identity is exact in float arithmetic up to
one division (1e-5)."""

from __future__ import annotations

import json

import pytest
import torch

from distar.config.tree import Config, ConfigError
from distar.loop.trainer import Trainer
from distar.method.losses import GeneratorBatch, Networks, generator_loss, guided_denoiser
from distar.runtime.callbacks import JsonlLogger
from distar.worlds.flow.tiny_pipelines import resolve
from distar.worlds.flow.world import pack, unpack

WORLDS = ("sd35", "flux")
CPU = torch.device("cpu")


def flow_config(tmp_path, world: str, **flat) -> Config:
    base = {
        "train.out_dir": str(tmp_path),
        "train.batch_size": 2,
        "train.log_every": 1,
        "eval.plot": False,
        "eval.samples_per_prompt": 2,
        "world.eval_prompts": 2,
        "eval.benchmarks": "",
    }
    return Config.for_world(f"{world}-tiny", {**base, **flat})


def build(world: str, **flat):
    from distar.worlds.builders import build_world

    return build_world(Config.for_world(f"{world}-tiny", flat).world, CPU)


def pipeline(world: str):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    cls = StableDiffusion3Pipeline if world == "sd35" else FluxPipeline
    return cls.from_pretrained(resolve(f"tiny:{world}"), local_files_only=True)


def pipeline_sample(pipe, world: str, prompt: str, z: torch.Tensor, steps: int, guidance: float):
    """The pipeline's latents after ``steps`` Euler steps from ``z`` at the unshifted times
    1 and 1/2 (SD3 without CFG; FLUX at ``guidance``), and the time of its second step after
    the pipeline's own shift (SD3: 3/4; FLUX: its resolution's mu)."""
    side = z.shape[-1] * 8
    out = pipe(
        prompt,
        latents=z if world == "sd35" else pack(z),
        num_inference_steps=steps,
        sigmas=[1.0, 0.5][:steps],
        height=side,
        width=side,
        output_type="latent",
        max_sequence_length=16,
        guidance_scale=guidance,
    ).images
    return (out if world == "sd35" else unpack(out, *z.shape[-2:])), float(pipe.scheduler.sigmas[1])


@pytest.mark.parametrize("world_name", WORLDS)
def test_the_world_is_the_diffusers_pipelines_teacher(world_cache, world_name):
    """One pipeline step from ``z`` is the world's one-step generator (``t_g = 1``; FLUX at the
    world's guidance value 3.5); two steps are the world's reference ``D(x; c)`` (FLUX: at
    guidance 1, the pipeline's ``guidance_scale=1``) at the pipeline's second time ``t2``
    applied to the first step's ``x_t2 = (1 - t2) x0_1 + t2 z``, at EDM's
    ``sigma = t2 / (1 - t2)`` and ``x = x_t2 / (1 - t2)``. A wrong time unit, packing,
    guidance or conversion is O(1) off."""
    world = build(world_name)
    pipe = pipeline(world_name)
    prompt = "a red cube on a table"
    z = torch.randn(1, *world.latent_shape(), generator=torch.Generator().manual_seed(0))
    cond = world.text.encode([prompt])
    with torch.no_grad():
        generator_guidance = 1.0 if world_name == "sd35" else world.guidance
        one, _ = pipeline_sample(pipe, world_name, prompt, z, 1, generator_guidance)
        torch.testing.assert_close(world.generator(z, cond), one, rtol=1e-5, atol=1e-5)
        one, _ = pipeline_sample(pipe, world_name, prompt, z, 1, 1.0)
        two, t2 = pipeline_sample(pipe, world_name, prompt, z, 2, 1.0)
        x_t2 = (1 - t2) * one + t2 * z
        sigma = torch.tensor([t2 / (1 - t2)])
        got = world.reference(x_t2 / (1 - t2), sigma, cond)
    torch.testing.assert_close(got, two, rtol=1e-5, atol=1e-5)
    assert 0.3 < t2 < 0.95 and (two - one).abs().max() > 1e-3  # the steps differ


@pytest.mark.parametrize("world_name", WORLDS)
def test_conditions_are_the_pipelines_encode_prompt(world_cache, world_name):
    world = build(world_name)
    pipe = pipeline(world_name)
    prompts = ["a red cube", "two cats on a sofa"]
    cond = world.text.encode(prompts)
    with torch.no_grad():
        if world_name == "sd35":
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompts, prompts, prompts, do_classifier_free_guidance=False, max_sequence_length=16
            )
        else:
            embeds, pooled, _ = pipe.encode_prompt(prompts, prompts, max_sequence_length=16)
    torch.testing.assert_close(cond.embeds, embeds.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cond.pooled, pooled.float(), rtol=1e-6, atol=1e-6)


def test_flux_dev_cfg_alpha_is_the_teacher_at_guidance_one_plus_alpha(world_cache):
    """On a transformer whose velocity is affine in the guidance value, ``v_w = a + w b`` (what
    guidance distillation trains toward), DI*'s CFG ``in`` at alpha is the teacher at guidance
    ``1 + alpha``, ``D(x; c)`` is the teacher at 1, and ``D(x; c) - D(x; null)`` (``out``'s
    direction) is one unit of guidance, ``D_2 - D_1``."""
    world = build("flux")
    call = world._reference.call

    def affine(transformer, x_t, t, cond, guidance):
        a = call(transformer, x_t, t, cond, torch.full_like(t, 1.0))
        b = x_t.sin() * t[:, None, None, None]
        return a + guidance[:, None, None, None] * b

    world._reference.call = affine
    rng = torch.Generator().manual_seed(0)
    cond = world.sample_conditions(2, rng)
    null = world.null_conditions(cond)
    x, sigma = 2 * world.sample_latents(2, rng), torch.tensor([0.5, 3.0])

    def at(value: float):
        return world._reference(x, sigma, cond, guidance=torch.full((2,), value))

    with torch.no_grad():
        for alpha in (0.0, 2.0, 6.5):
            guided = guided_denoiser(
                world.reference, x, sigma, cond, null, alpha, world.reference_pair
            )
            torch.testing.assert_close(guided, at(1 + alpha), rtol=1e-5, atol=1e-5)
        d_c, d_null = world.reference_pair(x, sigma, cond, null)
        torch.testing.assert_close(d_c, at(1.0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d_c - d_null, at(2.0) - at(1.0), rtol=1e-4, atol=1e-5)
        assert (at(2.0) - at(1.0)).abs().max() > 1e-3


def test_flux_dev_at_alpha_g_minus_1_is_the_teacher_at_g(world_cache):
    """The flux preset's alpha = g - 1 = 2.5 is the real (not affine) transformer at its
    guidance value g = 3.5 exactly: the peers' reference."""
    world = build("flux")
    assert world.guidance == 3.5
    rng = torch.Generator().manual_seed(0)
    cond = world.sample_conditions(2, rng)
    x, sigma = 2 * world.sample_latents(2, rng), torch.tensor([0.5, 3.0])
    with torch.no_grad():
        guided = guided_denoiser(
            world.reference, x, sigma, cond, world.null_conditions(cond), 2.5, world.reference_pair
        )
        want = world._reference(x, sigma, cond, guidance=torch.full((2,), 3.5))
        torch.testing.assert_close(guided, want, rtol=1e-5, atol=1e-5)
        assert (want - world.reference(x, sigma, cond)).abs().max() > 1e-3


def test_flux_schnell_refuses_cfg_before_loading(world_cache, tmp_path):
    from distar.worlds.builders import check_world

    schnell = {"world.reference": "tiny:flux_schnell", "loss.cfg_scale": 0.0}
    check_world(flow_config(tmp_path, "flux", **schnell))  # no CFG: fine
    with pytest.raises(ConfigError, match=r"loss.cfg_scale: got 2.0; allowed: 0 on FLUX.1-schnell"):
        check_world(flow_config(tmp_path, "flux", **{**schnell, "loss.cfg_scale": 2.0}))
    world = build("flux", **{"world.reference": "tiny:flux_schnell"})
    assert world.guidance is None and world.generator.denoiser.guidance is None


def weights(trainer):
    return {
        f"{name}.{k}": v.detach().clone()
        for name, module in trainer.modules().items()
        for k, v in module.named_parameters()
        if v.requires_grad
    }


@pytest.mark.parametrize(
    "world_name, flat",
    [
        ("sd35", {"loss.guidance": "in", "loss.cfg_scale": 2.0}),
        ("sd35", {"loss.guidance": "out", "loss.cfg_scale": 2.0, "world.assistant": "lora"}),
        ("flux", {"loss.guidance": "out", "loss.cfg_scale": 2.0, "world.dtype": "bf16"}),
        ("flux", {"loss.divergence": "kl", "loss.cfg_scale": 2.0, "world.assistant": "lora"}),
        ("flux", {"world.reference": "tiny:flux_schnell", "loss.cfg_scale": 0.0}),
    ],
    ids=["sd35-in", "sd35-out-lora", "flux-out-bf16", "flux-kl-lora", "flux-schnell"],
)
def test_di_star_steps_train_both_networks(world_cache, tmp_path, world_name, flat):
    cfg = flow_config(tmp_path, world_name, **flat, **{"loss.reward_scale": 10.0, "train.steps": 2})
    trainer = Trainer(cfg, callbacks=[JsonlLogger(tmp_path)])
    before = weights(trainer)
    assert all(v.dtype == torch.float32 for v in before.values())  # fp32 masters under bf16
    final = trainer.train()
    after = weights(trainer)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"generator", "assistant"}
    assert all(torch.isfinite(v).all() for v in after.values())
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [d for d in lines if d["kind"] == "train"]
    assert ("train/loss/cfg" in train[-1]) == (flat.get("loss.guidance") == "out")
    assert set(final) == {"reward", "reward_std"}


@pytest.mark.parametrize("world_name", WORLDS)
def test_lora_reference_is_the_base_and_the_gradient_reaches_x0(world_cache, world_name):
    """Adapters off = the plain reference bit for bit while the adapters are far from zero; the
    exact score term's gradient reaches x0 through the transformer's input, and differs from
    the detached estimator's."""
    world = build(world_name, **{"world.assistant": "lora"})
    plain = build(world_name)
    with torch.no_grad():
        for n, p in world.assistant.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    rng = torch.Generator().manual_seed(0)
    cond = world.sample_conditions(2, rng)
    x, sigma = 2 * world.sample_latents(2, rng), torch.tensor([0.4, 4.0])
    with torch.no_grad():
        assert torch.equal(world.reference(x, sigma, cond), plain.reference(x, sigma, cond))
        moved = world.assistant(x, sigma, cond) - world.reference(x, sigma, cond)
    assert moved.abs().max() > 1e-3
    x0 = world.generator(world.sample_latents(2, rng), cond).detach().requires_grad_(True)
    noise = torch.randn(x0.shape, generator=rng)
    cfg = Config.for_world(f"{world_name}-tiny").loss
    grads = {}
    for p in world.assistant.parameters():
        p.requires_grad_(False)
    for path in ("exact", "detached"):
        lcfg = cfg.__class__(**{**cfg.__dict__, "gradient_path": path})
        batch = GeneratorBatch(x0, sigma, noise, cond, world.null_conditions(cond))
        nets = Networks(world.reference, world.assistant, None, world.reference_pair)
        (grads[path],) = torch.autograd.grad(generator_loss(lcfg, batch, nets).per_sample.sum(), x0)
    assert grads["exact"].abs().sum() > 0
    rel = (grads["exact"] - grads["detached"]).norm() / grads["exact"].norm()
    assert rel > 1e-3
