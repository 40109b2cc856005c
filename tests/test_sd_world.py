"""The sd15 / sdxl worlds on tiny random components written with save_pretrained and loaded
through the same code as a user's real directories (CPU, offline)."""

from __future__ import annotations

import json

import pytest
import torch

from distar.config.tree import Config
from distar.loop.trainer import Trainer
from distar.method.losses import GeneratorBatch, Networks, generator_loss
from distar.runtime.callbacks import JsonlLogger
from distar.worlds.sd.loading import WorldLoadError
from distar.worlds.sd.tiny_pipelines import resolve

WORLDS = ("sd15", "sdxl")


def sd_config(tmp_path, world: str, **flat) -> Config:
    base = {
        "train.out_dir": str(tmp_path),
        "train.batch_size": 2,
        "train.log_every": 1,
        "eval.plot": False,
        "eval.samples_per_prompt": 2,
        "world.eval_prompts": 2,
        "eval.benchmarks": "",  # the Trainer alone (the benchmarks are tested with their runner)
    }
    return Config.for_world(f"{world}-tiny", {**base, **flat})


def weights(trainer):
    return {
        f"{name}.{k}": v.detach().clone()
        for name, module in trainer.modules().items()
        for k, v in module.named_parameters()
        if v.requires_grad
    }


# ---- the EDM view of the scheduler ------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_edm_denoiser_inverts_the_schedulers_own_noising(prediction_type):
    """A perfect network (the true eps, or the scheduler's own velocity) must give back x0:
    D(x_t / sqrt(a_t); sigma_t) = x0 with x_t = scheduler.add_noise(x0, eps, t)."""
    from diffusers import DDPMScheduler, EulerDiscreteScheduler

    from distar.t2i.edm import DDPMSchedule, edm_denoise

    sched = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
    )
    schedule = DDPMSchedule(sched.alphas_cumprod)
    euler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    torch.testing.assert_close(
        schedule.sigmas.float(), euler.sigmas[:-1].flip(0).float(), rtol=1e-5, atol=1e-6
    )
    torch.manual_seed(0)
    t = torch.tensor([0, 20, 399, 625, 980, 999])
    x0, eps = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
    x_t = sched.add_noise(x0, eps, t)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    sigma = schedule.sigmas[t].float()
    torch.testing.assert_close(schedule.sigma_to_t(sigma), t.float(), atol=1e-3, rtol=0)
    target = eps if prediction_type == "epsilon" else sched.get_velocity(x0, eps, t)

    def net(scaled_x, tt, cond):
        torch.testing.assert_close(scaled_x, x_t, rtol=1e-4, atol=1e-4)  # c_in x = x_t
        return target

    d = edm_denoise(net, prediction_type, x_t / a.sqrt(), sigma, t.float(), None)
    torch.testing.assert_close(d, x0, rtol=1e-4, atol=1e-4)


def test_one_step_generator_is_dmd2s_map(world_cache):
    """G(z) = D(sqrt(1 + s^2) z; s) at t_g equals DMD2's x0 = (z - sqrt(1 - a) eps(z, t_g)) /
    sqrt(a): the UNet sees z itself at t_g (not sigma_g z)."""
    from distar.worlds.builders import build_world

    cfg = Config.for_world("sdxl-tiny", {"world.generator_timestep": 399})
    world = build_world(cfg.world, torch.device("cpu"))
    gen = world.generator
    z = torch.randn(2, *world.latent_shape(), generator=torch.Generator().manual_seed(1))
    cond = world.text.encode(["a red fox", "a lighthouse"])
    seen = {}
    hook = gen.denoiser.unet.conv_in.register_forward_pre_hook(
        lambda m, args: seen.setdefault("input", args[0].detach().clone())
    )
    with torch.no_grad():
        x0 = gen(z, cond)
    hook.remove()
    torch.testing.assert_close(seen["input"], z, rtol=1e-5, atol=1e-5)
    a = world.schedule.alphas_cumprod[399].float()
    with torch.no_grad():
        eps = gen.denoiser.unet(z, torch.full((2,), 399.0), **cond.unet_kwargs(z.dtype)).sample
    torch.testing.assert_close(x0, (z - (1 - a).sqrt() * eps) / a.sqrt(), rtol=1e-4, atol=1e-4)
    assert abs(gen.sigma_g - 1.1606) < 1e-3


# ---- conditions ---------------------------------------------------------------------------------
def test_sdxl_conditions_and_their_unconditional_counterparts(world_cache):
    from distar.worlds.builders import build_world

    world = build_world(Config.for_world("sdxl-tiny").world, torch.device("cpu"))
    cond = world.sample_conditions(3, torch.Generator().manual_seed(0))
    assert len(cond) == 3 and cond.embeds.shape[:2] == (3, 77) and cond.embeds.shape[2] == 64
    assert cond.pooled.shape == (3, 32)
    assert cond.time_ids.tolist()[0] == [64, 64, 0, 0, 64, 64]
    null = world.null_conditions(cond)
    assert not null.embeds.any() and not null.pooled.any()
    assert torch.equal(null.time_ids, cond.time_ids)
    assert len(cond[1:]) == 2 and torch.equal(cond[1:].embeds, cond.embeds[1:])
    empty = Config.for_world("sdxl-tiny", {"world.uncond": "empty"})
    world_empty = build_world(empty.world, torch.device("cpu"))
    null = world_empty.null_conditions(cond)
    assert torch.equal(null.embeds[0], world_empty.text.encode([""]).embeds[0])


def test_batched_cfg_pair_equals_two_reference_calls(world_cache):
    from distar.worlds.builders import build_world

    world = build_world(Config.for_world("sd15-tiny").world, torch.device("cpu"))
    rng = torch.Generator().manual_seed(0)
    cond = world.sample_conditions(2, rng)
    null = world.null_conditions(cond)
    x, sigma = 2 * world.sample_latents(2, rng), torch.tensor([0.5, 3.0])
    with torch.no_grad():
        d_c, d_null = world.reference_pair(x, sigma, cond, null)
        torch.testing.assert_close(d_c, world.reference(x, sigma, cond), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(d_null, world.reference(x, sigma, null), rtol=1e-4, atol=1e-5)
    assert (d_c - d_null).abs().max() > 1e-4


# ---- DI* steps ----------------------------------------------------------------------------------
@pytest.mark.parametrize("world_name", WORLDS)
@pytest.mark.parametrize(
    "loss",
    [
        {"loss.divergence": "score", "loss.guidance": "in", "loss.cfg_scale": 2.0},
        {"loss.divergence": "score", "loss.guidance": "out", "loss.cfg_scale": 2.0},
        {"loss.divergence": "kl", "loss.guidance": "in", "loss.cfg_scale": 2.0},
    ],
    ids=["score-in", "score-out", "kl-in"],
)
def test_di_star_steps_train_both_networks(world_cache, tmp_path, world_name, loss):
    cfg = sd_config(tmp_path, world_name, **loss, **{"loss.reward_scale": 10.0, "train.steps": 2})
    trainer = Trainer(cfg, callbacks=[JsonlLogger(tmp_path)])
    before = weights(trainer)
    final = trainer.train()
    after = weights(trainer)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"generator", "assistant"}
    assert all(torch.isfinite(v).all() for v in after.values())
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [d for d in lines if d["kind"] == "train"]
    assert {"train/loss/divergence", "train/loss/reward", "train/reward"} <= train[-1].keys()
    assert ("train/loss/cfg" in train[-1]) == (loss["loss.guidance"] == "out")
    assert set(final) == {"reward", "reward_std"}


@pytest.mark.parametrize("assistant", ["copy", "lora"])
def test_exact_gradient_reaches_the_generator_through_the_unet_input(
    world_cache, tmp_path, assistant
):
    """Theorem 3.1's path: the score term's gradient flows through the assistant's (and the
    reference's) UNet input back to x0; the detached estimator gives a different gradient."""
    cfg = sd_config(tmp_path, "sd15", **{"world.assistant": assistant, "loss.cfg_scale": 1.0})
    trainer = Trainer(cfg)
    world = trainer.world
    if assistant == "lora":  # B = 0 makes the assistant equal to the reference: move it away
        with torch.no_grad():
            for name, p in world.assistant.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    rng = torch.Generator().manual_seed(0)
    cond = world.sample_conditions(2, rng)
    z = world.sample_latents(2, rng)
    x0 = world.generator(z, cond).detach().requires_grad_(True)
    sigma, noise = torch.tensor([0.3, 2.0]), torch.randn(x0.shape, generator=rng)
    grads, unet_input_grads = {}, {}
    unet = world.assistant.unet
    for path in ("exact", "detached"):
        seen: list = []
        hook = unet.conv_in.register_full_backward_hook(
            lambda m, gi, go, seen=seen: seen.append(gi[0])
        )
        lcfg = cfg.loss.__class__(**{**cfg.loss.__dict__, "gradient_path": path})
        for p in trainer.method.params["assistant"]:
            p.requires_grad_(False)
        batch = GeneratorBatch(x0, sigma, noise, cond, world.null_conditions(cond))
        nets = Networks(world.reference, world.assistant, None, world.reference_pair)
        out = generator_loss(lcfg, batch, nets)
        (grads[path],) = torch.autograd.grad(out.per_sample.sum(), x0)
        for p in trainer.method.params["assistant"]:
            p.requires_grad_(True)
        hook.remove()
        unet_input_grads[path] = [g for g in seen if g is not None]
    assert unet_input_grads["exact"] and not unet_input_grads["detached"]
    assert grads["exact"].abs().sum() > 0 and grads["detached"].abs().sum() > 0
    rel = (grads["exact"] - grads["detached"]).norm() / grads["exact"].norm()
    assert rel > 1e-3


def test_lora_assistant_off_is_the_reference_exactly_with_checkpointing(world_cache):
    """Adapters off = the reference UNet, bit for bit, in value and in input gradient, while
    the adapters themselves are far from zero and gradient checkpointing recomputes blocks."""
    from distar.worlds.builders import build_world

    cfg = Config.for_world("sdxl-tiny", {"world.assistant": "lora"})
    world = build_world(cfg.world, torch.device("cpu"))
    plain = build_world(Config.for_world("sdxl-tiny").world, torch.device("cpu"))
    lora = [p for n, p in world.assistant.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad and p.dtype == torch.float32 for p in lora)
    assert {n for n, p in world.assistant.named_parameters() if p.requires_grad} == {
        n for n, p in world.assistant.named_parameters() if "lora_" in n
    }
    with torch.no_grad():
        for n, p in world.assistant.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    rng = torch.Generator().manual_seed(0)
    cond = world.sample_conditions(2, rng)
    x = (2 * world.sample_latents(2, rng)).requires_grad_(True)
    sigma = torch.tensor([0.4, 4.0])
    for p in lora:
        p.requires_grad_(False)
    ref = world.reference(x, sigma, cond)
    ast = world.assistant(x, sigma, cond)
    (g_mixed,) = torch.autograd.grad((ref * ast.detach().sin()).sum() + ast.square().sum(), x)
    x2 = x.detach().requires_grad_(True)
    ref_plain = plain.reference(x2, sigma, cond)
    ast2 = world.assistant(x2, sigma, cond)
    (g_plain,) = torch.autograd.grad(
        (ref_plain * ast2.detach().sin()).sum() + ast2.square().sum(), x2
    )
    assert torch.equal(ref, ref_plain)
    assert (ast - ref).abs().max() > 1e-3
    torch.testing.assert_close(g_mixed, g_plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("assistant", ["copy", "lora"])
def test_sd_checkpoint_resume_is_exact(world_cache, tmp_path, assistant):
    flat = {"world.assistant": assistant, "loss.reward_scale": 1.0, "loss.cfg_scale": 1.0}
    straight = Trainer(sd_config(tmp_path / "a", "sdxl", **flat, **{"train.steps": 4}))
    straight.train()
    first = Trainer(sd_config(tmp_path / "b", "sdxl", **flat, **{"train.steps": 2}))
    first.train()
    resumed = Trainer(sd_config(tmp_path / "b", "sdxl", **flat, **{"train.steps": 4}))
    resumed.resume(tmp_path / "b" / "checkpoints")
    resumed.train()
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if assistant == "lora":
        from safetensors.torch import load_file

        saved = load_file(str(tmp_path / "b/checkpoints/step_0000004/assistant.safetensors"))
        assert saved and all("lora_" in k for k in saved)  # the shared base is not copied


def test_chunked_generator_step_equals_the_whole_batch(world_cache, tmp_path):
    flat = {"loss.reward_scale": 1.0, "loss.cfg_scale": 1.0, "train.steps": 1}
    whole = Trainer(sd_config(tmp_path / "a", "sd15", **flat))
    chunked = Trainer(sd_config(tmp_path / "b", "sd15", **flat, **{"train.generator_chunk": 1}))
    grads = []
    for trainer in (whole, chunked):
        trainer.method.opt_generator.step = lambda: None  # keep the gradient for comparison
        trainer.method.opt_generator.zero_grad = lambda set_to_none=True: None
        trainer.train_step()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.method.params["generator"]]))
    # equal up to fp32 summation order (a chunk left out or mis-scaled is off by O(1))
    assert grads[0].abs().max() > 0
    assert (grads[1] - grads[0]).abs().max() < 2e-3 * grads[0].abs().max()


# ---- loading ------------------------------------------------------------------------------------
def test_missing_or_malformed_directories_fail_before_loading(world_cache, tmp_path):
    from distar.worlds.builders import build_world

    cpu = torch.device("cpu")
    with pytest.raises(WorldLoadError, match="world.reference is not set"):
        build_world(Config.for_world("sdxl", {"world.reference": ""}).world, cpu)
    missing = tmp_path / "nowhere"
    with pytest.raises(WorldLoadError, match=f"{missing} is not a directory"):
        build_world(Config.for_world("sdxl", {"world.reference": str(missing)}).world, cpu)
    sd15_dir = resolve("tiny:sd15")
    with pytest.raises(WorldLoadError, match="lacks text_encoder_2/, tokenizer_2/"):
        build_world(Config.for_world("sdxl-tiny", {"world.reference": sd15_dir}).world, cpu)
    with pytest.raises(WorldLoadError, match="world.reward_model"):
        build_world(Config.for_world("sd15-tiny", {"world.reward_model": str(missing)}).world, cpu)
    bad = tmp_path / "gen.txt"
    bad.write_text("x")
    with pytest.raises(WorldLoadError, match="expected a UNet state dict"):
        build_world(Config.for_world("sd15-tiny", {"world.generator_init": str(bad)}).world, cpu)


def test_an_fp16_variant_only_folder_loads_and_an_empty_one_is_named(world_cache, tmp_path, capsys):
    """A download with ``--include "*fp16*"`` holds only ``*.fp16.safetensors``: every model
    folder loads its fp16 variant (said on stderr; upcast to fp32 masters where trained), and a
    folder without weights is refused naming it, before anything loads."""
    import shutil

    from diffusers import StableDiffusionXLPipeline

    from distar.worlds.builders import build_world

    original = resolve("tiny:sdxl")
    folder = tmp_path / "sdxl-fp16"
    pipe = StableDiffusionXLPipeline.from_pretrained(original, local_files_only=True)
    pipe.to(torch.float16).save_pretrained(folder, variant="fp16")
    names = {f.name for f in folder.rglob("*") if f.is_file()}
    assert "diffusion_pytorch_model.fp16.safetensors" in names and "model.fp16.safetensors" in names
    assert not {"diffusion_pytorch_model.safetensors", "model.safetensors"} & names
    cfg = Config.for_world("sdxl-tiny", {"world.reference": str(folder)}).world
    world = build_world(cfg, torch.device("cpu"))
    assert "holds only fp16 weights" in capsys.readouterr().err
    got = dict(world.generator.denoiser.unet.named_parameters())
    for k, v in pipe.unet.named_parameters():
        assert got[k].dtype == torch.float32 and torch.equal(got[k], v.float())
    for f in (folder / "text_encoder_2").glob("model*"):
        f.unlink()
    with pytest.raises(WorldLoadError, match=r"text_encoder_2 holds no weights"):
        build_world(cfg, torch.device("cpu"))
    shutil.rmtree(folder)


def test_generator_init_from_a_state_dict_file(world_cache, tmp_path):
    """DMD2 ships the one-step UNet as a state dict: it loads into the reference's UNet config
    (fp16 upcast to fp32 masters); a file for another architecture is refused."""
    from safetensors.torch import save_file

    from distar.worlds.builders import build_world
    from distar.worlds.sd.loading import load_unet

    unet = load_unet(resolve("tiny:sd15"), torch.float16)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    file = tmp_path / "one_step_unet.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(file))
    world = build_world(
        Config.for_world("sd15-tiny", {"world.generator_init": str(file)}).world,
        torch.device("cpu"),
    )
    got = dict(world.generator.denoiser.unet.named_parameters())
    for k, v in unet.named_parameters():
        assert got[k].dtype == torch.float32 and torch.equal(got[k], v.float())
    with pytest.raises(WorldLoadError, match="does not fit the reference"):
        build_world(
            Config.for_world("sdxl-tiny", {"world.generator_init": str(file)}).world,
            torch.device("cpu"),
        )


def test_cli_smoke_test_on_a_tiny_text_world(world_cache, tmp_path, capsys):
    from distar.cli.train import main

    assert main(["--world", "sdxl-tiny", "--smoke-test", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    assert (tmp_path / "plots" / "samples_step0000004.png").stat().st_size > 0


@pytest.mark.parametrize("weighting", ["uniform", "dmd_normalised"])
def test_lora_generator_step_leaves_the_adapters_frozen(world_cache, tmp_path, weighting):
    """peft's enable_adapters() sets requires_grad on the adapters: the reference's adapters-off
    calls must not unfreeze them inside the generator step (they would collect gradients, and a
    flag changed between forward and backward breaks checkpoint recomputation)."""
    flat = {"world.assistant": "lora", "loss.weighting": weighting, "loss.cfg_scale": 2.0}
    trainer = Trainer(sd_config(tmp_path, "sdxl", **flat, **{"loss.reward_scale": 1.0}))
    trainer.method.assistant_update(0)
    lora = trainer.method.params["assistant"]
    assert all(p.grad is None and p.requires_grad for p in lora)
    trainer.method.generator_update(0)
    assert all(p.grad is None and p.requires_grad for p in lora)
    assert all(p.grad is None for p in trainer.method.params["generator"])  # freed after its step


def test_pickscore_text_embedding_ignores_the_padding_mask(world_cache):
    """The scorer feeds input ids only (no host sync for the mask): CLIP's causal text tower
    pooled at the end token gives the same embedding as with the padding mask."""
    from pathlib import Path

    from distar.rewards.clip_common import normalised, pooled
    from distar.rewards.clip_scorers import ClipPairScorer, load_clip

    model, tokenizer, processor = load_clip(Path(resolve("tiny:pickscore")))
    scorer = ClipPairScorer("pickscore", model, tokenizer, processor)
    prompts = ["a red fox", "an oil painting of a lighthouse at dawn, highly detailed"]
    tokens = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        masked = normalised(pooled(model.get_text_features(**tokens)))
        torch.testing.assert_close(scorer.text_embeddings(prompts), masked)


def test_evaluate_a_world_generator_from_a_diffusers_unet_directory(world_cache, tmp_path):
    """``python -m distar.cli.evaluate --world sd15-tiny --set world.generator_init=DIR``: a
    one-step UNet directory loads as the generator; here the reference's own UNet, so the numbers
    equal the default generator's."""
    from pathlib import Path

    from distar.cli.evaluate import build_parser, resolve_job
    from distar.config.tree import ConfigError
    from distar.evaluation.standalone import run_evaluation

    parti = Path(__file__).resolve().parents[2] / "shared" / "data" / "PartiPrompts.tsv"
    base = [
        "--tiny",
        "--world",
        "sd15-tiny",
        "--benchmark",
        "parti:3",
        "--prompts",
        f"parti={parti}",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'e.db'}",
    ]
    unet_dir = f"{resolve('tiny:sd15')}/unet"
    runs = []
    for extra in ([], ["--set", f"world.generator_init={unet_dir}"]):
        job = resolve_job(build_parser().parse_args(base + extra))
        runs.append(run_evaluation(job, tmp_path / str(len(runs)))[1][0])
    assert runs[1].summary["parti/pickscore"] == pytest.approx(runs[0].summary["parti/pickscore"])
    with pytest.raises(ConfigError, match="no text-to-image generator"):
        resolve_job(build_parser().parse_args(["--world", "gmm", "--benchmark", "parti:3"]))


def test_reusing_the_generator_samples_saves_a_forward_and_trains_on_them(world_cache, tmp_path):
    """optim.reuse_generator_samples (on in the SD presets): the generator step runs first and
    the assistant round trains on its very samples, detached -- one generator forward per step
    instead of two; off, the assistant round draws its own."""
    from distar.loop.trainer import Trainer

    forwards = {}
    for reuse in (False, True):
        flat = {
            "optim.reuse_generator_samples": reuse,
            "train.out_dir": str(tmp_path),
            "eval.benchmarks": "",
        }
        trainer = Trainer(Config.for_world("sd15-tiny", {**flat, "train.device": "cpu"}))
        outputs, fed = [], []
        trainer.world.generator.register_forward_hook(
            lambda m, i, o, outputs=outputs: outputs.append(o.detach())
        )

        def assistant_update(step, samples=None, update=trainer.method.assistant_update, fed=fed):
            fed.append(samples)
            return update(step, samples)

        trainer.method.assistant_update = assistant_update
        trainer.train_step()
        forwards[reuse] = len(outputs)
        assert (fed[0] is not None) == reuse
        if reuse:
            assert torch.equal(fed[0][0], outputs[0]) and not fed[0][0].requires_grad
    assert forwards == {False: 2, True: 1}
    assert Config.for_world("sdxl").optim.reuse_generator_samples
    assert not Config.for_world("gmm").optim.reuse_generator_samples


def test_guards_a_real_run_needs(world_cache, capsys):
    """fp16 on a VAE that says force_upcast is refused before loading; noise ranges beyond the
    reference's schedule are refused; an empty generator_init on a real folder warns."""
    from distar.config.tree import ConfigError
    from distar.loop.trainer import Trainer
    from distar.worlds.builders import build_world

    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="world.vae_dtype: got 'fp16'.*force_upcast: true"):
        build_world(Config.for_world("sdxl-tiny", {"world.vae_dtype": "fp16"}).world, cpu)
    for key, value, allowed in (
        ("noise.generator.sigma_max", 80.0, "<= 14.61"),
        ("noise.assistant.sigma_min", 0.002, ">= 0.02917"),
    ):
        config = Config.for_world(
            "sd15-tiny", {key: value, "train.device": "cpu", "eval.benchmarks": ""}
        )
        with pytest.raises(ConfigError, match=f"{key}: got {value}; allowed: {allowed}"):
            Trainer(config)
    capsys.readouterr()
    folder = resolve("tiny:sd15")  # a plain folder, as a user's download is
    build_world(Config.for_world("sd15-tiny", {"world.reference": folder}).world, cpu)
    err = capsys.readouterr().err
    assert "world.generator_init is empty" in err and "tianweiy/DMD2" in err


def test_reward_units_and_an_fp32_logit_scale(world_cache):
    """world.reward_units: the cosine (the paper's tables' PickScore, the default) or the logit
    (scale x cosine); the learnt scale stays fp32 when the towers are cast to bf16."""
    import dataclasses
    import math

    from distar.rewards.pickscore import load_pickscore
    from distar.worlds.builders import build_world

    scorer = load_pickscore(resolve("tiny:pickscore"))
    with torch.no_grad():
        scorer.model.logit_scale.fill_(math.log(100.0))
    assert float(scorer.model.logit_scale.to(torch.bfloat16).float().exp()) < 98.9  # the trap
    scorer.cast(torch.bfloat16)
    assert scorer.model.text_projection.weight.dtype == torch.bfloat16
    assert float(scorer.scale()) == pytest.approx(100.0, rel=1e-6)

    cfg = Config.for_world("sd15-tiny", {"world.dtype": "bf16"}).world
    assert cfg.reward_units == "cosine"
    world = build_world(cfg, torch.device("cpu"))
    assert world.scorer.model.logit_scale.dtype == torch.float32
    cond = world.sample_conditions(2, torch.Generator().manual_seed(0))
    x0 = world.sample_latents(2, torch.Generator().manual_seed(1))
    cosine = world.reward(x0, cond)
    assert cosine.abs().max() <= 1.0 + 1e-3
    world.config = dataclasses.replace(cfg, reward_units="logit")
    logit = world.reward(x0, cond)
    torch.testing.assert_close(logit, cosine * world.scorer.scale(), rtol=1e-5, atol=1e-5)
