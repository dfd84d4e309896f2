"""Identity signal of a dataset's embeddings on held-out subjects: verification ROC-AUC and linear probes.

    python data_prep/verify_identity.py --data DIR [--splits val,test]
        [--recognizer stored | synthetic_recognizer | arcface_ir_se50] [--weights PATH|random] [--seed 0]
        [--no-probe] [--probe-alpha A] [--shape-model MODEL.npz]

Scores every pair of samples of the chosen splits by the cosine similarity of their embeddings and
prints the ROC-AUC of genuine (same subject) against impostor pairs. ``stored`` (default) uses the
``id.npy`` embeddings in the shards; any other recognizer re-embeds the photos through the same code path
(68 landmarks -> 5 ArcFace points -> alignment -> encoder). ``synthetic_recognizer`` defaults to the
dataset's own DIR/recognizer.safetensors; ``arcface_ir_se50 --weights random`` measures a
random-initialised ArcFace (seeded by --seed).

Then the linear probe (:mod:`fitdiff.synthetic.identity_probe`): ridge regressions fitted on the train
split from each photo's embedding to its subject's shape coefficients and diffuse albedo, scored on the
chosen splits: per-vertex RMS (mm) against the mean face and a random training subject, albedo RMS
against the mean training albedo, per-component correlations. The ridge penalty is chosen by 5-fold
cross-validation over training subjects unless --probe-alpha fixes it. The shape model is the synthetic
dataset's own (DIR/synthetic.json) unless --shape-model names one.
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
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.face.synthetic_recognizer import SyntheticRecognizer  # noqa: F401  (registers the encoder)
from fitdiff.metrics.probe import DEFAULT_ALPHAS
from fitdiff.synthetic.dataset_model import dataset_shape_model
from fitdiff.synthetic.generate import RECOGNIZER_FILE
from fitdiff.synthetic.identity_probe import identity_probe, load_probe_data
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
    parser.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    parser.add_argument("--probe-alpha", type=float, help="fixed ridge penalty (default: cross-validated)")
    parser.add_argument("--shape-model", help="PCA shape model .npz (default: the synthetic dataset's)")
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
    if args.no_probe:
        return 0
    start = time.perf_counter()
    try:
        model = PCAShapeModel.load(args.shape_model) if args.shape_model else dataset_shape_model(args.data)
        train = load_probe_data(args.data, ["train"])
        heldout = load_probe_data(args.data, splits)
        if embed is not None:
            train.identity = load_embeddings(args.data, ["train"], embed=embed, batch_size=args.batch_size)[0]
            heldout.identity = embeddings
        alphas = DEFAULT_ALPHAS if args.probe_alpha is None else [args.probe_alpha]
        report = identity_probe(train, heldout, model.double(), alphas=alphas)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: linear probe: {exc}", file=sys.stderr)
        return 1
    print(f"{report}  [{time.perf_counter() - start:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
