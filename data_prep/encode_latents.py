"""Pre-encode face shards with a frozen autoencoder: latent shards + latents.json for diffusion training.

    python data_prep/encode_latents.py --autoencoder AE.safetensors --data SHARDS --out DIR
                                       [--batch-size N] [--device auto|cpu|cuda] [--overwrite]
                                       [--packing repeat|flat] [--dtype float32|float16]

One latent shard per face shard (same name and split) holding latent.npy (pre-quantisation branch
latents), shape.npy, id.npy and meta.json per sample; latents.json records the autoencoder's sha256 and
config, the source dataset, the latent layout and the packed-latent statistics of the train split. The
manifest is written last: a folder without it is unfinished. Re-running resumes (finished shards whose
face shard is unchanged are kept); --overwrite replaces latents made by another autoencoder.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fitdiff.data import DataError
from fitdiff.ldm.encode import encode_latents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--autoencoder", required=True, help="autoencoder export (.safetensors) or checkpoint (.ckpt)")
    parser.add_argument("--data", required=True, help="face-shard folder (manifest.json)")
    parser.add_argument("--out", required=True, help="latent-shard folder (created; re-running resumes)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per encoder batch (default 32)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--overwrite", action="store_true", help="replace latents of other settings; encode all anew")
    parser.add_argument("--packing", choices=("repeat", "flat"), default="repeat",
                        help="shape-coefficient packing of the layout (default repeat)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="storage of latent.npy (default float32)")
    parser.add_argument("--no-validate", action="store_true", help="skip the schema check of the face samples")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = encode_latents(
            args.autoencoder, args.data, args.out, batch_size=args.batch_size, device=args.device,
            overwrite=args.overwrite, packing=args.packing, latent_dtype=args.dtype, validate=not args.no_validate,
            progress=not args.no_progress,
        )
    except (DataError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = report.manifest.counts
    print(f"latents: train {counts['train']}, val {counts['val']}, test {counts['test']}; "
          f"shards written {len(report.written)}, kept {len(report.kept)}; "
          f"autoencoder sha256 {report.manifest.autoencoder_sha256}; manifest {args.out}/latents.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
