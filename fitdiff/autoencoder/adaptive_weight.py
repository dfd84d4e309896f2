"""The adaptive weight of the generator's GAN loss (VQGAN): balance its gradient against reconstruction's."""

from __future__ import annotations

import torch

__all__ = ["adaptive_weight"]


def adaptive_weight(
    rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """``||grad rec_loss|| / (||grad gan_loss|| + 1e-4)`` at ``last_layer``, clamped to [0, max_weight].

    Both gradients are taken with respect to ``last_layer`` (the decoder branch's final conv weight) and
    the result is detached. A loss that does not reach ``last_layer`` counts as a zero gradient, so the
    weight is always finite (0 when reconstruction has no gradient there). Outside autograd (no grad
    mode, or a layer that does not require grad) the weight is 0.
    """
    if not (torch.is_grad_enabled() and last_layer.requires_grad):
        return torch.zeros((), device=last_layer.device)
    norms = []
    for loss in (rec_loss, gan_loss):
        if not loss.requires_grad:
            norms.append(torch.zeros((), device=last_layer.device))
            continue
        (grad,) = torch.autograd.grad(loss, last_layer, retain_graph=True, allow_unused=True)
        norms.append(torch.zeros((), device=last_layer.device) if grad is None else grad.float().norm())
    weight = norms[0] / (norms[1] + 1e-4)
    return torch.nan_to_num(weight, nan=0.0, posinf=max_weight).clamp(0.0, max_weight).detach()
