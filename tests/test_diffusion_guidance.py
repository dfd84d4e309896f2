"""Classifier-free guidance: one batched forward, s = 1 exactly conditional, the eps_u + s(eps_c - eps_u) rule."""

from __future__ import annotations

import pytest
import torch

from fitdiff.diffusion import cfg_model_fn, classifier_free


class ToyDenoiser:
    """``model(x, t, cond, uncond_mask)``, non-linear in the condition; records every call."""

    def __init__(self, channels: int = 3, dim: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.null = torch.randn(dim, generator=g)
        self.proj = torch.randn(dim, channels, generator=g)
        self.calls: list[dict] = []

    def __call__(self, x, t, cond, uncond_mask):
        self.calls.append({"batch": x.shape[0], "cond": cond, "mask": uncond_mask, "t": t})
        e = self.null.expand(x.shape[0], -1) if cond is None else cond
        if uncond_mask is not None:
            e = torch.where(uncond_mask[:, None], self.null.expand_as(e), e)
        shift = torch.tanh(e @ self.proj)[:, :, None, None]
        return torch.sin(x) * (1 + shift) + 1e-3 * t.float()[:, None, None, None]


def _inputs(batch=4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 5, 5, generator=g)
    cond = torch.nn.functional.normalize(torch.randn(batch, 8, generator=g), dim=1)
    return x, torch.tensor([999, 500, 10, 0][:batch]), cond


def test_scale_one_is_the_conditional_output_exactly():
    model = ToyDenoiser()
    x, t, cond = _inputs()
    out = classifier_free(model, x, t, cond, 1.0)
    assert len(model.calls) == 1 and model.calls[0]["batch"] == 4
    assert torch.equal(out, model(x, t, cond, None))


@pytest.mark.parametrize("scale", [0.5, 2.0, 7.5])
def test_guided_output_equals_two_separate_forwards_from_one_batched_call(scale):
    model = ToyDenoiser()
    x, t, cond = _inputs()
    out = classifier_free(model, x, t, cond, scale)
    assert len(model.calls) == 1
    call = model.calls[0]
    assert call["batch"] == 8 and call["mask"].tolist() == [False] * 4 + [True] * 4
    assert torch.equal(call["t"], torch.cat([t, t]))
    eps_c = model(x, t, cond, None)
    eps_u = model(x, t, None, None)
    torch.testing.assert_close(out, eps_u + scale * (eps_c - eps_u), rtol=0, atol=1e-6)


def test_no_condition_and_scale_zero_are_unconditional():
    model = ToyDenoiser()
    x, t, cond = _inputs()
    uncond = model(x, t, None, None)
    assert torch.equal(classifier_free(model, x, t, None, 3.0), uncond)
    assert torch.equal(classifier_free(model, x, t, cond, 0.0), uncond)
    assert all(c["batch"] == 4 for c in model.calls)


def test_scalar_timestep_is_broadcast_and_mismatches_refused():
    model = ToyDenoiser()
    x, _, cond = _inputs()
    out = classifier_free(model, x, 250, cond, 2.0)
    assert model.calls[-1]["t"].tolist() == [250] * 8
    torch.testing.assert_close(out, classifier_free(model, x, torch.full((4,), 250), cond, 2.0))
    with pytest.raises(ValueError, match="batch size"):
        classifier_free(model, x, 250, cond[:2], 2.0)
    with pytest.raises(ValueError, match="timesteps"):
        classifier_free(model, x, torch.tensor([1, 2]), cond, 2.0)


def test_cfg_model_fn_wraps_the_model_for_the_sampler():
    model = ToyDenoiser()
    x, t, cond = _inputs()
    fn = cfg_model_fn(model, cond, 3.0)
    assert torch.equal(fn(x, t), classifier_free(model, x, t, cond, 3.0))


def test_guidance_keeps_gradients_to_the_input():
    model = ToyDenoiser()
    x, t, cond = _inputs()
    x = x.requires_grad_(True)
    (grad,) = torch.autograd.grad(classifier_free(model, x, t, cond, 2.0).sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
