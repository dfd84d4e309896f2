"""The sampling loop: reproducibility, the per-step hook, analytic checks with the optimal denoiser."""

from __future__ import annotations

import copy

import diffusers
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fitdiff.diffusion import (
    LDM_LINEAR,
    PREDICTION_TYPES,
    Sampler,
    SampleResult,
    StepState,
    alphas_cumprod,
    cfg_model_fn,
    ddim_scheduler,
    ddpm_scheduler,
    dpm_scheduler,
    output_from_eps,
    predict_x0,
    training_scheduler,
)

TABLE = alphas_cumprod(training_scheduler())
SHAPE = (4, 3, 2, 2)
#: per-channel mean and standard deviation of the Gaussian "data" x0 ~ N(mu, sigma^2)
MU = torch.tensor([1.5, -0.5, 0.0]).view(1, 3, 1, 1)
SIGMA = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)


def gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The optimal (MMSE) noise predictor E[eps | x_t] for x0 ~ N(MU, SIGMA^2): closed form."""
    ab = TABLE.to(x.device)[t].to(x.dtype).view(-1, 1, 1, 1)
    mu, var = MU.to(x), SIGMA.to(x) ** 2
    return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * var + 1 - ab)


def gaussian_model(prediction_type: str):
    """The optimal model for ``prediction_type`` (the optimal eps converted)."""
    def model_fn(x, t):
        return output_from_eps(prediction_type, gaussian_eps(x, t), x, t, TABLE)
    return model_fn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SAMPLERS = {
    "ddim": lambda: Sampler(ddim_scheduler(), 20),
    "ddim_eta1": lambda: Sampler(ddim_scheduler(), 20, eta=1.0),
    "ddpm": lambda: Sampler(ddpm_scheduler(), 20),
    "dpm": lambda: Sampler(dpm_scheduler(), 10),
}
STOCHASTIC = {"ddim_eta1", "ddpm"}


# ------------------------------------------------------------------------------------------ reproducibility


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_fixed_generator_is_bit_reproducible(name):
    sampler = SAMPLERS[name]()
    torch.manual_seed(1)
    first = sampler.sample(gaussian_eps, SHAPE, _gen(7))
    torch.manual_seed(2)  # the global RNG plays no part
    second = sampler.sample(gaussian_eps, SHAPE, _gen(7))
    assert torch.equal(first.x0, second.x0) and torch.isfinite(first.x0).all()
    assert not torch.equal(first.x0, sampler.sample(gaussian_eps, SHAPE, _gen(8)).x0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_step_noise_comes_from_the_generator(name):
    sampler = SAMPLERS[name]()
    x_T = torch.randn(SHAPE, generator=_gen(0))
    a = sampler.sample(gaussian_eps, None, _gen(1), x_T=x_T).x0
    b = sampler.sample(gaussian_eps, None, _gen(2), x_T=x_T).x0
    assert torch.equal(a, b) == (name not in STOCHASTIC)


def test_the_configured_scheduler_is_never_modified():
    scheduler = ddim_scheduler()
    reference = copy.deepcopy(scheduler)
    sampler = Sampler(scheduler, 10)
    sampler.sample(gaussian_model("v_prediction"), SHAPE, _gen(), "v_prediction")
    assert scheduler.config == reference.config and scheduler.num_inference_steps is None
    assert scheduler.config.prediction_type == "epsilon"


def test_per_sample_generators_make_samples_independent_of_the_batch():
    sampler = Sampler(ddpm_scheduler(), 10)
    both = sampler.sample(gaussian_eps, (2, 3, 2, 2), [_gen(10), _gen(11)]).x0
    alone = sampler.sample(gaussian_eps, (1, 3, 2, 2), [_gen(11)]).x0
    torch.testing.assert_close(both[1:], alone)


# ------------------------------------------------------------------------------------------------ the hook


class Recorder:
    def __init__(self, replace_with=None, needs_grad: bool = False) -> None:
        self.states: list[StepState] = []
        self.replace_with = replace_with
        self.needs_grad = needs_grad

    def __call__(self, state: StepState):
        self.states.append(state)
        return None if self.replace_with is None else self.replace_with(state)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_hook_is_called_once_per_step_with_the_timesteps(name):
    sampler = SAMPLERS[name]()
    hook = Recorder()
    result = sampler.sample(gaussian_model("v_prediction"), SHAPE, _gen(), "v_prediction", hook=hook)
    assert [s.t for s in hook.states] == result.timesteps == sampler.timesteps()
    assert [s.index for s in hook.states] == list(range(sampler.num_inference_steps))
    state = hook.states[3]
    assert state.num_steps == sampler.num_inference_steps and state.prediction_type == "v_prediction"
    assert state.alpha_bar_t == TABLE[state.t].item()
    torch.testing.assert_close(state.pred_x0, predict_x0("v_prediction", state.output, state.x_t, state.t, TABLE))
    torch.testing.assert_close(state.pred_eps, gaussian_eps(state.x_t, torch.tensor([state.t])), atol=1e-5, rtol=1e-5)
    assert not state.x_t.requires_grad and not state.output.requires_grad


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("name", ["ddim", "ddim_eta1", "ddpm", "dpm"])
def test_hook_output_is_used_an_oracle_lands_on_its_x0(name, prediction_type):
    """A hook returning the output that predicts a known x0 drives every sampler to that x0."""
    x0 = torch.randn(SHAPE, generator=_gen(5))
    sampler = SAMPLERS[name]()
    if name.startswith("ddim"):  # the preset stops at alpha_bar_0; end at alpha_bar = 1 for this check
        sampler = Sampler(ddim_scheduler(set_alpha_to_one=True), 20, eta=sampler.eta)
    hook = Recorder(lambda s: s.output_from_x0(x0))
    result = sampler.sample(lambda x, t: torch.zeros_like(x), SHAPE, _gen(), prediction_type, hook=hook)
    torch.testing.assert_close(result.x0, x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(result.pred_x0, x0, rtol=0, atol=1e-5)


def test_ddim_preset_ends_at_alpha_bar_0_along_the_initial_noise():
    """Deterministic DDIM with an oracle keeps eps_hat fixed: x = sqrt(ab_0) x0 + sqrt(1 - ab_0) eps_T."""
    x0 = torch.randn(SHAPE, generator=_gen(5), dtype=torch.float64)
    x_T = torch.randn(SHAPE, generator=_gen(6), dtype=torch.float64)
    result = Sampler(ddim_scheduler(), 50).sample(lambda x, t: torch.zeros_like(x), None,
                                                  hook=lambda s: s.output_from_x0(x0), x_T=x_T)
    a_T, a_0 = TABLE[981], TABLE[0]
    eps_T = (x_T - a_T.sqrt() * x0) / (1 - a_T).sqrt()
    torch.testing.assert_close(result.x0, a_0.sqrt() * x0 + (1 - a_0).sqrt() * eps_T, rtol=0, atol=1e-6)


def test_a_needs_grad_hook_sees_a_graph_to_x_t():
    weight = torch.nn.Parameter(torch.tensor(0.3))

    def model_fn(x, t):
        return weight * x

    def check(state: StepState):
        assert state.x_t.requires_grad and state.x_t.is_leaf
        (grad,) = torch.autograd.grad(state.pred_x0.sum(), state.x_t)
        a, s = state.alpha_bar_t ** 0.5, (1 - state.alpha_bar_t) ** 0.5
        torch.testing.assert_close(grad, torch.full_like(grad, (1 - s * 0.3) / a))  # d/dx (x - s w x) / a
        return None

    hook = Recorder(check, needs_grad=True)
    result = Sampler(ddim_scheduler(), 5).sample(model_fn, SHAPE, _gen(), hook=hook)
    assert len(hook.states) == 5 and not result.x0.requires_grad and weight.grad is None


def test_gradient_guidance_through_the_hook_pulls_samples_to_a_target():
    """The ``eps`` rule of docs/DESIGN.md §6 on the analytic model: samples move towards the target."""
    goal = torch.full(SHAPE, 3.0)

    def guide(state: StepState):
        loss = (state.pred_x0 - goal).square().sum()
        (grad,) = torch.autograd.grad(loss, state.x_t)
        return state.output_from_eps(state.pred_eps.detach() + 1.0 * (1 - state.alpha_bar_t) ** 0.5 * grad)

    guide.needs_grad = True
    sampler = Sampler(ddim_scheduler(), 20)
    free = sampler.sample(gaussian_eps, SHAPE, _gen(3)).x0
    guided = sampler.sample(gaussian_eps, SHAPE, _gen(3), hook=guide).x0
    assert (guided - goal).abs().mean() < 0.5 * (free - goal).abs().mean()


def test_x0_guidance_without_the_denoiser_graph_pulls_samples_to_a_target():
    """The ``x0`` rule of docs/DESIGN.md §6: a gradient step on x0_hat alone, the output recomputed."""
    goal = torch.full(SHAPE, 3.0)

    def guide(state: StepState):
        assert not state.output.requires_grad
        with torch.enable_grad():
            x0 = state.pred_x0.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad((x0 - goal).square().sum(), x0)
        step = 1.0 * grad / grad.square().mean().sqrt()
        return state.output_from_x0(state.pred_x0 - step)

    sampler = Sampler(ddim_scheduler(), 20)
    free = sampler.sample(gaussian_eps, SHAPE, _gen(3)).x0
    guided = sampler.sample(gaussian_eps, SHAPE, _gen(3), hook=guide).x0
    assert (guided - goal).abs().mean() < 0.5 * (free - goal).abs().mean()


# ----------------------------------------------------------------------------------- analytic sampling


def _ddim_reference(x_T: torch.Tensor, timesteps: list[int], final_alpha_bar: float) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12 with eta = 0) written out, on the analytic model."""
    x = x_T
    for i, t in enumerate(timesteps):
        ab, ab_prev = TABLE[t], (TABLE[timesteps[i + 1]] if i + 1 < len(timesteps) else final_alpha_bar)
        eps = gaussian_eps(x, torch.tensor([t]))
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        x = ab_prev ** 0.5 * x0 + (1 - ab_prev) ** 0.5 * eps
    return x


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_matches_the_written_out_recursion(prediction_type):
    x_T = torch.randn(SHAPE, generator=_gen(2), dtype=torch.float64)
    sampler = Sampler(ddim_scheduler(), 50)
    result = sampler.sample(gaussian_model(prediction_type), None, x_T=x_T, prediction_type=prediction_type)
    expected = _ddim_reference(x_T, sampler.timesteps(), TABLE[0].item())
    torch.testing.assert_close(result.x0, expected, rtol=1e-6, atol=1e-6)  # diffusers: float32 coefficients


@pytest.mark.parametrize(("make", "steps", "std_tol", "prediction_type"), [
    *[(ddim_scheduler, 50, 0.08, p) for p in PREDICTION_TYPES],
    *[(dpm_scheduler, 25, 0.12, p) for p in PREDICTION_TYPES],
    (ddim_scheduler, 200, 0.03, "epsilon"),
    (ddpm_scheduler, 200, 0.06, "epsilon"),
])
def test_samples_of_the_optimal_denoiser_have_the_data_distribution(make, steps, std_tol, prediction_type):
    """x0 ~ N(mu, sigma^2) per channel: the samples' mean and std match (few-step DDIM shrinks low std)."""
    result = Sampler(make(), steps).sample(gaussian_model(prediction_type), (2048, 3, 2, 2), _gen(0),
                                           prediction_type, dtype=torch.float64)
    mean, std = result.x0.mean(dim=(0, 2, 3)), result.x0.std(dim=(0, 2, 3))
    sigma = SIGMA.flatten().double()
    assert ((mean - MU.flatten()).abs() < 0.05 * sigma + 0.02).all(), mean
    assert ((std / sigma - 1).abs() < std_tol).all(), std


# ----------------------------------------------------------------------------------------------- details


def test_result_trajectory_dtype_and_progress():
    result = Sampler(dpm_scheduler(), 6, progress=True).sample(
        gaussian_eps, SHAPE, _gen(), dtype=torch.float64, return_trajectory=True)
    assert isinstance(result, SampleResult) and result.x0.dtype == torch.float64
    assert len(result.trajectory) == 7 and len(result.pred_x0_trajectory) == 6
    assert torch.equal(result.trajectory[-1], result.x0) and torch.equal(result.pred_x0_trajectory[-1], result.pred_x0)
    assert torch.equal(result.trajectory[0], torch.randn(SHAPE, generator=_gen(), dtype=torch.float64))


def test_bfloat16_sampling_runs():
    result = Sampler(ddim_scheduler(), 5, eta=0.5).sample(gaussian_eps, SHAPE, _gen(), dtype=torch.bfloat16)
    assert result.x0.dtype == torch.bfloat16 and torch.isfinite(result.x0.float()).all()


def test_guided_model_fn_samples():
    def model(x, t, cond, uncond_mask):
        return gaussian_eps(x, t) + (0 if cond is None else 0.01 * cond.mean())
    cond = torch.ones(SHAPE[0], 8)
    result = Sampler(ddim_scheduler(), 5).sample(cfg_model_fn(model, cond, 2.0), SHAPE, _gen())
    assert torch.isfinite(result.x0).all()


def test_sampler_config_nodes_and_mappings_build():
    for name in ("ddim", "ddpm", "dpm"):
        sampler = instantiate(OmegaConf.load(f"experiments/sampler/{name}.yaml"))
        assert sampler.describe()["scheduler"] == type(sampler.scheduler).__name__
    node = {"_target_": "diffusers.DDIMScheduler", **LDM_LINEAR}
    assert isinstance(Sampler(node, 10).scheduler, diffusers.DDIMScheduler)


def test_misuse_is_refused_clearly():
    with pytest.raises(ValueError, match="eta=1.0 is only used by DDIM"):
        Sampler(ddpm_scheduler(), 10, eta=1.0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        Sampler(ddim_scheduler(), 0)
    with pytest.raises(ValueError, match=r"timesteps 1 … 1000, outside 0 … 999"):
        Sampler(ddim_scheduler(), 1000).timesteps()
    with pytest.raises(ValueError, match="init_noise_sigma"):
        Sampler(diffusers.EulerDiscreteScheduler(**LDM_LINEAR), 10)
    with pytest.raises(TypeError, match="diffusers scheduler"):
        Sampler(object(), 10)
    sampler = Sampler(ddim_scheduler(), 5)
    with pytest.raises(ValueError, match="prediction_type"):
        sampler.sample(gaussian_eps, SHAPE, _gen(), "x0")
    with pytest.raises(ValueError, match="model_fn returned shape"):
        sampler.sample(lambda x, t: x[:, :1], SHAPE, _gen())
    with pytest.raises(ValueError, match="step hook returned shape"):
        sampler.sample(gaussian_eps, SHAPE, _gen(), hook=lambda s: s.output[:1])
    with pytest.raises(ValueError, match="does not match x_T"):
        sampler.sample(gaussian_eps, (1, 3, 2, 2), x_T=torch.zeros(SHAPE))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_cuda_sampling_is_reproducible_and_matches_the_cpu(name):
    sampler = SAMPLERS[name]()
    cpu = sampler.sample(gaussian_eps, SHAPE, _gen(4), dtype=torch.float64).x0
    runs = [sampler.sample(gaussian_eps, SHAPE, _gen(4), device="cuda", dtype=torch.float64).x0 for _ in range(2)]
    assert runs[0].device.type == "cuda" and torch.equal(runs[0], runs[1])
    torch.testing.assert_close(runs[0].cpu(), cpu, rtol=1e-6, atol=1e-6)  # CPU generator: the same noise
    cuda_gen = torch.Generator(device="cuda").manual_seed(4)
    again = sampler.sample(gaussian_eps, SHAPE, cuda_gen, dtype=torch.float64).x0
    assert again.device.type == "cuda"
