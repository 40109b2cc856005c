import pytest
import torch

from distar.config.gmm import GMMWorldConfig
from distar.worlds.builders import build_world
from distar.worlds.gmm import stage0 as stage0_module
from distar.worlds.gmm.metrics import EvalSet, evaluate_samples
from distar.worlds.gmm.mixture import build_mixture, probability_flow
from distar.worlds.gmm.rewards import GMM_REWARDS, preferred_directions

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def world(world_cache):
    return build_world(GMMWorldConfig(), CPU)


def mixture(dim=2):
    return build_mixture(GMMWorldConfig(dim=dim), dtype=torch.float64)


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("sigma", [0.0, 0.05, 1.0, 10.0])
def test_denoiser_and_score_are_tweedie_of_the_exact_density(dim, sigma):
    m = mixture(dim)
    n = 256
    cond = torch.arange(n) % (m.null + 1)
    x = (4 * torch.randn(n, dim, dtype=torch.float64)).requires_grad_(True)
    sig = torch.full((n,), sigma, dtype=torch.float64)
    auto = torch.autograd.grad(m.log_prob(x, sig, cond).sum(), x)[0]
    torch.testing.assert_close(m.score(x.detach(), sig, cond), auto)
    torch.testing.assert_close(m.denoise(x.detach(), sig, cond), x.detach() + sigma**2 * auto)


def test_exact_moments_match_samples():
    m = mixture(3)
    cond = torch.full((400_000,), 1)
    x = m.sample(cond, torch.Generator().manual_seed(0))
    mean, cov = m.moments(1)
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.05, rtol=0)


def judge(world, x, cond, seed=0):
    return evaluate_samples(world.eval_set(x, cond, seed))


def test_exact_reference_samples_score_as_perfect(world):
    ref = world.evaluate_reference(2000, seed=0)
    assert ref["precision"] >= 0.995
    assert ref["coverage"] == 1.0 and ref["adherence"] >= 0.999
    assert abs(ref["mmd"]) < 2e-3 and ref["frechet"] < 0.01


def test_stage0_generator_is_close_to_the_reference(world):
    got = world.evaluate(2000, seed=0)
    assert got["precision"] >= 0.9 and got["coverage"] == 1.0 and got["adherence"] >= 0.97
    assert got["mmd"] < 0.02 and got["frechet"] < 0.05


def test_metrics_catch_collapse_off_support_and_wrong_prompt(world):
    cond = world.eval_prompts(500)
    m = world.mixture
    first_mode = torch.stack([torch.nonzero(m.owners() == p)[0, 0] for p in range(m.n_prompts)])
    collapsed = judge(world, m.means[first_mode[cond]] + 0.01 * torch.randn(len(cond), 2), cond)
    assert collapsed["coverage"] == 0.5 and collapsed["precision"] == 1.0
    assert collapsed["mmd"] > 0.05
    off = judge(world, 3 * m.means[first_mode[cond]], cond)
    assert off["precision"] == 0.0
    wrong = judge(world, m.means[first_mode[(cond + 1) % m.n_prompts]], cond)
    assert wrong["adherence"] == 0.0


@pytest.mark.parametrize("name", GMM_REWARDS.names())
def test_rewards_are_bounded_differentiable_and_hackable(world, name):
    m = world.mixture
    reward = GMM_REWARDS.get(name)(m, 1.0)
    cond = world.eval_prompts(200)
    x = m.sample(cond, torch.Generator().manual_seed(0)).requires_grad_(True)
    r = reward(x, cond)
    assert r.abs().max() <= 1.0
    (grad,) = torch.autograd.grad(r.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    on_support = EvalSet(x.detach(), cond, x.detach(), m, reward).on_support
    direction = preferred_directions(m)[cond]
    radius = m.means.norm(dim=1).max()
    at_mode, far = reward(radius * direction, cond), reward(1.6 * radius * direction, cond)
    assert (far > at_mode + 0.1).all()
    assert far.min() > r[on_support].max()  # the best reward lies off the support


def test_ode_map_reaches_the_reference():
    m = build_mixture(GMMWorldConfig())
    cond = torch.arange(4).repeat_interleave(1000)
    z = torch.randn(len(cond), 2, generator=torch.Generator().manual_seed(0))
    x = probability_flow(m.denoise, z, cond, steps=48)
    ref = m.sample(cond, torch.Generator().manual_seed(1))
    metrics = evaluate_samples(EvalSet(x, cond, ref, m, lambda a, c: a[:, 0]))
    assert metrics["precision"] > 0.99 and metrics["coverage"] == 1.0 and metrics["mmd"] < 3e-3


def test_stage0_is_cached_and_reused(world, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("stage 0 was fitted again")

    monkeypatch.setattr(stage0_module, "fit_generator", refuse)
    monkeypatch.setattr(stage0_module, "fit_assistant", refuse)
    again = build_world(GMMWorldConfig(), CPU)
    assert again.stage0_path == world.stage0_path
    for a, b in zip(again.generator.parameters(), world.generator.parameters(), strict=True):
        assert torch.equal(a, b)
    other = stage0_module.content_hash(GMMWorldConfig(mode_std=0.3))
    assert other != stage0_module.content_hash(GMMWorldConfig())
    assert stage0_module.content_hash(GMMWorldConfig(cache_dir="/x")) == stage0_module.content_hash(
        GMMWorldConfig()
    )


def test_stage0_depends_on_the_world_config_alone(tmp_path):
    """The cache is keyed by the world config: whichever run fits it first (a grid's trials race
    for the lock, each with its own training seed) must write the same weights. Before, the
    generator started from the global RNG its run had seeded (train.seed)."""
    cfg = GMMWorldConfig(
        stage0_steps=20,
        generator_width=32,
        assistant_width=32,
        depth=2,
        assistant_init="fitted",
        assistant_fit_steps=5,
    )
    fits = []
    for train_seed in (0, 1):
        torch.manual_seed(train_seed)  # what Trainer does before it builds the world
        folder = tmp_path / f"seed{train_seed}"
        built = build_world(GMMWorldConfig(**{**cfg.__dict__, "cache_dir": str(folder)}), CPU)
        fits.append(
            [
                p.detach().clone()
                for p in (*built.generator.parameters(), *built.assistant.parameters())
            ]
        )
    assert all(torch.equal(a, b) for a, b in zip(*fits, strict=True))


def test_plot_writes_a_png(world, tmp_path):
    path = world.plot(tmp_path / "s.png", 200, seed=0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fitted_assistant_and_higher_dimension_worlds_build_and_train(world_cache, tmp_path):
    from distar.config.tree import Config
    from distar.loop.trainer import Trainer

    cfg = Config().with_overrides(
        {
            "world.dim": 3,
            "world.assistant_init": "fitted",
            "world.assistant_fit_steps": 20,
            "world.stage0_steps": 20,
            "train.steps": 3,
            "train.batch_size": 16,
            "eval.samples_per_prompt": 20,
            "train.out_dir": str(tmp_path),
        }
    )
    trainer = Trainer(cfg)
    assert type(trainer.world.assistant).__name__ == "EDMDenoiser"
    metrics = trainer.train()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert (tmp_path / "plots" / "samples_step0000003.png").exists()


def test_copy_assistant_starts_as_an_exact_copy_of_the_reference(world):
    cond = world.eval_prompts(64)
    x = 3 * torch.randn(len(cond), 2)
    for s in (0.01, 1.0, 30.0):
        sigma = torch.full((len(cond),), s)
        fresh = type(world.assistant)(
            world.reference, 2, world.null_cond + 1, world.sigma_data, 16, 2
        )
        torch.testing.assert_close(fresh(x, sigma, cond), world.reference(x, sigma, cond))


def test_mmd_equals_the_full_kernel_matrix_formula():
    """The summed-kernel MMD (pdist for the within-sample terms, the reference term remembered)
    against Gretton et al.'s eq. 3 written out with full kernel matrices, in float64."""
    from distar.worlds.gmm.metrics import mmd2_unbiased

    def textbook(x, y, bandwidths):
        def k(a, b):
            d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
            return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

        n, m = len(x), len(y)
        kxx, kyy = k(x, x), k(y, y)
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return xx + yy - 2 * k(x, y).mean()

    g = torch.Generator().manual_seed(0)
    y = torch.randn(300, 2, generator=g, dtype=torch.float64)
    for shift in (0.0, 0.1, 1.0):
        x = torch.randn(200, 2, generator=g, dtype=torch.float64) + shift
        for _ in range(2):  # the second call takes the remembered reference term
            got = mmd2_unbiased(x, y, (0.3, 1.0, 4.0))
            assert got.item() == pytest.approx(textbook(x, y, (0.3, 1.0, 4.0)).item(), abs=1e-12)
    other = y + 0.5  # another reference is not mistaken for the remembered one
    assert mmd2_unbiased(x, other, (1.0,)).item() == pytest.approx(
        textbook(x, other, (1.0,)).item(), abs=1e-12
    )
