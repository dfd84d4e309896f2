"""Denoiser training-step speed: ConditionedUNet against diffusers' UNet2DModel with the same blocks.

    python benchmarks/unet.py [--presets quickstart mid] [--batch B] [--latent N] [--repeats 7]
                              [--variants spade adagn crossattn concat] [--optimizer] [--dtype float32|bfloat16]
                              [--threads N] [--device cpu|cuda] [--profile]

One step is forward + backward of an MSE loss (``--optimizer``: + an AdamW step) at random timesteps.
The peer is ``UNet2DModel`` built with the same ``block_out_channels``, ``layers_per_block``, Attn/plain
down and up blocks at the same downsampling factors, 32 GroupNorm groups (attention's too), eps 1e-5,
scale-shift timestep conditioning and the same channels per attention head, so with
``conditioning=none`` both networks are the same function class with nearly the same parameter count.
The conditioned variants get unit-norm 512-d embeddings with 10% of the rows unconditional.
Every repeat times each model once, in turn, so load on a shared machine hits all of them alike;
the table shows the median over ``--repeats`` after two warm-up steps each, in wall time and, on the
CPU, in process CPU time (steadier than wall time on a busy machine, and equal to it on one thread of
an idle one). ``bfloat16`` runs the
float32 weights under autocast. Presets: ``quickstart`` (latent 16x16, 10 channels, 64 x [1, 2, 2],
attention at factor 4, batch 32, SPADE map 32 x 4 x 4), ``mid`` (32x32, 13 channels, 96 x [1, 2, 3, 4],
attention at 2, 4, 8, batch 8, map 64 x 8 x 8), ``full`` (64x64, 13 channels, 192 x [1, 2, 3, 4], attention
at 2, 4, 8, batch 4, map 128 x 8 x 8).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import time

import torch
import torch.nn.functional as F

from fitdiff.ldm import ConditionedUNet

log = logging.getLogger("benchmarks.unet")

PRESETS = {
    "quickstart": dict(latent=16, channels=10, model_channels=64, channel_mult=[1, 2, 2], attention=[4], batch=32,
                       map_channels=32, map_res=4),
    "mid": dict(latent=32, channels=13, model_channels=96, channel_mult=[1, 2, 3, 4], attention=[2, 4, 8], batch=8,
                map_channels=64, map_res=8),
    "full": dict(latent=64, channels=13, model_channels=192, channel_mult=[1, 2, 3, 4], attention=[2, 4, 8],
                 batch=4, map_channels=128, map_res=8),
}


def diffusers_peer(p: dict, head_channels: int, num_res_blocks: int) -> torch.nn.Module:
    """UNet2DModel with the blocks, widths, attention placement and norms of preset ``p``."""
    from diffusers import UNet2DModel

    factors = [2 ** i for i in range(len(p["channel_mult"]))]
    attn = [f in p["attention"] for f in factors]
    return UNet2DModel(
        sample_size=p["latent"], in_channels=p["channels"], out_channels=p["channels"],
        block_out_channels=[p["model_channels"] * m for m in p["channel_mult"]], layers_per_block=num_res_blocks,
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        attention_head_dim=head_channels, norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift", flip_sin_to_cos=True, freq_shift=0,
    )


def ours(p: dict, conditioning: str, head_channels: int, num_res_blocks: int) -> ConditionedUNet:
    return ConditionedUNet(
        in_channels=p["channels"], out_channels=p["channels"], model_channels=p["model_channels"],
        channel_mult=p["channel_mult"], num_res_blocks=num_res_blocks, attention_resolutions=p["attention"],
        head_channels=head_channels, conditioning=conditioning, spade_map_channels=p["map_channels"],
        spade_map_res=p["map_res"],
    )


def make_step(model: torch.nn.Module, inputs: dict, dev: torch.device, dtype: torch.dtype, optimizer: bool,
              peer: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if optimizer else None
    x, t, target = inputs["x"], inputs["t"], inputs["target"]

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext():
            if peer:
                out = model(x, t, return_dict=False)[0]
            else:
                out = model(x, t, inputs["cond"], inputs["uncond"])
            loss = F.mse_loss(out.float(), target)
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    return step


def run_preset(name: str, p: dict, args: argparse.Namespace, dev: torch.device) -> None:
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    b, n, c = p["batch"], p["latent"], p["channels"]
    inputs = {
        "x": torch.randn(b, c, n, n, generator=gen).to(dev),
        "t": torch.randint(0, 1000, (b,), generator=gen).to(dev),
        "target": torch.randn(b, c, n, n, generator=gen).to(dev),
        "cond": F.normalize(torch.randn(b, 512, generator=gen), dim=1).to(dev),
        "uncond": (torch.rand(b, generator=gen) < 0.1).to(dev),
    }
    torch.manual_seed(0)
    models = {"diffusers UNet2DModel": (diffusers_peer(p, args.head_channels, args.num_res_blocks), True)}
    for variant in ["none", *args.variants]:
        models[f"ours, {variant}"] = (ours(p, variant, args.head_channels, args.num_res_blocks), False)
    steps, params = {}, {}
    for key, (model, peer) in models.items():
        model.to(dev).train()
        params[key] = sum(q.numel() for q in model.parameters())
        steps[key] = make_step(model, inputs, dev, dtype, args.optimizer, peer)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for fn in steps.values():
        for _ in range(2):
            fn()
    times = {key: [] for key in steps}
    cpu_times = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, fn in steps.items():
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            sync()
            times[key].append((time.perf_counter() - start) * 1e3)
            cpu_times[key].append((time.process_time() - cpu_start) * 1e3)
    ms = {key: statistics.median(v) for key, v in times.items()}
    cpu = {key: statistics.median(v) for key, v in cpu_times.items()}
    peer_ms, none_ms = ms["diffusers UNet2DModel"], ms["ours, none"]
    what = "forward + backward" + (" + AdamW step" if args.optimizer else "")
    log.info("")
    log.info("preset %s: batch %d, latent %dx%d x %d channels, %d x %s, attention at %s, %d res blocks, "
             "%d channels per head, SPADE map %d x %dx%d, %s, %s; median of %d", name, b, n, n, c,
             p["model_channels"], p["channel_mult"], p["attention"], args.num_res_blocks, args.head_channels,
             p["map_channels"], p["map_res"], p["map_res"], args.dtype, what, args.repeats)
    on_cpu = dev.type == "cpu"
    log.info("| model | parameters | ms / step | ratio to diffusers | ratio to ours, none |%s",
             " CPU ms / step | CPU ratio to diffusers | CPU ratio to ours, none |" if on_cpu else "")
    log.info("|---|---:|---:|---:|---:|%s", "---:|---:|---:|" if on_cpu else "")
    peer_cpu, none_cpu = cpu["diffusers UNet2DModel"], cpu["ours, none"]
    for key in steps:
        extra = (f" {cpu[key]:.1f} | {cpu[key] / peer_cpu:.2f} | {cpu[key] / none_cpu:.2f} |" if on_cpu else "")
        log.info("| %s | %.2fM | %.1f | %.2f | %.2f |%s", key, params[key] / 1e6, ms[key], ms[key] / peer_ms,
                 ms[key] / none_ms, extra)

    def ratio(name: str, a: str, b: str) -> None:
        cpu_part = f" (CPU time {cpu[a] / cpu[b]:.2f})" if on_cpu else ""
        log.info("RATIO %s = %.2f%s", name, ms[a] / ms[b], cpu_part)

    ratio("ours(none) / diffusers", "ours, none", "diffusers UNet2DModel")
    for variant in args.variants:
        ratio(f"ours({variant}) / ours(none)", f"ours, {variant}", "ours, none")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        for key in steps:
            with profile(activities=activities) as prof:
                steps[key]()
            print(f"\n{key}\n" + prof.key_averages().table(sort_by=sort, row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["quickstart", "mid"], choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=None, help="override the presets' batch size")
    parser.add_argument("--latent", type=int, default=None, help="override the presets' latent size (square)")
    parser.add_argument("--variants", nargs="*", default=["spade", "adagn", "crossattn", "concat"],
                        help="conditioned variants timed beside conditioning=none")
    parser.add_argument("--head-channels", type=int, default=32)
    parser.add_argument("--num-res-blocks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--optimizer", action="store_true", help="include an AdamW step in each step")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--profile", action="store_true", help="print the top operators of one step per model")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 is steadier on a busy shared CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    import diffusers

    log.info("torch %s, diffusers %s, %s", torch.__version__, diffusers.__version__, where)
    for name in args.presets:
        p = dict(PRESETS[name])
        p["batch"] = args.batch or p["batch"]
        p["latent"] = args.latent or p["latent"]
        run_preset(name, p, args, dev)


if __name__ == "__main__":
    main()
