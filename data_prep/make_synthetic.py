"""Build the embedded synthetic fitted dataset (procedural subjects with known ground truth).

    python data_prep/make_synthetic.py --out DIR [--subjects 400] [--images-per-subject 4] [--uv-res 64]
        [--image-res 128] [--seed 0] [--workers 2] [--val-subjects N | --val-fraction F]
        [--test-subjects N | --test-fraction F] [--recognizer train|arcface_random|WEIGHTS]
        [--recognizer-images 8] [--recognizer-shared-images 12] [--recognizer-epochs 10]
        [--no-eval-recognizer] [--overwrite]

Writes DIR/{train,val,test}-NNNNN.tar shards, DIR/manifest.json, DIR/recognizer.safetensors (the
identity recognizer trained on the training subjects), DIR/eval_recognizer.safetensors (a second
recognizer, another architecture and seed, that only judges identity in evaluation) and
DIR/synthetic.json (configuration, subjects per split, recognizer records). The same arguments give byte-identical shards. Check the identity signal
with data_prep/verify_identity.py --data DIR.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fitdiff.synthetic.generate import SyntheticConfig, generate_dataset
from fitdiff.synthetic.recognizer_training import RecognizerTrainingConfig
from fitdiff.synthetic.shape_space import SHAPE_SPACES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="destination folder")
    parser.add_argument("--subjects", type=int, default=SyntheticConfig.subjects)
    parser.add_argument("--images-per-subject", type=int, default=4)
    parser.add_argument("--uv-res", type=int, default=64, help="side of the UV maps, texels")
    parser.add_argument("--image-res", type=int, default=128, help="side of the photos, pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (1 = no pool)")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of recognizer training and embedding"
    )
    parser.add_argument(
        "--val-subjects", type=int, help="held-out validation subjects (overrides --val-fraction)"
    )
    parser.add_argument(
        "--test-subjects", type=int, help="held-out test subjects (overrides --test-fraction)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--shape-model", help="PCA shape model .npz (default: the procedural model)")
    parser.add_argument("--n-vertices", type=int, default=5000, help="procedural shape model vertices")
    parser.add_argument("--n-components", type=int, default=50, help="procedural shape model components")
    parser.add_argument(
        "--recognizer",
        default="train",
        help="'train' (default), 'arcface_random', or synthetic-recognizer weights to reuse",
    )
    parser.add_argument(
        "--shape-space",
        default=SyntheticConfig.shape_space,
        choices=SHAPE_SPACES,
        help="procedural shape model without its similarity directions ('observable') or as it is",
    )
    parser.add_argument(
        "--recognizer-images",
        type=int,
        default=SyntheticConfig.recognizer_images,
        help="extra renders per training subject",
    )
    parser.add_argument(
        "--recognizer-shared-images",
        type=int,
        default=SyntheticConfig.recognizer_shared_images,
        help="renders per training subject wearing a shared-pool appearance (only the shape identifies them)",
    )
    parser.add_argument(
        "--appearance-pool",
        type=int,
        default=SyntheticConfig.appearance_pool,
        help="appearances in the shared pool",
    )
    parser.add_argument("--recognizer-epochs", type=int, default=RecognizerTrainingConfig.epochs)
    parser.add_argument("--no-eval-recognizer", action="store_true",
                        help="skip the evaluation recognizer (DIR/eval_recognizer.safetensors, the identity judge "
                             "of the reconstruction tables)")
    parser.add_argument("--samples-per-shard", type=int, default=256)
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        cfg = SyntheticConfig(
            out=args.out,
            subjects=args.subjects,
            images_per_subject=args.images_per_subject,
            uv_res=args.uv_res,
            image_res=args.image_res,
            seed=args.seed,
            workers=args.workers,
            threads=args.threads,
            val_subjects=args.val_subjects,
            test_subjects=args.test_subjects,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            shape_model=args.shape_model,
            n_vertices=args.n_vertices,
            n_components=args.n_components,
            recognizer=args.recognizer,
            shape_space=args.shape_space,
            recognizer_images=args.recognizer_images,
            recognizer_shared_images=args.recognizer_shared_images,
            appearance_pool=args.appearance_pool,
            training=RecognizerTrainingConfig(epochs=args.recognizer_epochs),
            eval_recognizer=not args.no_eval_recognizer,
            samples_per_shard=args.samples_per_shard,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        report = generate_dataset(cfg)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = report.manifest.counts
    times = ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items())
    print(
        f"wrote {args.out}: train {counts['train']}, val {counts['val']}, test {counts['test']} samples "
        f"in {len(report.manifest.shards)} shard(s)"
    )
    print(f"recognizer: {report.recognizer}")
    if report.training_loss:
        print(f"recognizer ArcFace loss per epoch: {' '.join(f'{x:.3f}' for x in report.training_loss)}")
    print(f"time: {times}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
