"""The denoiser: a UNet over the packed latent, conditioned on the identity embedding (docs/DESIGN.md §5).

Layout (latent diffusion's UNet, diffusers' ``UNet2DModel`` block structure): input conv; per level
``num_res_blocks`` :class:`~fitdiff.ldm.blocks.ResBlock` (+ attention where the level's downsampling
factor is in ``attention_resolutions``) then a strided-conv downsample (not after the last level); a
middle ResBlock-attention-ResBlock; per level, deepest first, ``num_res_blocks + 1`` ResBlocks on the
concatenated skip (+ attention) then a nearest-x2 + conv upsample; norm -> SiLU -> output conv.
The timestep enters every ResBlock as a scale-shift on its second norm; the identity embedding enters
as chosen by ``conditioning`` (``fitdiff/ldm/conditioning.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.utils.checkpoint import checkpoint

from fitdiff.ldm.blocks import AttentionBlock, Downsample, ResBlock, Stage, TimestepEmbedding, Upsample
from fitdiff.ldm.conditioning import CONDITIONINGS, ConcatConditioner, ConditionContext, build_conditioner

__all__ = ["NULL_EMBEDDING_NORM", "ConditionedUNet", "describe"]

NULL_EMBEDDING_NORM = 0.1
"""Norm of the null embedding at initialisation: a random direction, well inside the unit sphere on
which identity embeddings lie, so the untrained conditioning path sees an input unlike any identity."""


class ConditionedUNet(ModelMixin, ConfigMixin):
    """UNet denoiser ``forward(x, t, cond=None, uncond_mask=None) -> (B, out_channels, H, W)``.

    Args:
        in_channels / out_channels: latent channels in and out (e.g. maps' latent channels + shape plane).
        model_channels: width of the first level; level i has ``model_channels * channel_mult[i]``.
        channel_mult: width multipliers, one per level; H and W must be divisible by 2^(levels - 1).
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: downsampling factors (1 = latent grid, 2 = half, ...) with attention.
            The middle block (the deepest factor) always has attention.
        num_heads: attention heads, used when ``head_channels`` is None.
        head_channels: channels per head (heads = channels // head_channels), overrides ``num_heads``.
        dropout: in every ResBlock before its last conv.
        norm_groups: GroupNorm groups (the gcd with the channel count where it does not divide).
        cond_dim: identity-embedding size D.
        conditioning: one of ``spade`` (default), ``adagn``, ``crossattn``, ``concat``, ``none``.
        spade_map_channels / spade_map_res: the condition map (B, C_map, r, r) of ``spade`` and ``concat``.
        spade_hidden_channels: width of each SPADE norm's conv between map and gamma/beta
            (None: ``spade_map_channels``).
        cross_tokens: number of condition tokens of ``crossattn``.
        gradient_checkpointing: recompute each UNet stage in backward (``use_reentrant=False``); also
            switched by ``enable_gradient_checkpointing()`` / ``disable_gradient_checkpointing()``.

    ``cond`` (B, D) float; ``cond=None`` or ``uncond_mask[i]`` True uses the learned ``null_embedding``
    (D,) for that row (``none`` has no null embedding and ignores both). ``t``: (B,) or scalar, int or
    float timesteps. Works on any device and dtype, and under autocast.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 10,
        out_channels: int = 10,
        model_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4,),
        num_heads: int = 4,
        head_channels: int | None = None,
        dropout: float = 0.0,
        norm_groups: int = 32,
        cond_dim: int = 512,
        conditioning: str = "spade",
        spade_map_channels: int = 32,
        spade_map_res: int = 8,
        spade_hidden_channels: int | None = None,
        cross_tokens: int = 4,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        # plain lists in the saved config, whatever sequence type came in (e.g. an OmegaConf ListConfig)
        channel_mult, attention_resolutions = [int(m) for m in channel_mult], [int(f) for f in attention_resolutions]
        self.register_to_config(channel_mult=channel_mult, attention_resolutions=attention_resolutions)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={conditioning!r}: expected one of {', '.join(CONDITIONINGS)}")
        levels = len(channel_mult)
        factors = [2 ** i for i in range(levels)]
        bad = sorted(set(attention_resolutions) - set(factors))
        if bad:
            raise ValueError(f"attention_resolutions {bad} are not downsampling factors of this UNet ({factors})")
        if conditioning == "crossattn" and not attention_resolutions:
            raise ValueError("conditioning='crossattn' needs at least one entry in attention_resolutions")
        self.gradient_checkpointing = gradient_checkpointing
        self.levels = levels
        embed_dim = 4 * model_channels

        self.time_embed = TimestepEmbedding(model_channels, embed_dim)
        self.condition = build_conditioner(
            conditioning, cond_dim=cond_dim, model_channels=model_channels, embed_dim=embed_dim,
            norm_groups=norm_groups, map_channels=spade_map_channels, map_res=spade_map_res,
            spade_hidden=spade_hidden_channels or spade_map_channels, cross_tokens=cross_tokens,
        )
        self.embedding_scale = math.sqrt(cond_dim)
        if conditioning == "none":
            self.null_embedding = None
        else:
            direction = torch.randn(cond_dim)
            self.null_embedding = nn.Parameter(direction * (NULL_EMBEDDING_NORM / direction.norm()))

        norm = self.condition.make_norm
        ctx_dim = self.condition.context_dim

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, norm, num_heads, head_channels, ctx_dim)

        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            out = model_channels * mult
            attn = factors[level] in attention_resolutions
            for _ in range(num_res_blocks):
                self.down.append(Stage(ResBlock(ch, out, embed_dim, norm, dropout), attention(out) if attn else None))
                ch = out
                skips.append(ch)
            if level < levels - 1:
                self.down.append(Stage(resample=Downsample(ch)))
                skips.append(ch)
        self.mid = nn.ModuleList([
            Stage(ResBlock(ch, ch, embed_dim, norm, dropout), attention(ch)),
            Stage(ResBlock(ch, ch, embed_dim, norm, dropout)),
        ])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            out = model_channels * mult
            attn = factors[level] in attention_resolutions
            for i in range(num_res_blocks + 1):
                last = i == num_res_blocks and level > 0
                self.up.append(Stage(ResBlock(ch + skips.pop(), out, embed_dim, norm, dropout),
                                     attention(out) if attn else None, Upsample(out) if last else None))
                ch = out
        self.norm_out = norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    # -- conditioning -----------------------------------------------------------------------------------
    def condition_embedding(self, cond: torch.Tensor | None, uncond_mask: torch.Tensor | None,
                            batch: int) -> torch.Tensor:
        """(B, D): ``cond`` with the null embedding in the rows where ``uncond_mask`` is True (all if None).

        The null embedding is always part of the graph (``torch.where``), so its gradient exists in
        every step, also under DDP when no row of a batch is unconditional.
        """
        null = self.null_embedding
        if cond is None:
            return null.expand(batch, -1)
        if cond.shape != (batch, null.shape[0]):
            raise ValueError(f"cond has shape {tuple(cond.shape)}; expected ({batch}, {null.shape[0]})")
        cond = cond.to(null.dtype)
        if uncond_mask is None:
            uncond_mask = torch.zeros(batch, dtype=torch.bool, device=cond.device)
        elif uncond_mask.shape != (batch,):
            raise ValueError(f"uncond_mask has shape {tuple(uncond_mask.shape)}; expected ({batch},)")
        return torch.where(uncond_mask.to(device=cond.device, dtype=torch.bool)[:, None], null, cond)

    # -- forward ----------------------------------------------------------------------------------------
    def _run(self, stage: Stage, h: torch.Tensor, emb: torch.Tensor, ctx: ConditionContext) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, h, emb, ctx, use_reentrant=False)
        return stage(h, emb, ctx)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | int, cond: torch.Tensor | None = None,
                uncond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, H, W), t (B,) or scalar -> (B, out_channels, H, W) in the parameters' dtype."""
        b, _, height, width = x.shape
        step = 2 ** (self.levels - 1)
        if height % step or width % step:
            raise ValueError(f"latent size {height}x{width} is not divisible by {step} "
                             f"(2^(levels-1) for channel_mult={list(self.config.channel_mult)})")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        if t.shape != (b,):
            raise ValueError(f"t has shape {tuple(t.shape)}; expected ({b},) or a scalar")
        emb = F.silu(self.time_embed(t))
        sizes = [(height // 2 ** i, width // 2 ** i) for i in range(self.levels)]
        if self.null_embedding is None:
            ctx = ConditionContext()
        else:
            # unit-norm embeddings have components of size 1/sqrt(D): scaled to unit RMS, the scale the
            # conditioner's first Linear (default init) expects; unscaled, the map hardly varies between
            # identities and training barely learns to use it
            embedding = self.condition_embedding(cond, uncond_mask, b) * self.embedding_scale
            ctx = self.condition(embedding, sizes)

        h = self.conv_in(x.to(self.conv_in.weight.dtype))
        if isinstance(self.condition, ConcatConditioner):
            h = h + self.condition.input_features(ctx)
        skips = [h]
        for stage in self.down:
            h = self._run(stage, h, emb, ctx)
            skips.append(h)
        for stage in self.mid:
            h = self._run(stage, h, emb, ctx)
        for stage in self.up:
            h = self._run(stage, torch.cat([h, skips.pop()], dim=1), emb, ctx)
        return self.conv_out(F.silu(self.norm_out(h, ctx)))

    # -- bookkeeping ------------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: ``total``, ``conditioning`` (everything that exists only to read the
        embedding: conditioner, null embedding, SPADE / AdaGN modulation, cross-attention) and ``backbone``."""
        total = sum(p.numel() for p in self.parameters())
        cond = 0
        for name, p in self.named_parameters():
            parts = name.split(".")
            if parts[0] in ("condition", "null_embedding") or "cross" in parts or "shared" in parts \
                    or "to_gamma_beta" in parts:
                cond += p.numel()
        return {"total": total, "conditioning": cond, "backbone": total - cond}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):  # noqa: ANN001, ANN206
        """diffusers' loader with safetensors required (no pickle fallback) and plain initialisation
        unless asked otherwise. A local directory is read without network access."""
        kwargs.setdefault("use_safetensors", True)
        kwargs.setdefault("low_cpu_mem_usage", False)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)


def describe(model: ConditionedUNet) -> str:
    """One line: conditioning, widths and parameter counts in millions."""
    c = model.parameter_counts()
    cfg = model.config
    return (f"ConditionedUNet({cfg.conditioning}, channels {cfg.model_channels}x{list(cfg.channel_mult)}, "
            f"attention at {list(cfg.attention_resolutions)}): {c['total'] / 1e6:.2f}M parameters "
            f"({c['conditioning'] / 1e6:.2f}M conditioning)")
