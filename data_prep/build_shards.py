"""Build WebDataset shards from a fitted-dataset folder, split by subject, with manifest.json; or index
existing shards (written by another tool with the schema's member names) by writing their manifest.json.

    python data_prep/build_shards.py --src DIR --out DIR [--strict] [--samples-per-shard N]
                                     [--val-fraction F --test-fraction F --seed S]
    python data_prep/build_shards.py --index SHARDS_DIR [--split train|val|test] [--overwrite]

Input layout and outputs: data_prep/README.md. Bad samples go to OUT/rejects.jsonl (or, with --strict,
stop the run with exit status 1 naming the sample). Re-running resumes: finished shards whose inputs are
unchanged are kept as they are.

--index validates every sample of every *.tar file in SHARDS_DIR, computes the statistics and writes
SHARDS_DIR/manifest.json; the shards are only read, never changed. A manifest records one split per
shard: a shard whose file name says train, val or test (a word of its name: train-00000.tar,
faces_val_3.tar) goes to that split; every other shard goes to --split (without it, such shards are an
error that lists them). An invalid sample fails the index (exit status 1, every bad sample listed).
"""

from __future__ import annotations

import argparse
import logging
import sys

from fitdiff.data import DataError, InvalidShardsError, SampleError
from fitdiff.data.build import REJECTS_NAME, build_shards
from fitdiff.data.index import index_shards
from fitdiff.data.manifest import SPLITS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", help="fitted-dataset folder: SRC/<subject>/<image>/<files>")
    parser.add_argument("--out", help="shard folder (created; re-running resumes)")
    parser.add_argument("--index", metavar="SHARDS_DIR",
                        help="write manifest.json for the existing shards in SHARDS_DIR (instead of --src/--out)")
    parser.add_argument("--split", choices=SPLITS,
                        help="with --index: split of the shards whose file name says none of train/val/test")
    parser.add_argument("--overwrite", action="store_true", help="with --index: replace an existing manifest.json")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--val-fraction", type=float, default=0.05, help="fraction of subjects in val")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="fraction of subjects in test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject split")
    parser.add_argument("--strict", action="store_true", help="fail at the first bad sample")
    parser.add_argument("--specular-channels", type=int, choices=(1, 3), help="force the specular channel count")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    overrides = {} if args.specular_channels is None else {"specular_channels": args.specular_channels}
    if args.index is not None:
        if args.src or args.out:
            parser.error("--index takes no --src / --out: it writes the manifest beside the shards")
        return _index(args, overrides)
    if not (args.src and args.out):
        parser.error("pass --src and --out (build shards), or --index SHARDS_DIR (index existing shards)")
    try:
        report = build_shards(
            args.src, args.out, samples_per_shard=args.samples_per_shard, val_fraction=args.val_fraction,
            test_fraction=args.test_fraction, seed=args.seed, strict=args.strict, spec_overrides=overrides,
            progress=not args.no_progress,
        )
    except (SampleError, OSError, ValueError) as exc:  # OSError: unreadable input, a full disk (DiskFullError)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = report.manifest.counts
    print(f"samples: train {counts['train']}, val {counts['val']}, test {counts['test']}; "
          f"shards written {len(report.written)}, kept {len(report.kept)}; rejected {len(report.rejects)} "
          f"(see {args.out}/{REJECTS_NAME})")
    return 0


def _index(args: argparse.Namespace, overrides: dict) -> int:
    try:
        report = index_shards(args.index, split=args.split, spec_overrides=overrides, overwrite=args.overwrite,
                              progress=not args.no_progress)
    except InvalidShardsError as exc:
        print(f"error: {len(exc.problems)} invalid sample(s) in {args.index}; no manifest written:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = report.manifest.counts
    print(f"indexed {args.index}: samples train {counts['train']}, val {counts['val']}, test {counts['test']} in "
          f"{len(report.manifest.shards)} shards ({len(report.by_name)} split by file name); wrote "
          f"{args.index}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
