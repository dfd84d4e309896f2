"""Train a synthetic recognizer on the photos of face-shard datasets and measure held-out verification.

    python data_prep/train_recognizer.py --data data/synthetic [--extra data/augmented] [--epochs 10]

Trains :class:`fitdiff.face.synthetic_recognizer.RecognizerNet` (ArcFace loss, the dataset build's
training code, :mod:`fitdiff.synthetic.recognizer_training`) on the ArcFace-aligned crops of the
stored photos of the train split of ``--data`` and of every ``--extra`` dataset (one class per subject),
then embeds the held-out photos of ``--data`` (``--eval-splits``, default val and test) with it and prints
the verification ROC-AUC over all same-subject against different-subject pairs. Running it with and
without ``--extra`` measures whether an augmented dataset helps a recognizer: the same seed, epochs and
held-out photos; only the training photos differ. ``--out`` keeps the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _crops(faces) -> torch.Tensor:
    from fitdiff.data.landmarks import five_point_landmarks
    from fitdiff.face.alignment import align_faces

    five = torch.from_numpy(five_point_landmarks(faces.landmarks.numpy()))
    crops = align_faces(faces.image.float(), five, 112)
    return (crops.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def main(argv: list[str] | None = None) -> int:
    from fitdiff.evaluation.faces import load_faces
    from fitdiff.face.synthetic_recognizer import SyntheticRecognizer
    from fitdiff.synthetic.recognizer_training import (
        RecognizerTrainingConfig,
        save_recognizer_weights,
        train_recognizer,
    )
    from fitdiff.synthetic.verification import verification_auc

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the dataset whose held-out photos are verified")
    parser.add_argument("--extra", action="append", default=[], help="more training photos (train split), repeatable")
    parser.add_argument("--eval-splits", default="val,test")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the weights here (.safetensors)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    crops, labels, counts, names = [], [], {}, {}
    for number, source in enumerate([args.data, *args.extra]):
        try:
            faces = load_faces(source, ["train"])
        except Exception as exc:
            print(f"error: {source}: {exc}", file=sys.stderr)
            return 2
        crops.append(_crops(faces))
        for subject in faces.subjects:
            labels.append(names.setdefault(f"{number}:{subject}", len(names)))  # each dataset's own subjects
        counts[f"{number}:{source}"] = {"photos": len(faces), "subjects": len(set(faces.subjects))}
    config = RecognizerTrainingConfig(epochs=args.epochs, seed=args.seed)
    net, history = train_recognizer(torch.cat(crops), torch.tensor(labels), config)
    held = load_faces(args.data, args.eval_splits.split(","))
    from fitdiff.data.landmarks import five_point_landmarks

    encoder = SyntheticRecognizer(net).eval()
    with torch.no_grad():
        emb = torch.cat([encoder(held.image[i:i + 64].float(), torch.from_numpy(five_point_landmarks(
            held.landmarks[i:i + 64].numpy()))) for i in range(0, len(held), 64)])
    result = verification_auc(emb.numpy(), held.subjects)
    record = {"training": counts, "classes": len(names), "epochs": args.epochs, "seed": args.seed,
              "loss_per_epoch": [round(v, 4) for v in history], "eval_splits": args.eval_splits,
              "eval_photos": len(held), "roc_auc": round(result.auc, 4), "genuine_pairs": result.genuine,
              "impostor_pairs": result.impostor, "seconds": round(time.perf_counter() - start, 1)}
    if args.out:
        record["weights"] = str(args.out)
        record["sha256"] = save_recognizer_weights(net, args.out)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
