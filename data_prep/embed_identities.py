"""Compute or refresh the identity embeddings (id.npy) of a fitted-dataset folder or of a shard folder.

    python data_prep/embed_identities.py --src DIR --recognizer arcface_ir_se50 [--weights PATH]
    python data_prep/embed_identities.py --shards DIR --out DIR --recognizer arcface_ir_se50 [--weights PATH]

--src rewrites SRC/<subject>/<image>/id.npy (and meta.json's recognizer) in place. --shards rewrites every
shard of DIR's manifest into --out (which may be DIR itself): all other members stay bit-identical, and
the new manifest records the recognizer and the new sha256s. Nothing in --out changes unless every shard
is rewritten (a failure leaves no new or partial folder). --weights "random" uses an untrained network
(for tests only). Landmarks: the 5 ArcFace points, or derived from 68 iBUG points.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fitdiff.data import DataError
from fitdiff.data.embed import IdentityEmbedder, embed_folder, embed_shards
from fitdiff.face.identity import available_identity_encoders, build_identity_encoder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="fitted-dataset folder (rewritten in place)")
    source.add_argument("--shards", help="shard folder with manifest.json")
    parser.add_argument("--out", help="output shard folder (with --shards; may equal it)")
    parser.add_argument("--recognizer", default="arcface_ir_se50",
                        help=f"identity encoder ({', '.join(available_identity_encoders())})")
    parser.add_argument("--weights", help="weight file, or 'random' (default: the registered asset)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.shards and not args.out:
        parser.error("--shards needs --out (pass the same folder to rewrite in place)")

    kwargs = {} if args.weights is None else {"weights": args.weights}
    try:
        encoder = build_identity_encoder(args.recognizer, **kwargs).to(args.device)
        embedder = IdentityEmbedder(encoder, name=getattr(encoder, "name", args.recognizer), device=args.device)
        if args.src:
            count = embed_folder(args.src, embedder, args.batch_size, progress=not args.no_progress)
            print(f"embedded {count} samples in {args.src} with {embedder.name}")
        else:
            manifest = embed_shards(args.shards, args.out, embedder, args.batch_size, progress=not args.no_progress)
            print(f"embedded {sum(manifest.counts.values())} samples into {len(manifest.shards)} shards in {args.out} "
                  f"with {embedder.name}")
    except (DataError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
