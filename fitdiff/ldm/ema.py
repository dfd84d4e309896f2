"""Exponential moving average of the denoiser's weights, with the latent-diffusion warm-up (docs/DESIGN.md §5).

The average is torch's :class:`~torch.optim.swa_utils.AveragedModel`; only the update rule is ours, because
the decay warms up as min(decay, (1 + n) / (10 + n)) with n the number of updates so far, which torch's
``get_ema_multi_avg_fn`` (a constant decay) does not provide. Early in training the average therefore
follows the raw weights closely instead of being anchored to the random initialisation for ~10k steps.

Lightning's ``WeightAveraging`` callback averages the whole LightningModule (here: the frozen autoencoder
too) and swaps the average in for every validation, so raw and averaged weights could not both be
validated; the module keeps its own :class:`DenoiserEMA` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["DenoiserEMA", "ema_decay", "warmup_ema_multi_avg_fn"]


def ema_decay(n_updates: int, decay: float, warmup: bool = True) -> float:
    """The decay of an update after ``n_updates`` earlier ones: min(decay, (1 + n) / (10 + n)) with warm-up.

    The first update copies the weights; the second uses (1 + 1) / (10 + 1) = 0.18, as latent diffusion's
    EMA does at its second step; the target decay 0.9999 is reached after ~90k updates.
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + n_updates) / (10.0 + n_updates))


def warmup_ema_multi_avg_fn(
    decay: float, warmup: bool = True
) -> Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], torch.Tensor | int], None]:
    """An ``AveragedModel`` ``multi_avg_fn``: ema <- d * ema + (1 - d) * param for all tensors at once."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    @torch.no_grad()
    def update(ema: Sequence[torch.Tensor], params: Sequence[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
        # AveragedModel copies the weights at its first update and calls this from the second on, with
        # num_averaged = the updates folded in so far (>= 1); it groups tensors by dtype.
        d = ema_decay(int(num_averaged), decay, warmup)
        if ema and not ema[0].is_floating_point():  # integer buffers follow the network
            for e, p in zip(ema, params):
                e.copy_(p)
            return
        torch._foreach_lerp_(list(ema), list(params), 1.0 - d)

    return update


class DenoiserEMA(nn.Module):
    """The averaged copy of a network: ``update(net)`` after each optimiser step, ``module`` to evaluate.

    Args:
        net: the network to average (copied; the copy's parameters never require gradients, so DDP and
            optimisers ignore them).
        decay: the target decay (0.9999 by convention).
        warmup: use the warm-up rule of :func:`ema_decay`.

    The state dict holds the averaged weights (``average.module.*``) and the update count
    (``average.n_averaged``), so checkpoints restore the average exactly.
    """

    def __init__(self, net: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        super().__init__()
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.average = AveragedModel(net, multi_avg_fn=warmup_ema_multi_avg_fn(self.decay, self.warmup),
                                     use_buffers=True)
        self.average.requires_grad_(False)
        self.average.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged network (eval mode)."""
        return self.average.module

    @property
    def n_updates(self) -> int:
        """Updates so far (the first copies the weights)."""
        return int(self.average.n_averaged)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Fold ``net``'s current weights into the average."""
        self.average.update_parameters(net)

    def train(self, mode: bool = True) -> DenoiserEMA:
        """The average stays in eval mode (no dropout) whatever the parent's mode."""
        super().train(mode)
        self.average.eval()
        return self
