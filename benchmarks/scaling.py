"""What the full-scale configs cost: parameters, FLOPs and activation memory per training sample, GPU-hours.

    python benchmarks/scaling.py [--stages ae ldm] [--map-res 512] [--ae-cpu-res 64] [--cpu-steps 3]
                                 [--gpus 8] [--mfu 0.4] [--threads N]

Stages: ``ae`` is ``experiment=ae_branched`` (both phases: reconstruction before ``disc_start``, GAN after),
``ldm`` is ``experiment=ldm_spade`` (the denoiser over the ae_branched latents of ``--map-res`` maps: factor
8, 12 branch channels + 1 shape plane). The networks, losses, per-device batch and step budget are read
from the composed configs.

- **FLOPs** per training sample, forward + backward, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls, convolutions, attention; 2 FLOPs per multiply-add; element-wise ops are not counted, as is the
  convention for MFU) on the *meta* device at full resolution: shapes only, nothing is computed. The
  autoencoder's step is the module's own generator loss (L1, LPIPS, angular, codebook, and in the GAN
  phase discriminator + adaptive weight) and the discriminator loss, each with its backward pass;
  the quantisers run in eval mode there (their data-dependent code-restart bookkeeping has no shapes to
  count; its cost is negligible). The diffusion step is the denoiser forward + backward.
- **Activation memory** per sample: the bytes of the tensors autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters excluded), float32, at
  batch 2 minus batch 1, on the meta device at full resolution. The bf16-mixed figure scales it by the
  ratio of the same count under CPU autocast (bfloat16) to float32, measured on real tensors at batch 1
  and ``--ae-cpu-res`` (autoencoder) or full resolution (diffusion).
- **CPU throughput**: real training steps on this machine (forward, backward, Adam; the autoencoder's GAN
  phase with both optimisers, at ``--ae-cpu-res`` maps; the diffusion step with its EMA update, at full
  resolution), batch 1, median of ``--cpu-steps`` after one warm-up step.
- **GPU estimate**: total FLOPs = sum over phases of FLOPs per sample x global batch x steps, with the
  global batch = per-device batch x ``--gpus`` (the learning rates are set for 8 GPUs), at ``--mfu`` of the
  bf16 dense peak: A100 312 TFLOP/s, H100 SXM 989 TFLOP/s. An estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from fitdiff.config.compose import compose_experiment

log = logging.getLogger("benchmarks.scaling")

#: bf16 dense peak, FLOP/s
PEAKS = {"A100": 312e12, "H100": 989e12}
GIB = 2**30


# ---------------------------------------------------------------------------------------------- meta device


class _AutocastOffMeta:
    """``torch.autocast`` that is a no-op on the meta device (autocast has no meta dtype) and real elsewhere."""

    _real = torch.autocast

    def __init__(self, device_type: str, *args: Any, **kwargs: Any) -> None:
        meta = device_type == "meta"
        self._inner = contextlib.nullcontext() if meta else self._real(device_type, *args, **kwargs)

    def __enter__(self) -> Any:
        return self._inner.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)


_META_LIBRARY: Any = None


def _register_meta_bincount() -> None:
    """A meta kernel for ``bincount`` (the codebook usage count): its length is ``minlength`` there."""
    global _META_LIBRARY
    if _META_LIBRARY is not None or torch._C._dispatch_has_kernel_for_dispatch_key("aten::bincount", "Meta"):
        return
    _META_LIBRARY = torch.library.Library("aten", "IMPL", "Meta")

    def bincount(self: torch.Tensor, weights: torch.Tensor | None = None, minlength: int = 0) -> torch.Tensor:
        dtype = torch.long if weights is None else torch.double
        return torch.empty(minlength, dtype=dtype, device="meta")

    _META_LIBRARY.impl("bincount", bincount)


class SavedBytes:
    """Bytes of the storages autograd saves for backward inside the context, each once, parameters excluded."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self._skip = {t.untyped_storage()._cdata for m in modules for t in [*m.parameters(), *m.buffers()]}
        self.storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in self._skip:
            self.storages[storage._cdata] = storage.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


def count(step: Callable, batch: int, modules: list[torch.nn.Module], backward: bool = True) -> tuple[float, int]:
    """(FLOPs, saved bytes) of ``step(batch)``: FLOPs of forward (and backward), saved bytes of the forward."""
    saved = SavedBytes(modules)
    with FlopCounterMode(display=False) as flops:
        step(batch, saved, backward)
    return float(flops.get_total_flops()), saved.total


def per_sample(step: Callable, modules: list[torch.nn.Module], backward: bool = True) -> tuple[float, float]:
    """(FLOPs, saved bytes) per sample: batch 2 minus batch 1 (what does not grow with the batch, such as
    the bf16 copies of the weights under autocast, drops out)."""
    f1, m1 = count(step, 1, modules, backward)
    f2, m2 = count(step, 2, modules, backward)
    return f2 - f1, float(m2 - m1)


# ---------------------------------------------------------------------------------------------- the stages


def _maps(module: Any, b: int, res: int, device: str, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    out = {}
    for name, channels in module.net.maps.items():
        x = torch.rand(b, channels, res, res, generator=gen) if device == "cpu" else torch.empty(
            b, channels, res, res, device=device)
        out[name] = torch.nn.functional.normalize(x - 0.5, dim=1) if name == "normals" and device == "cpu" else x
    return out


def ae_step_fn(module: Any, res: int, device: str, step: int) -> Callable:
    """The autoencoder's training step at generator step ``step`` (no optimiser): forward + backward."""

    def run(b: int, saved: SavedBytes | None = None, backward: bool = True) -> None:
        batch = _maps(module, b, res, device, torch.Generator().manual_seed(b))
        with saved or contextlib.nullcontext():
            out = module.net(batch)
            g_loss, _ = module.loss.generator_loss(out, module.net.last_layers(), step)
        if not backward:
            return
        g_loss.backward()
        if module.loss.disc_active(step):
            d_loss, _ = module.loss.discriminator_loss(out)
            d_loss.backward()

    return run


def ldm_channels(ae_cfg: Any, map_res: int) -> tuple[int, int]:
    """(latent channels, latent size) of the ae_branched latents of ``map_res`` maps plus one shape plane."""
    net = ae_cfg.model.net
    branches = len(net.branches) if net.get("branches") else len(net.maps)
    size = map_res // 2 ** (len(net.ch_mult) - 1)
    return branches * int(net.embed_dim) + 1, size  # one shape plane holds up to size**2 coefficients


def ldm_step_fn(net: torch.nn.Module, channels: int, size: int, device: str) -> Callable:
    def run(b: int, saved: SavedBytes | None = None, backward: bool = True) -> None:
        gen = torch.Generator().manual_seed(b)
        if device == "cpu":
            x = torch.randn(b, channels, size, size, generator=gen)
            t = torch.randint(0, 1000, (b,), generator=gen)
            cond = torch.nn.functional.normalize(torch.randn(b, 512, generator=gen), dim=1)
            uncond = torch.rand(b, generator=gen) < 0.1
        else:
            x, t = torch.empty(b, channels, size, size, device=device), torch.zeros(b, dtype=torch.long, device=device)
            cond, uncond = torch.empty(b, 512, device=device), torch.zeros(b, dtype=torch.bool, device=device)
        with saved or contextlib.nullcontext():
            out = net(x, t, cond, uncond)
        if backward:
            (out.float() - x).pow(2).mean().backward()

    return run


def cpu_saved(step: Callable, modules: list[torch.nn.Module]) -> tuple[float, float]:
    """Saved bytes per sample (float32, bfloat16 autocast) of real forwards on the CPU (batch 2 - 1)."""
    _, fp32 = per_sample(step, modules, backward=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, bf16 = per_sample(step, modules, backward=False)
    for m in modules:
        m.zero_grad(set_to_none=True)
    return fp32, bf16


def time_steps(step: Callable[[], None], n: int) -> tuple[float, list[float]]:
    """(FLOPs of one step, counted in the warm-up step; seconds of each of the ``n`` steps after it)."""
    with FlopCounterMode(display=False) as flops:
        step()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(flops.get_total_flops()), times


def measure_ae(args: argparse.Namespace) -> dict[str, Any]:
    cfg = compose_experiment("ae_branched", "/tmp/fitdiff-scaling", ["logger=none"])
    disc_start, steps = int(cfg.model.loss.disc_start), int(cfg.trainer.max_steps)
    phases = {"reconstruction": (0, min(disc_start, steps)), "GAN": (disc_start, max(0, steps - disc_start))}
    _register_meta_bincount()
    with mock.patch.object(torch, "autocast", _AutocastOffMeta), torch.device("meta"):
        meta = instantiate(cfg.model).to("meta")
    meta.train()
    for q in meta.net.quantizers.values():
        q.eval()
    res = {"name": "ae_branched", "batch": int(cfg.data.batch_size), "phases": {}}
    res["params"] = sum(p.numel() for p in [*meta.net.parameters(), *meta.loss.discriminators.parameters()])
    with mock.patch.object(torch, "autocast", _AutocastOffMeta):
        for phase, (at, n) in phases.items():
            flops, saved = per_sample(ae_step_fn(meta, args.map_res, "meta", at), [meta])
            res["phases"][phase] = dict(steps=n, flops=flops, saved=saved)
        # the same count at the CPU steps' resolution, to check against real tensors
        _, meta_small = per_sample(ae_step_fn(meta, args.ae_cpu_res, "meta", disc_start), [meta], backward=False)
    del meta

    module = instantiate(cfg.model)  # real weights, CPU
    module.train()
    gan_step = ae_step_fn(module, args.ae_cpu_res, "cpu", disc_start)
    fp32, bf16 = cpu_saved(gan_step, [module])
    res["bf16_ratio"] = bf16 / fp32
    opt_g = torch.optim.Adam(module.net.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(module.loss.discriminators.parameters(), lr=1e-4, betas=(0.5, 0.9))

    def train_step() -> None:
        gan_step(1)
        opt_g.step()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)

    cpu_flops, times = time_steps(train_step, args.cpu_steps)
    res["cpu"] = dict(res=args.ae_cpu_res, flops=cpu_flops, times=times, saved_meta=meta_small, saved_real=fp32)
    return res


def measure_ldm(args: argparse.Namespace) -> dict[str, Any]:
    from fitdiff.ldm.ema import DenoiserEMA

    cfg = compose_experiment("ldm_spade", "/tmp/fitdiff-scaling", ["logger=none"])
    channels, size = ldm_channels(compose_experiment("ae_branched", "/tmp/fitdiff-scaling", ["logger=none"]),
                                  args.map_res)
    node = OmegaConf.to_container(cfg.model.net, resolve=True)
    node.update(in_channels=channels, out_channels=channels)
    with torch.device("meta"):
        meta = instantiate(node).to("meta")
    flops, saved = per_sample(ldm_step_fn(meta, channels, size, "meta"), [meta])
    res = {"name": "ldm_spade", "batch": int(cfg.data.batch_size), "params": sum(p.numel() for p in meta.parameters()),
           "latent": (channels, size), "phases": {"diffusion": dict(steps=int(cfg.trainer.max_steps), flops=flops,
                                                                   saved=saved)}}
    del meta
    net = instantiate(node).train()
    step = ldm_step_fn(net, channels, size, "cpu")
    fp32, bf16 = cpu_saved(step, [net])
    res["bf16_ratio"] = bf16 / fp32
    ema = DenoiserEMA(net, float(cfg.model.ema_decay))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)

    def train_step() -> None:
        step(1)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net)

    cpu_flops, times = time_steps(train_step, args.cpu_steps)
    res["cpu"] = dict(res=size, flops=cpu_flops, times=times, saved_meta=saved, saved_real=fp32)
    return res


# ---------------------------------------------------------------------------------------------- report


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    log.info("")
    log.info("| stage / phase | trainable parameters | steps | global batch | TFLOP / sample (fwd + bwd) "
             "| activations / sample, fp32 (bf16-mixed) | total EFLOP |")
    log.info("|---|---:|---:|---:|---:|---:|---:|")
    totals = {}
    for r in results:
        global_batch = r["batch"] * args.gpus
        totals[r["name"]] = 0.0
        for phase, p in r["phases"].items():
            total = p["flops"] * global_batch * p["steps"]
            totals[r["name"]] += total
            log.info("| %s / %s | %.1f M | %d | %d (%d x %d) | %.3f | %.2f GiB (%.2f GiB) | %.1f |", r["name"], phase,
                     r["params"] / 1e6, p["steps"], global_batch, r["batch"], args.gpus, p["flops"] / 1e12,
                     p["saved"] / GIB, p["saved"] * r["bf16_ratio"] / GIB, total / 1e18)
    log.info("")
    log.info("| stage | per-device activations at its batch, bf16-mixed | %s |",
             " | ".join(f"{args.gpus}x{g} at {args.mfu:.0%} MFU: hours (GPU-hours)" for g in PEAKS))
    log.info("|---|---:|%s", "---:|" * len(PEAKS))
    for r in results:
        peak_saved = max(p["saved"] for p in r["phases"].values()) * r["bf16_ratio"] * r["batch"]
        cells = []
        for peak in PEAKS.values():
            hours = totals[r["name"]] / (args.gpus * peak * args.mfu) / 3600
            cells.append(f"{hours:.1f} h ({hours * args.gpus:.0f})")
        log.info("| %s | %.1f GiB (batch %d) | %s |", r["name"], peak_saved / GIB, r["batch"], " | ".join(cells))
    log.info("")
    log.info("| stage, CPU (%d threads), batch 1 | input | GFLOP / step | s / step (median of %d) | samples / s "
             "| achieved GFLOP/s |", torch.get_num_threads(), args.cpu_steps)
    log.info("|---|---|---:|---:|---:|---:|")
    for r in results:
        c = r["cpu"]
        s = statistics.median(c["times"])
        what = f"{c['res']}x{c['res']} maps" if r["name"].startswith("ae") else f"{r['latent'][0]} x {c['res']}x{c['res']} latent"
        log.info("| %s | %s | %.1f | %.2f | %.3f | %.1f |", r["name"], what, c["flops"] / 1e9, s, 1 / s,
                 c["flops"] / s / 1e9)
    log.info("")
    for r in results:
        c = r["cpu"]
        log.info("CHECK %s activations / sample at the CPU input, fp32: meta count %.3f GiB, real tensors %.3f GiB; "
                 "bf16-mixed / fp32 = %.3f", r["name"], c["saved_meta"] / GIB, c["saved_real"] / GIB, r["bf16_ratio"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=["ae", "ldm"], choices=["ae", "ldm"])
    parser.add_argument("--map-res", type=int, default=512, help="full-scale UV map resolution (pixels)")
    parser.add_argument("--ae-cpu-res", type=int, default=64, help="map resolution of the autoencoder's CPU steps")
    parser.add_argument("--cpu-steps", type=int, default=3, help="timed CPU steps after one warm-up")
    parser.add_argument("--gpus", type=int, default=8, help="devices x nodes of the GPU estimate")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation of the GPU estimate")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the tables once, on stdout, whatever the libraries configure
    logging.getLogger("fitdiff.metrics.lpips").setLevel(logging.ERROR)  # random LPIPS backbone: same FLOPs
    log.info("torch %s, CPU, %d threads; full scale: %dx%d maps", torch.__version__, torch.get_num_threads(),
             args.map_res, args.map_res)
    measures = {"ae": measure_ae, "ldm": measure_ldm}
    results = []
    for stage in args.stages:
        start = time.perf_counter()
        results.append(measures[stage](args))
        log.info("%s measured in %.0f s", results[-1]["name"], time.perf_counter() - start)
    report(results, args)


if __name__ == "__main__":
    main()
