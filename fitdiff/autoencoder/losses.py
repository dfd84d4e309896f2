"""VQGAN training losses per branch: L1 + LPIPS (+ angular for normals), hinge PatchGAN with adaptive weight."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.autoencoder.adaptive_weight import adaptive_weight
from fitdiff.autoencoder.branched import UNIT_VECTOR_MAPS, AutoencoderOutput
from fitdiff.autoencoder.discriminator import PatchDiscriminator
from fitdiff.metrics.angular import angular_error
from fitdiff.metrics.lpips import PerceptualLoss

__all__ = ["angular_error", "hinge_discriminator_loss", "VQGANLoss"]


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


class VQGANLoss(nn.Module):
    """Generator and discriminator objectives of the branched autoencoder; holds the discriminators.

    Per branch ``b`` (maps in model space):

    ``rec_b = sum over maps m of b: l1_weight * |x_m - x̂_m| + perceptual_weight * LPIPS(x_m, x̂_m)
    [+ angular_weight * (1 - cos(n, n̂)) for normals]``

    ``gen = sum_b rec_b + [step >= disc_start] * disc_weight * lambda_b * (-mean D_b(x̂_b))
    + codebook_weight * vq_loss``

    with ``lambda_b`` the adaptive weight at branch ``b``'s last decoder layer (docs/DESIGN.md §5). Each branch has
    its own hinge PatchGAN discriminator over its stacked maps, off before ``disc_start``.

    Args:
        maps: map name -> channels.
        branches: branch name -> its maps.
        l1_weight, perceptual_weight, angular_weight: reconstruction term weights (perceptual 0 builds
            no LPIPS network).
        codebook_weight: weight of the quantiser loss.
        disc_weight: scale of the adaptively weighted GAN term.
        disc_start: first generator step (``global_step``) with the GAN terms on.
        disc_ch, disc_layers: discriminator width and stride-2 layers.
        max_adaptive_weight: upper clamp of the adaptive weight.
    """

    def __init__(
        self,
        maps: Mapping[str, int],
        branches: Mapping[str, Sequence[str]],
        l1_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        angular_weight: float = 1.0,
        codebook_weight: float = 1.0,
        disc_weight: float = 0.5,
        disc_start: int = 50001,
        disc_ch: int = 64,
        disc_layers: int = 3,
        max_adaptive_weight: float = 1e4,
    ) -> None:
        super().__init__()
        self.maps, self.branches = dict(maps), {k: list(v) for k, v in branches.items()}
        self.l1_weight, self.perceptual_weight = float(l1_weight), float(perceptual_weight)
        self.angular_weight, self.codebook_weight = float(angular_weight), float(codebook_weight)
        self.disc_weight, self.disc_start = float(disc_weight), int(disc_start)
        self.max_adaptive_weight = float(max_adaptive_weight)
        self.perceptual = PerceptualLoss() if self.perceptual_weight > 0 else None
        self.discriminators = nn.ModuleDict(
            {b: PatchDiscriminator(sum(self.maps[m] for m in names), disc_ch, disc_layers)
             for b, names in self.branches.items()}
        )

    def disc_active(self, step: int) -> bool:
        """Whether the GAN terms are on at generator step ``step``."""
        return self.disc_weight > 0 and step >= self.disc_start

    def reconstruction(self, out: AutoencoderOutput) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(branch -> rec loss, scalar logs ``<map>_l1``, ``<map>_lpips``, ``<map>_angular``)."""
        per_branch: dict[str, torch.Tensor] = {}
        logs: dict[str, torch.Tensor] = {}
        for branch, names in self.branches.items():
            total = torch.zeros((), device=out.vq_loss.device)
            for m in names:
                x, y = out.inputs[m], out.recon[m]
                l1 = (x - y).abs().mean()
                logs[f"{m}_l1"] = l1.detach()
                total = total + self.l1_weight * l1
                if self.perceptual is not None:
                    p = self.perceptual(x.contiguous(), y.contiguous()).mean()
                    logs[f"{m}_lpips"] = p.detach()
                    total = total + self.perceptual_weight * p
                if m in UNIT_VECTOR_MAPS and self.angular_weight > 0:
                    ang = (1.0 - (F.normalize(x, dim=1) * F.normalize(y, dim=1)).sum(1)).mean()
                    logs[f"{m}_angular"] = ang.detach()
                    total = total + self.angular_weight * ang
            per_branch[branch] = total
            logs[f"{branch}_rec"] = total.detach()
        return per_branch, logs

    def _stack(self, maps: Mapping[str, torch.Tensor], branch: str) -> torch.Tensor:
        return torch.cat([maps[m] for m in self.branches[branch]], dim=1)

    def generator_loss(
        self, out: AutoencoderOutput, last_layers: Mapping[str, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total generator loss and scalar logs (``rec_loss``, ``vq_loss``, ``<branch>_d_weight``, ...)."""
        rec, logs = self.reconstruction(out)
        total = self.codebook_weight * out.vq_loss
        active = self.disc_active(step)
        for branch, rec_b in rec.items():
            total = total + rec_b
            weight = torch.zeros((), device=rec_b.device)
            if active:
                g_loss = -self.discriminators[branch](self._stack(out.recon, branch)).mean()
                weight = adaptive_weight(rec_b, g_loss, last_layers[branch], self.max_adaptive_weight)
                total = total + self.disc_weight * weight * g_loss
                logs[f"{branch}_g_loss"] = g_loss.detach()
            logs[f"{branch}_d_weight"] = weight
        logs["rec_loss"] = torch.stack([r.detach() for r in rec.values()]).sum()
        logs["vq_loss"] = out.vq_loss.detach()
        logs["loss"] = total.detach()
        return total, logs

    def discriminator_loss(self, out: AutoencoderOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over branches of the hinge loss on real maps vs detached reconstructions, and logs."""
        total = torch.zeros((), device=out.vq_loss.device)
        logs: dict[str, torch.Tensor] = {}
        for branch, disc in self.discriminators.items():
            real = disc(self._stack(out.inputs, branch).detach())
            fake = disc(self._stack(out.recon, branch).detach())
            loss = hinge_discriminator_loss(real, fake)
            total = total + loss
            logs[f"{branch}_d_loss"] = loss.detach()
            logs[f"{branch}_logits_real"] = real.detach().mean()
            logs[f"{branch}_logits_fake"] = fake.detach().mean()
        logs["d_loss"] = total.detach()
        return total, logs
