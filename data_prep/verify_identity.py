"""Face-verification ROC-AUC of a dataset's identity embeddings on held-out subjects.

    python data_prep/verify_identity.py --data DIR [--splits val,test]
        [--recognizer stored | synthetic_recognizer | arcface_ir_se50] [--weights PATH|random] [--seed 0]

Scores every pair of samples of the chosen splits by the cosine similarity of their embeddings and
prints the ROC-AUC of genuine (same subject) against impostor pairs. ``stored`` (default) uses the
``id.npy`` embeddings in the shards; any other recognizer re-embeds the photos through the same code path
(68 landmarks -> 5 ArcFace points -> alignment -> encoder). ``synthetic_recognizer`` defaults to the
dataset's own DIR/recognizer.safetensors; ``arcface_ir_se50 --weights random`` measures a
random-initialised ArcFace (seeded by --seed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from fitdiff.data.embed import IdentityEmbedder
from fitdiff.face.identity import build_identity_encoder
from fitdiff.face.synthetic_recognizer import SyntheticRecognizer  # noqa: F401  (registers the encoder)
from fitdiff.synthetic.generate import RECOGNIZER_FILE
from fitdiff.synthetic.verification import load_embeddings, verification_auc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="shard folder with manifest.json")
    parser.add_argument("--splits", default="val,test", help="comma-separated splits to evaluate")
    parser.add_argument(
        "--recognizer", default="stored", help="'stored' or a registered identity encoder name"
    )
    parser.add_argument("--weights", help="encoder weights: a file or 'random'")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of random weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    splits = [s for s in args.splits.split(",") if s]

    embed = None
    name = "stored id.npy"
    if args.recognizer != "stored":
        weights = args.weights
        if weights is None and args.recognizer == "synthetic_recognizer":
            weights = str(Path(args.data) / RECOGNIZER_FILE)
        torch.manual_seed(args.seed)
        kwargs = {} if weights is None else {"weights": weights}
        try:
            encoder = build_identity_encoder(args.recognizer, **kwargs)
        except (KeyError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        name = f"{args.recognizer} ({weights or 'default weights'})"
        embed = IdentityEmbedder(encoder, name)
    start = time.perf_counter()
    try:
        embeddings, subjects = load_embeddings(args.data, splits, embed=embed, batch_size=args.batch_size)
        result = verification_auc(embeddings, subjects)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{name} on {'+'.join(splits)}: {len(embeddings)} images of {len(set(subjects))} subjects")
    print(f"{result}  [{time.perf_counter() - start:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
