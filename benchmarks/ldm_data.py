"""Diffusion training throughput: pre-encoded latents against encoding the face maps on the fly.

    python benchmarks/ldm_data.py [--experiment quickstart_ldm|ldm_spade] [--samples 256] [--steps 10]
                                  [--warmup 2] [--device cpu|cuda] [--num-workers 0] [--precision 32-true]
                                  [--repeats 2] [--flops-only]

Three figures, in one run:

1. **FLOPs per sample** of the experiment's networks, counted on meta tensors (nothing is computed): the
   autoencoder's encoder forward against the denoiser's forward + backward. (encode + train) / train
   bounds what pre-encoding gains when arithmetic is all that counts.
2. **Loader throughput**, no model: batches of ``LatentDataModule`` (latent.npy, shape.npy, id.npy)
   against ``FaceDataModule`` with the diffusion fields (maps decoded from PNG / npy).
3. **Training throughput**: the same LatentDiffusionModule (same initial weights) trains ``warmup + steps``
   optimiser steps through a Lightning Trainer from each DataModule; on face batches it encodes the maps
   with its frozen autoencoder every step. Timing runs from the first step after the warm-up to the end of
   the last one; samples/s = steps x batch size / elapsed, the best of ``--repeats`` alternating runs
   per mode; the ratio latents / on the fly is printed (aim >= 3).

Parts 2 and 3 use random schema-valid faces at the experiment's UV resolution written as face shards, a
random-initialised autoencoder of the matching autoencoder experiment (exported to safetensors) and
latents made by ``fitdiff.ldm.encode.encode_latents``. At ``--experiment ldm_spade`` (512 x 512 maps, a
187 M-parameter autoencoder) they need a GPU; ``--flops-only`` prints part 1 alone.
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fitdiff.autoencoder import export_safetensors
from fitdiff.config.compose import compose_experiment
from fitdiff.data import (
    DIFFUSION_FIELDS,
    DatasetWriter,
    FaceDataModule,
    LatentDataModule,
    load_latent_manifest,
    random_sample,
    random_spec,
)
from fitdiff.ldm.encode import encode_latents

AUTOENCODER_EXPERIMENT = {"quickstart_ldm": "quickstart_ae", "ldm_spade": "ae_branched"}
UV_RESOLUTION = {"quickstart_ldm": 64, "ldm_spade": 512}
SHAPE_DIM = 50  # the embedded dataset's shape model; one shape plane at either latent size
MODULE = "fitdiff.ldm.module.LatentDiffusionModule"


class StepTimer(L.Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step (device synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    @staticmethod
    def _sync(module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            self._sync(module)
            self.end = time.perf_counter()
            self.steps += 1


def count_flops(experiment: str) -> tuple[float, float]:
    """(autoencoder encode, denoiser forward + backward) FLOPs per sample, on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    ae_cfg = compose_experiment(AUTOENCODER_EXPERIMENT[experiment], Path(tempfile.gettempdir()) / "ldm_data_ae")
    cfg = compose_experiment(experiment, Path(tempfile.gettempdir()) / "ldm_data_ldm")
    uv = UV_RESOLUTION[experiment]
    with torch.device("meta"):
        ae = instantiate(ae_cfg.model.net)
        side = uv // ae.downsampling_factor
        node = OmegaConf.to_container(cfg.model.net, resolve=True)
        node["in_channels"] = node["out_channels"] = ae.latent_channels + 1
        unet = instantiate(node)
        maps = {name: torch.empty(1, c, uv, uv) for name, c in ae.maps.items()}
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            ae.encode(maps)
        encode = counter.get_total_flops()
        x = torch.empty(1, node["in_channels"], side, side, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            unet(x, torch.zeros(1, dtype=torch.long), torch.empty(1, 512)).sum().backward()
        train = counter.get_total_flops()
    return float(encode), float(train)


def _faces(folder: Path, n: int, uv: int) -> Path:
    spec = random_spec(image_resolution=32, uv_resolution=uv, shape_dim=SHAPE_DIM, specular_channels=1)
    with DatasetWriter(folder, spec, samples_per_shard=64) as writer:
        for i in range(n):
            writer.write("val" if i % 16 == 15 else "train", random_sample(f"s{i // 2}_{i % 2}", spec, i))
    return folder


def _batches(loader) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def _loader_rate(dm: L.LightningDataModule, batches: int, warmup: int = 2) -> float:
    dm.setup("fit")
    stream = _batches(dm.train_dataloader())
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * dm.batch_size / (time.perf_counter() - start)


def _train_rate(model: L.LightningModule, dm: L.LightningDataModule, args) -> tuple[float, int, float]:
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.device, devices=1, precision=args.precision, max_steps=args.warmup + args.steps,
        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1, num_sanity_val_steps=0, callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    if timer.start is None or timer.end is None or not timer.steps:
        raise RuntimeError("no timed steps: increase --steps")
    elapsed = timer.end - timer.start
    return timer.steps * dm.batch_size / elapsed, timer.steps, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="quickstart_ldm", choices=sorted(AUTOENCODER_EXPERIMENT))
    parser.add_argument("--samples", type=int, default=256, help="faces written (1 in 16 to val)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="training runs per mode (alternating; best kept)")
    parser.add_argument("--loader-batches", type=int, default=20, help="batches timed per loader")
    parser.add_argument("--device", default="cpu", help="Lightning accelerator: cpu or cuda")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of both DataModules")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--flops-only", action="store_true", help="print the FLOP counts only")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    encode, train = count_flops(args.experiment)
    print(f"{args.experiment}: per sample, autoencoder encode {encode / 1e9:.1f} GFLOP, denoiser forward + "
          f"backward {train / 1e9:.1f} GFLOP: compute bound on the gain (encode + train) / train = "
          f"{(encode + train) / train:.2f}x")
    if args.flops_only:
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        uv = UV_RESOLUTION[args.experiment]
        faces = _faces(work / "faces", args.samples, uv)
        ae_cfg = compose_experiment(AUTOENCODER_EXPERIMENT[args.experiment], work / "run_ae")
        ae_path = export_safetensors(instantiate(ae_cfg.model.net), work / "ae.safetensors")
        device = "cuda" if args.device in ("cuda", "gpu") else "cpu"
        start = time.perf_counter()
        encode_latents(ae_path, faces, work / "latents", batch_size=32, device=device, progress=False)
        print(f"encode_latents: {args.samples} faces in {time.perf_counter() - start:.1f} s")

        overrides = [f"model.autoencoder={ae_path}", f"data.data_dir={work / 'latents'}", f"model._target_={MODULE}"]
        cfg = compose_experiment(args.experiment, work / "run_ldm", overrides)
        manifest = load_latent_manifest(work / "latents")  # the layout and statistics of both runs
        cfg.model.latents, cfg.model.layout, cfg.model.stats = None, manifest.layout, manifest.statistics
        batch_size = args.batch_size or int(cfg.data.batch_size)
        common = dict(batch_size=batch_size, num_workers=args.num_workers, shuffle_buffer=256, seed=0,
                      pin_memory=device == "cuda", persistent_workers=args.num_workers > 0)

        def datamodules() -> tuple[L.LightningDataModule, L.LightningDataModule]:
            return (LatentDataModule(str(work / "latents"), autoencoder=str(ae_path), **common),
                    FaceDataModule(str(faces), fields=list(DIFFUSION_FIELDS), **common))

        lat, fly = (_loader_rate(dm, args.loader_batches) for dm in datamodules())
        print(f"loader only (batch {batch_size}, {args.num_workers} workers): latents {lat:.0f} samples/s, "
              f"face maps {fly:.0f} samples/s ({lat / fly:.1f}x)")

        template = instantiate(cfg.model)
        print(f"training: latent {tuple(template.layout.latent_shape)}, denoiser "
              f"{sum(p.numel() for p in template.denoiser.parameters()) / 1e6:.2f} M parameters, autoencoder "
              f"{sum(p.numel() for p in template.autoencoder.parameters()) / 1e6:.2f} M, batch {batch_size}, "
              f"{args.device}, {args.precision}, {torch.get_num_threads()} threads; best of {args.repeats}")
        rates: dict[str, float] = {}
        for repeat in range(args.repeats):  # the modes alternate, so a slow spell of the machine hits both
            for label, dm in zip(("latents", "on the fly"), datamodules()):
                rate, steps, elapsed = _train_rate(copy.deepcopy(template), dm, args)
                rates[label] = max(rates.get(label, 0.0), rate)
                print(f"  {label:>10} #{repeat + 1}: {steps} steps in {elapsed:.2f} s = {rate:.2f} samples/s")
        print(f"ratio latents / on the fly: {rates['latents'] / rates['on the fly']:.2f}x (aim >= 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
