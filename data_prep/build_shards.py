"""Build WebDataset shards from a fitted-dataset folder, split by subject, with manifest.json.

    python data_prep/build_shards.py --src DIR --out DIR [--strict] [--samples-per-shard N]
                                     [--val-fraction F --test-fraction F --seed S]

Input layout and outputs: data_prep/README.md. Bad samples go to OUT/rejects.jsonl (or, with --strict,
stop the run with exit status 1 naming the sample). Re-running resumes: finished shards whose inputs are
unchanged are kept as they are.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fitdiff.data import SampleError
from fitdiff.data.build import REJECTS_NAME, build_shards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="fitted-dataset folder: SRC/<subject>/<image>/<files>")
    parser.add_argument("--out", required=True, help="shard folder (created; re-running resumes)")
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
    try:
        report = build_shards(
            args.src, args.out, samples_per_shard=args.samples_per_shard, val_fraction=args.val_fraction,
            test_fraction=args.test_fraction, seed=args.seed, strict=args.strict, spec_overrides=overrides,
            progress=not args.no_progress,
        )
    except (SampleError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = report.manifest.counts
    print(f"samples: train {counts['train']}, val {counts['val']}, test {counts['test']}; "
          f"shards written {len(report.written)}, kept {len(report.kept)}; rejected {len(report.rejects)} "
          f"(see {args.out}/{REJECTS_NAME})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
