"""The reverse-diffusion loop: a model function, a diffusers scheduler, a generator and a per-step hook.

Per step i with timestep t the loop computes ``output = model_fn(x_t, t)``, the predicted x̂0, builds a
:class:`StepState` and calls ``hook(state)``; a tensor it returns replaces the output given to
``scheduler.step``. This is the seam of guided reconstruction (docs/DESIGN.md §6): the ``eps`` rule
differentiates a loss on x̂0 through the denoiser to x_t (a hook with ``needs_grad = True``: the model
is then called with x_t requiring grad, under ``torch.enable_grad()``), the ``x0`` rule changes x̂0 and
returns :meth:`StepState.output_from_x0` (a hook without ``needs_grad`` runs under ``torch.no_grad()``;
it opens ``torch.enable_grad()`` itself for a gradient with respect to x̂0 alone).

Recurrence (universal guidance's "time-travel"): a hook with a ``repeats(index, num_steps) -> int``
method may ask for step ``index`` to run k times; after each of the first k − 1 runs the sample
x_{t'} = scheduler.step(...) is re-noised back to t, x_t = √(ᾱ_t/ᾱ_{t'})·x_{t'} + √(1 − ᾱ_t/ᾱ_{t'})·z with
z drawn from the run's generator, and the step is taken again. Multistep schedulers (DPM-Solver++) keep a
history of model outputs that a repeated step would corrupt, so recurrence needs DDIM or DDPM.

Imposing values on the sample (RePaint-style inpainting, reflectance completion): a hook with an
``after_step(x_prev, index, alpha_bar_prev, generator) -> x_prev`` method sees every sample the scheduler
produces (after each run of a repeated step too) with ᾱ of its timestep, and returns the sample to go on
with, e.g. with a known region replaced by its forward-noised value.

The scheduler's ``prediction_type`` is set from the argument of :meth:`Sampler.sample` on a deep copy
(the model's objective decides it, the sampler presets do not repeat it); the configured scheduler is
never modified, so a :class:`Sampler` can be reused and shared. Everything runs under ``torch.no_grad()``
except the model call and hook of a ``needs_grad`` hook.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from fitdiff.diffusion.objectives import (
    PREDICTION_TYPES,
    output_from_eps,
    output_from_x0,
    predict_eps,
    predict_x0,
)
from fitdiff.diffusion.schedule import alphas_cumprod

__all__ = ["ModelFn", "SampleResult", "Sampler", "StepHook", "StepState", "previous_alpha_bar"]

log = logging.getLogger(__name__)

#: ``model_fn(x_t (B, ...), t (B,) int64) -> output (B, ...)``, already guided (see ``cfg_model_fn``)
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generator = torch.Generator | list[torch.Generator]


@dataclass
class StepState:
    """What a hook sees at one reverse step.

    Attributes:
        index: step number, 0 … num_steps − 1 (0 = the noisiest).
        num_steps: number of steps of this run.
        t: training timestep of this step (0 … T − 1).
        x_t: (B, ...) current sample; requires grad (a leaf) when the hook ``needs_grad``.
        output: (B, ...) model output at (x_t, t) (graph to x_t when ``needs_grad``).
        pred_x0: (B, ...) x̂0 from ``output`` (graph to x_t when ``needs_grad``).
        alpha_bar_t: ᾱ_t as a Python float.
        prediction_type: what ``output`` is (``epsilon``, ``v_prediction``, ``sample``).
        alphas_cumprod: the scheduler's ᾱ table, 1-D float64 (for the conversions below).
    """

    index: int
    num_steps: int
    t: int
    x_t: torch.Tensor
    output: torch.Tensor
    pred_x0: torch.Tensor
    alpha_bar_t: float
    prediction_type: str
    alphas_cumprod: torch.Tensor

    @property
    def pred_eps(self) -> torch.Tensor:
        """ε̂ from ``output`` (graph to x_t when ``needs_grad``)."""
        return predict_eps(self.prediction_type, self.output, self.x_t, self.t, self.alphas_cumprod)

    def output_from_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """The model output that predicts ``x0`` at this step's x_t (a hook's return value)."""
        return output_from_x0(self.prediction_type, x0, self.x_t, self.t, self.alphas_cumprod)

    def output_from_eps(self, eps: torch.Tensor) -> torch.Tensor:
        """The model output that predicts noise ``eps`` at this step's x_t (a hook's return value)."""
        return output_from_eps(self.prediction_type, eps, self.x_t, self.t, self.alphas_cumprod)


class StepHook(Protocol):
    """``hook(state) -> replacement output or None``; optional attribute ``needs_grad: bool`` and methods
    ``repeats(index, num_steps) -> int`` (recurrence) and ``after_step(x_prev, index, alpha_bar_prev,
    generator) -> x_prev`` (see the module docstring)."""

    def __call__(self, state: StepState) -> torch.Tensor | None: ...


@dataclass
class SampleResult:
    """Output of :meth:`Sampler.sample`.

    Attributes:
        x0: (B, ...) the scheduler's final sample (for the ``ddim`` preset at ᾱ_0 = 0.9985, see
            :mod:`fitdiff.diffusion.schedule`).
        pred_x0: (B, ...) x̂0 predicted at the last step from the output actually used (after the hook).
        timesteps: the timesteps visited, noisiest first.
        trajectory: x_T then the sample after every step (num_steps + 1 tensors), if asked for.
        pred_x0_trajectory: x̂0 of every step (num_steps tensors), if asked for.
    """

    x0: torch.Tensor
    pred_x0: torch.Tensor
    timesteps: list[int]
    trajectory: list[torch.Tensor] | None = None
    pred_x0_trajectory: list[torch.Tensor] | None = None


def _accepts(method: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def alpha_bar_after(scheduler: SchedulerMixin, timesteps: Sequence[int], index: int, table: torch.Tensor) -> float:
    """ᾱ of the sample that step ``index`` produces (any scheduler): the single-step schedulers' own
    previous timestep, otherwise the next timestep visited, and 1 after the last."""
    if isinstance(scheduler, (DDIMScheduler, DDPMScheduler)):
        return previous_alpha_bar(scheduler, timesteps[index], table)
    return float(table[timesteps[index + 1]]) if index + 1 < len(timesteps) else 1.0


def previous_alpha_bar(scheduler: SchedulerMixin, t: int, table: torch.Tensor) -> float:
    """ᾱ of the timestep a single-step scheduler's ``step`` at ``t`` goes to (for recurrence).

    Raises:
        ValueError: for schedulers other than DDIM and DDPM (multistep history; see the module docstring).
    """
    if isinstance(scheduler, DDIMScheduler):
        prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        return float(table[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)
    if isinstance(scheduler, DDPMScheduler):
        prev = int(scheduler.previous_timestep(t))
        return float(table[prev]) if prev >= 0 else 1.0
    raise ValueError(f"recurrence needs a single-step scheduler (DDIM or DDPM); {type(scheduler).__name__} keeps "
                     "a history of model outputs that repeating a step would corrupt")


class Sampler:
    """Reverse diffusion with a diffusers scheduler (a ``_target_`` node: ``experiments/sampler/``).

    Args:
        scheduler: a variance-preserving diffusers scheduler (DDIMScheduler, DDPMScheduler,
            DPMSolverMultistepScheduler…) or a ``_target_`` mapping building one; the presets are in
            :mod:`fitdiff.diffusion.schedule`. Its ᾱ table must be the training schedule's.
        num_inference_steps: number of reverse steps (1 … num_train_timesteps).
        eta: DDIM's η (0 = deterministic DDIM, 1 = DDPM-like ancestral noise); must be 0 for
            schedulers whose ``step`` takes no ``eta``.
        progress: show a progress bar over the steps.

    Attribute ``on_step`` (default None) may hold a callable ``on_step(done, total)`` called after every
    reverse step (a progress display; an exception raised in it stops sampling, e.g. on cancellation).

    Raises:
        ValueError / TypeError: on construction, for a scheduler that is not a VP diffusers scheduler,
            a step count out of range, or ``eta`` given to a scheduler that does not use it.
    """

    def __init__(self, scheduler: SchedulerMixin | Mapping[str, Any], num_inference_steps: int = 50,
                 eta: float = 0.0, progress: bool = False) -> None:
        if isinstance(scheduler, Mapping):
            from hydra.utils import instantiate

            scheduler = instantiate(dict(scheduler), _convert_="all")
        name = type(scheduler).__name__
        for attr in ("set_timesteps", "step", "config"):
            if not hasattr(scheduler, attr):
                raise TypeError(f"Sampler.scheduler must be a diffusers scheduler; {name} has no '{attr}'")
        alphas_cumprod(scheduler)  # raises TypeError for non-VP schedulers
        if float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0:
            raise ValueError(f"Sampler supports variance-preserving schedulers (x_T ~ N(0, I)); {name} has "
                             f"init_noise_sigma={scheduler.init_noise_sigma}")
        if "prediction_type" not in scheduler.config:
            raise TypeError(f"{name} has no prediction_type in its config; the sampler cannot set it")
        n_train = int(scheduler.config.num_train_timesteps)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                or not 1 <= num_inference_steps <= n_train:
            raise ValueError(f"num_inference_steps must be an integer in 1 … {n_train}, got {num_inference_steps!r}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self._takes_eta = _accepts(scheduler.step, "eta")
        if eta != 0 and not self._takes_eta:
            raise ValueError(f"eta={eta} is only used by DDIM-type schedulers; {name}.step takes no eta "
                             "(set eta: 0.0)")
        self._takes_generator = _accepts(scheduler.step, "generator")
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.eta = float(eta)
        self.progress = progress
        self.on_step: Callable[[int, int], None] | None = None

    def __repr__(self) -> str:
        return (f"Sampler({type(self.scheduler).__name__}, num_inference_steps={self.num_inference_steps}, "
                f"eta={self.eta})")

    def describe(self) -> dict[str, Any]:
        """Plain description for report headers: scheduler class, steps, eta, timestep spacing."""
        return {
            "scheduler": type(self.scheduler).__name__,
            "num_inference_steps": self.num_inference_steps,
            "eta": self.eta,
            "timestep_spacing": self.scheduler.config.get("timestep_spacing"),
        }

    def prepared_scheduler(self, prediction_type: str, device: torch.device | str | None = None) -> SchedulerMixin:
        """A fresh copy of the scheduler for ``prediction_type`` with its timesteps set (on ``device``).

        Raises:
            ValueError: unknown prediction type, or a spacing whose timesteps leave 0 … T − 1.
        """
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}; got {prediction_type!r}")
        scheduler = copy.deepcopy(self.scheduler)
        if scheduler.config.prediction_type != prediction_type:
            log.debug("sampling scheduler prediction_type %s -> %s", scheduler.config.prediction_type, prediction_type)
            scheduler = type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        n_train = int(scheduler.config.num_train_timesteps)
        timesteps = scheduler.timesteps
        if int(timesteps.max()) >= n_train or int(timesteps.min()) < 0:
            raise ValueError(
                f"{type(scheduler).__name__} with timestep_spacing={scheduler.config.get('timestep_spacing')!r}, "
                f"steps_offset={scheduler.config.get('steps_offset')} and {self.num_inference_steps} steps visits "
                f"timesteps {int(timesteps.min())} … {int(timesteps.max())}, outside 0 … {n_train - 1}: "
                "use fewer steps or another spacing"
            )
        return scheduler

    def timesteps(self) -> list[int]:
        """The timesteps one run visits, noisiest first."""
        return [int(t) for t in self.prepared_scheduler("epsilon").timesteps]

    def sample(self, model_fn: ModelFn, shape: Sequence[int] | None, generator: Generator | None = None,
               prediction_type: str = "epsilon", hook: StepHook | None = None, x_T: torch.Tensor | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None,
               return_trajectory: bool = False) -> SampleResult:
        """Run the reverse process from x_T ~ N(0, I) (or the given ``x_T``) to a sample.

        Args:
            model_fn: ``model_fn(x_t, t) -> output`` with t of shape (B,), int64 (see ``cfg_model_fn``).
            shape: (B, C, H, W) of the sample; may be None when ``x_T`` is given.
            generator: draws x_T and, for DDPM / DDIM with eta > 0, every step's noise: the same
                generator state gives a bit-identical result. A list of generators seeds each sample.
            prediction_type: what ``model_fn`` outputs (the model's objective).
            hook: called once per step with the :class:`StepState`; may return a replacement output.
            x_T: starting noise (copied), instead of drawing it.
            device, dtype: of x_t; default: x_T's, else the generator's device and float32.
            return_trajectory: keep x_t and x̂0 of every step (detached, on ``device``).
        """
        if x_T is not None:
            if shape is not None and tuple(shape) != tuple(x_T.shape):
                raise ValueError(f"shape {tuple(shape)} does not match x_T of shape {tuple(x_T.shape)}")
            device = torch.device(device) if device is not None else x_T.device
            dtype = dtype or x_T.dtype
        else:
            if shape is None:
                raise ValueError("give shape or x_T")
            first = generator[0] if isinstance(generator, list) else generator
            fallback = first.device if first is not None else torch.device("cpu")
            device = torch.device(device) if device is not None else fallback
            dtype = dtype or torch.float32
        scheduler = self.prepared_scheduler(prediction_type, device)
        table = alphas_cumprod(scheduler)
        if x_T is not None:
            x = x_T.detach().to(device=device, dtype=dtype).clone()
        else:
            x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
        x = x * scheduler.init_noise_sigma

        step_kwargs: dict[str, Any] = {}
        if self._takes_eta:
            step_kwargs["eta"] = self.eta
        if self._takes_generator:
            step_kwargs["generator"] = generator
        needs_grad = bool(getattr(hook, "needs_grad", False))
        timesteps = [int(t) for t in scheduler.timesteps]
        trajectory = [x] if return_trajectory else None
        pred_trajectory: list[torch.Tensor] | None = [] if return_trajectory else None
        pred_x0 = x
        bar = tqdm(scheduler.timesteps, desc=f"sampling ({type(scheduler).__name__})", disable=not self.progress,
                   leave=False, dynamic_ncols=True)
        repeats = getattr(hook, "repeats", None)
        after_step = getattr(hook, "after_step", None)
        for index, t in enumerate(bar):
            t_int = timesteps[index]
            t_batch = torch.full((x.shape[0],), t_int, device=device, dtype=torch.long)
            runs = int(repeats(index, len(timesteps))) if callable(repeats) else 1
            if runs < 1:
                raise ValueError(f"hook.repeats returned {runs} for step {index}; it must be >= 1")
            alpha_prev = previous_alpha_bar(scheduler, t_int, table) if runs > 1 else None
            for run in range(runs):
                with torch.enable_grad() if needs_grad else torch.no_grad():
                    x_in = x.detach().requires_grad_(True) if needs_grad else x
                    output = model_fn(scheduler.scale_model_input(x_in, t), t_batch)
                    if output.shape != x.shape:
                        raise ValueError(f"model_fn returned shape {tuple(output.shape)} for x_t of shape "
                                         f"{tuple(x.shape)}")
                    output = output.to(dtype)
                    if hook is not None:
                        state = StepState(
                            index=index, num_steps=len(timesteps), t=t_int, x_t=x_in, output=output,
                            pred_x0=predict_x0(prediction_type, output, x_in, t_int, table),
                            alpha_bar_t=float(table[t_int]), prediction_type=prediction_type,
                            alphas_cumprod=table,
                        )
                        replacement = hook(state)
                        if replacement is not None:
                            if replacement.shape != x.shape:
                                raise ValueError(f"step hook returned shape {tuple(replacement.shape)}, "
                                                 f"expected {tuple(x.shape)}")
                            output = replacement.to(dtype)
                with torch.no_grad():
                    output = output.detach()
                    x_prev = scheduler.step(output, t, x, **step_kwargs).prev_sample.to(dtype)
                    if callable(after_step):
                        x_prev = after_step(x_prev, index, alpha_bar_after(scheduler, timesteps, index, table),
                                            generator)
                    if run < runs - 1:  # recurrence: back to t with fresh noise (module docstring)
                        ratio = float(table[t_int]) / alpha_prev
                        noise = randn_tensor(tuple(x.shape), generator=generator, device=device, dtype=dtype)
                        x = ratio**0.5 * x_prev + (1.0 - ratio) ** 0.5 * noise
            with torch.no_grad():
                pred_x0 = predict_x0(prediction_type, output, x, t_int, table)
                if pred_trajectory is not None:
                    pred_trajectory.append(pred_x0)
                x = x_prev
                if trajectory is not None:
                    trajectory.append(x)
            if self.on_step is not None:
                self.on_step(index + 1, len(timesteps))
        return SampleResult(x0=x, pred_x0=pred_x0, timesteps=timesteps, trajectory=trajectory,
                            pred_x0_trajectory=pred_trajectory)
