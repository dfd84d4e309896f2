"""Learning-rate schedules and optimiser / schedule building from ``_partial_`` config nodes."""

from __future__ import annotations

import math

import pytest
import torch

from fitdiff.config import ConfigError
from fitdiff.optim import (
    WarmupCosine,
    build_optimizer,
    build_scheduler,
    config_node,
    constant,
    warmup_cosine,
)


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _rates(scheduler, optimizer, steps: int) -> list[float]:
    """Learning rate used at optimiser steps 0 .. steps - 1."""
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_constant_with_and_without_warmup():
    opt = _optimizer(0.5)
    assert _rates(constant(opt), opt, 4) == [0.5] * 4
    opt = _optimizer(0.4)
    assert _rates(constant(opt, warmup_steps=4), opt, 6) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_warmup_cosine_values():
    opt = _optimizer(2.0)
    rates = _rates(warmup_cosine(opt, total_steps=12, warmup_steps=2, min_lr_ratio=0.25), opt, 15)
    assert rates[:2] == pytest.approx([1.0, 2.0])  # linear warm-up, (s + 1) / warmup
    assert rates[2] == pytest.approx(2.0)  # the peak at warmup_steps
    assert rates[7] == pytest.approx(2.0 * (0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * 0.5))))  # half way
    assert rates[12:] == pytest.approx([0.5] * 3)  # min_lr_ratio x lr at and after total_steps
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))  # monotone decay


def test_schedule_state_survives_a_checkpoint_round_trip(tmp_path):
    opt = _optimizer()
    scheduler = warmup_cosine(opt, total_steps=10, warmup_steps=3)
    _rates(scheduler, opt, 5)
    torch.save(scheduler.state_dict(), tmp_path / "s.pt")
    fresh_opt = _optimizer()
    fresh = warmup_cosine(fresh_opt, total_steps=99, warmup_steps=0)
    fresh.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))  # plain types only
    assert fresh.last_epoch == 5 and fresh.lr_lambdas[0] == WarmupCosine(10, 3, 0.0)


@pytest.mark.parametrize("kwargs", [dict(total_steps=5, warmup_steps=5), dict(total_steps=-1),
                                    dict(total_steps=5, warmup_steps=-1), dict(total_steps=5, min_lr_ratio=1.5)])
def test_warmup_cosine_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        warmup_cosine(_optimizer(), **kwargs)


def test_warmup_fraction_follows_the_budget():
    assert warmup_cosine(_optimizer(), total_steps=1000, warmup_fraction=0.1).lr_lambdas[0].warmup_steps == 100
    assert warmup_cosine(_optimizer(), total_steps=6, warmup_fraction=0.1).lr_lambdas[0].warmup_steps == 0
    assert warmup_cosine(_optimizer(), total_steps=100, warmup_steps=2, warmup_fraction=0.5).lr_lambdas[0].warmup_steps == 2
    with pytest.raises(ValueError, match="warmup_fraction"):
        warmup_cosine(_optimizer(), total_steps=10, warmup_fraction=1.0)


def test_nodes_build_optimisers_and_schedules():
    params = [torch.nn.Parameter(torch.zeros(3))]
    node = config_node({"lr": 0.3, "weight_decay": 0.1}, "torch.optim.AdamW", partial=True)
    opt = build_optimizer(node, params)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["weight_decay"] == 0.1
    sched = build_scheduler({"_target_": "fitdiff.optim.warmup_cosine", "_partial_": True, "total_steps": 4}, opt)
    assert sched.lr_lambdas[0].total_steps == 4
    assert build_scheduler(None, opt).lr_lambdas[0](100) == 1.0  # no node: constant


def test_bad_nodes_are_config_errors_naming_the_key():
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ConfigError, match=r"model\.optimizer .*betaz"):
        build_optimizer({"_target_": "torch.optim.Adam", "_partial_": True, "betaz": [0.5, 0.9]}, params)
    with pytest.raises(ConfigError, match="not a torch.optim.Optimizer"):
        build_optimizer({"_target_": "torch.nn.Identity", "_partial_": True}, [])
    with pytest.raises(ConfigError, match=r"model\.scheduler .*total_steps"):
        build_scheduler({"_target_": "fitdiff.optim.warmup_cosine", "_partial_": True, "total_steps": 0},
                        _optimizer())
