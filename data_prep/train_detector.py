"""Train the synthetic face detector (5 landmarks + face / no face) on a built synthetic dataset.

    python data_prep/train_detector.py --data data/synthetic [--out DIR/detector.safetensors] [--epochs 10]

Trains on the train split's photos and the backgrounds they were composited over
(:mod:`fitdiff.synthetic.detector_training`), checks it on the validation split (landmark error in
pixels, share of photos found and of backgrounds rejected) and writes the weights with that check in
their header. The demo and ``fitdiff.sample --identity photo.png`` use it to find a face in an
unannotated photo of the synthetic domain; real photos need the ``retinaface_resnet50`` asset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from fitdiff.config.errors import ConfigError
    from fitdiff.data.errors import DataError
    from fitdiff.evaluation.faces import load_faces
    from fitdiff.face.synthetic_detector import DETECTOR_FILE, SyntheticFaceDetector
    from fitdiff.synthetic.detector_training import (
        DetectorTrainingConfig,
        check_detector,
        face_and_background,
        save_detector_weights,
        train_detector,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="synthetic dataset folder (manifest.json + shards)")
    parser.add_argument("--out", help=f"weights file (default: DATA/{DETECTOR_FILE})")
    parser.add_argument("--epochs", type=int, default=DetectorTrainingConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=DetectorTrainingConfig.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    out = Path(args.out) if args.out else data / DETECTOR_FILE
    start = time.perf_counter()
    try:
        train = load_faces(data, ["train"])
        held = load_faces(data, ["val"])
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if train.meta is None or any("lighting" not in m for m in train.meta):
        print(f"error: {data}: the photos' meta.json has no lighting/background record; the detector trains "
              "only on datasets built by data_prep/make_synthetic.py", file=sys.stderr)
        return 2
    config = DetectorTrainingConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("training the face detector", total=None)

        def advance(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, description=f"face detector (loss {loss:.3f})")

        net, history = train_detector(*face_and_background(train.image, train.landmarks, train.meta), config,
                                      progress=advance)
    check = check_detector(SyntheticFaceDetector(net), *face_and_background(held.image, held.landmarks, held.meta))
    record = {"config": config.__dict__, "loss_per_epoch": [round(v, 5) for v in history],
              "check": check.to_dict(), "dataset": str(data), "trained_on": "train", "checked_on": "val"}
    sha = save_detector_weights(net, out, record)
    print(json.dumps({"weights": str(out), "sha256": sha, "seconds": round(time.perf_counter() - start, 1),
                      **check.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
