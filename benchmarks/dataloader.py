"""Data loading speed: the shard DataModule's train loader against a per-file PNG/NPY Dataset.

    python benchmarks/dataloader.py [--data DIR] [--samples 384] [--image 128] [--uv 64]
                                    [--batch 16] [--workers 2] [--batches 60] [--repeats 3]
                                    [--fields diffuse specular normals]

Both loaders read the same samples with the same decoders (OpenCV PNG, ``np.load(allow_pickle=False)``,
JSON), the same collate function, DataLoader workers and batch size:

* shards: ``FaceDataModule.train_dataloader()`` over ``{split}-NNNNN.tar`` (sequential tar reads,
  shuffle buffer, resampled shards), with and without the per-sample schema check;
* files:  ``FolderDataset`` (one file per field: ``<subject>/<image>/image.png`` ...), shuffled
  map-style DataLoader, no schema check.

``--fields`` restricts both loaders to some sample fields, e.g. the autoencoder stage's UV maps
(the shard loader then skips the other tar members, the per-file loader opens only those files).

Without ``--data`` a temporary dataset of random samples is written in both layouts. With ``--data`` the
shards are read in place and unpacked once into a temporary per-file tree. Every measurement runs one
warm-up pass first (workers started, page cache warm), then ``--batches`` batches, ``--repeats`` times;
the median rate is reported. Files live in the page cache for both loaders, so the numbers measure
per-file overheads (open/stat/read calls, Python per file) rather than disk seeks.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fitdiff.data import (
    DatasetWriter,
    FaceCollate,
    FaceDataModule,
    FolderDataset,
    decode_sample,
    load_manifest,
    random_sample,
    random_spec,
    read_shard,
    write_sample_folder,
)

log = logging.getLogger("benchmarks.dataloader")


def _make_dataset(root: Path, samples: int, image: int, uv: int, per_shard: int) -> Path:
    spec = random_spec(image_resolution=image, uv_resolution=uv, shape_dim=100, specular_channels=1)
    shards = root / "shards"
    with DatasetWriter(shards, spec, samples_per_shard=per_shard) as writer:
        for i in range(samples):
            writer.write("train", random_sample(f"subj{i // 4:05d}_{i % 4}", spec, i))
    return shards


def _unpack(shards: Path, folder: Path) -> None:
    manifest = load_manifest(shards)
    for entry in manifest.shards_for("train"):
        for raw in read_shard(str(shards / entry.name)):
            write_sample_folder(folder, decode_sample(raw))


def _evict(root: Path) -> None:
    """Drop ``root``'s files from the page cache (posix_fadvise DONTNEED; no root rights needed)."""
    os.sync()  # dirty pages cannot be dropped
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _rate(loader: DataLoader, batches: int, repeats: int, cold: Path | None = None) -> tuple[float, list[float]]:
    """Median samples/s over ``repeats`` timed passes of ``batches`` batches, after one warm-up pass.

    With ``cold``, that folder's files are evicted from the page cache before each timed pass.
    """

    def one_pass() -> tuple[int, float]:
        if cold is not None:
            _evict(cold)
        start, count = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            count += len(batch)
            if i + 1 >= batches:
                break
        return count, time.perf_counter() - start

    one_pass()  # warm-up: worker start-up, imports, page cache
    rates = []
    for _ in range(repeats):
        count, seconds = one_pass()
        rates.append(count / seconds)
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="shard folder with manifest.json (default: build a random one)")
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--image", type=int, default=128)
    parser.add_argument("--uv", type=int, default=64)
    parser.add_argument("--samples-per-shard", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=None, help="batches per timed pass (default: one epoch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fields", nargs="+", default=None, help="sample fields to load (default: all)")
    parser.add_argument("--cold", action="store_true",
                        help="evict the dataset files from the page cache before every timed pass")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="fitdiff-bench-") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        shards = args.data or _make_dataset(tmp_path, args.samples, args.image, args.uv, args.samples_per_shard)
        folder = tmp_path / "files"
        _unpack(shards, folder)
        manifest = load_manifest(shards)
        n = manifest.counts["train"]
        batches = args.batches or max(1, n // args.batch)
        n_files = sum(1 for _ in folder.rglob("*") if _.is_file())
        shard_bytes = sum(e.bytes for e in manifest.shards_for("train"))
        log.info("dataset: %d train samples (image %dpx, uv %dpx), %d shards / %.1f MB, %d files; prepared in %.1f s",
                 n, manifest.spec.image_resolution, manifest.spec.uv_resolution, len(manifest.shards_for("train")),
                 shard_bytes / 1e6, n_files, time.perf_counter() - start)
        log.info("fields: %s", ", ".join(args.fields) if args.fields else "all")
        log.info("loader: batch %d, %d workers, %d batches per pass, %d timed passes after 1 warm-up, %s page "
                 "cache; %d CPU cores", args.batch, args.workers, batches, args.repeats,
                 "cold" if args.cold else "warm", os.cpu_count() or 0)

        results = {}
        for name, validate in (("shards", False), ("shards+validate", True)):
            dm = FaceDataModule(str(shards), batch_size=args.batch, num_workers=args.workers, seed=0,
                                validate_samples=validate, steps_per_epoch=batches, shuffle_buffer=256,
                                fields=args.fields)
            dm.setup("fit")
            results[name] = _rate(dm.train_dataloader(), batches, args.repeats, shards if args.cold else None)
        files = DataLoader(FolderDataset(folder, fields=args.fields), batch_size=args.batch, shuffle=True, drop_last=True,
                           num_workers=args.workers, persistent_workers=args.workers > 0, collate_fn=FaceCollate())
        results["files"] = _rate(files, batches, args.repeats, folder if args.cold else None)

    for name, (rate, rates) in results.items():
        spread = ", ".join(f"{r:.0f}" for r in rates)
        print(f"{name:>16}: {rate:8.1f} samples/s   (passes: {spread})")
    ratio = results["shards"][0] / results["files"][0]
    print(f"{'ratio':>16}: {ratio:8.2f}x  shards / per-file (same decoders, no schema check on either)")
    print(f"{'validate cost':>16}: {results['shards'][0] / results['shards+validate'][0]:8.2f}x  "
          "shards without / with the per-sample schema check")


if __name__ == "__main__":
    main()
