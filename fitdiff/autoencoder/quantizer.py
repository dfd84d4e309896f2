"""Vector quantiser with straight-through gradients, usage statistics and restart of dead codes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["Quantized", "VectorQuantizer"]

log = logging.getLogger(__name__)


@dataclass
class Quantized:
    """Output of :class:`VectorQuantizer`.

    Attributes:
        z_q: (B, D, h, w) quantised latent carrying straight-through gradients to the encoder.
        loss: scalar VQ loss ``||sg(z) - e||^2 + beta * ||z - sg(e)||^2``.
        indices: (B, h, w) int64 code indices.
        perplexity: scalar exp(entropy) of the code histogram of this batch (1 .. n_codes).
        usage: scalar fraction of codes used at least once in this batch.
    """

    z_q: torch.Tensor
    loss: torch.Tensor
    indices: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of (B, D, h, w) latents against a (n_codes, D) codebook.

    Loss: ``||sg(z) - e||^2 + beta * ||z - sg(e)||^2`` (both means over elements). ``beta`` (0.25 by
    convention) weights the **commitment** term, which pulls the encoder output ``z`` towards its code
    ``e``; the codebook term, which moves the code towards the encoder output, has weight 1. The forward
    output is ``z + sg(e - z)``: equal to ``e`` in value, with the identity gradient to ``z``
    (straight-through estimator).

    Args:
        n_codes: codebook size K.
        dim: code dimension D (the latent channels).
        beta: weight of the commitment term.
        data_init: on the first training forward, initialise the codebook from encoder outputs of that
            batch (otherwise uniform in [-1/K, 1/K]).
        restart_dead: re-initialise codes whose usage average falls below ``dead_threshold`` to
            encoder outputs of the current batch (training only).
        usage_decay: decay of the exponential moving average of each code's usage, measured in units of
            uniform usage (1.0 = the code is chosen as often as under a uniform histogram).
        dead_threshold: usage average below which a code counts as dead.

    Under data parallelism the code histogram is summed over ranks and the re-initialised codebook is
    broadcast from rank 0, so every rank keeps the same codebook.
    """

    def __init__(
        self,
        n_codes: int,
        dim: int,
        beta: float = 0.25,
        data_init: bool = True,
        restart_dead: bool = True,
        usage_decay: float = 0.99,
        dead_threshold: float = 0.01,
    ) -> None:
        super().__init__()
        self.n_codes, self.dim, self.beta = int(n_codes), int(dim), float(beta)
        self.restart_dead = restart_dead
        self.usage_decay, self.dead_threshold = float(usage_decay), float(dead_threshold)
        self.codebook = nn.Embedding(self.n_codes, self.dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / self.n_codes, 1.0 / self.n_codes)
        self.register_buffer("usage_average", torch.ones(self.n_codes))
        self.register_buffer("initialized", torch.tensor(not data_init))
        self.register_buffer("restarted", torch.zeros((), dtype=torch.long))  # total codes restarted

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of (B, h, w) indices as a (B, D, h, w) latent."""
        return self.codebook(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> Quantized:
        b, d, h, w = z.shape
        if d != self.dim:
            raise ValueError(f"latent has {d} channels, the codebook has dimension {self.dim}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            if self.training and not bool(self.initialized):
                self._init_from(flat.detach())
            codes = self.codebook.weight
            distance = (
                flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ codes.t() + codes.pow(2).sum(1)[None, :]
            )
            indices = distance.argmin(dim=1)
            z_q = F.embedding(indices, codes).view(b, h, w, d).permute(0, 3, 1, 2)
            loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
            z_st = z + (z_q - z).detach()

            counts = torch.bincount(indices, minlength=self.n_codes).float()
            if self.training and _distributed():
                dist.all_reduce(counts)
            probs = counts / counts.sum().clamp_min(1.0)
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
            usage = (counts > 0).float().mean()
            if self.training:
                self._update_usage(counts, flat.detach())
        return Quantized(z_st, loss, indices.view(b, h, w), perplexity.detach(), usage.detach())

    @torch.no_grad()
    def _sample_vectors(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` rows of ``flat`` (with replacement when there are fewer), plus a little noise."""
        pick = torch.randint(0, flat.shape[0], (n,), device=flat.device)
        rows = flat[pick]
        return rows + 1e-3 * rows.std().clamp_min(1e-6) * torch.randn_like(rows)

    @torch.no_grad()
    def _broadcast_codebook(self) -> None:
        if _distributed():
            dist.broadcast(self.codebook.weight.data, src=0)

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        self.codebook.weight.data.copy_(self._sample_vectors(flat, self.n_codes))
        self._broadcast_codebook()
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_usage(self, counts: torch.Tensor, flat: torch.Tensor) -> None:
        uniform = counts.sum().clamp_min(1.0) / self.n_codes
        self.usage_average.mul_(self.usage_decay).add_((1.0 - self.usage_decay) * counts / uniform)
        if not self.restart_dead:
            return
        dead = self.usage_average < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        self.codebook.weight.data[dead] = self._sample_vectors(flat, n_dead)
        self._broadcast_codebook()
        self.usage_average[dead] = 1.0
        self.restarted.add_(n_dead)
        log.debug("restarted %d dead codes", n_dead)
