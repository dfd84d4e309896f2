"""Seconds per photo of guided reconstruction against unguided sampling with the same steps, in one run.

    python benchmarks/reconstruct.py [--ckpt outputs/quickstart/ldm/checkpoints/last.ckpt]
                                     [--data data/synthetic] [--photos 4] [--batch 4] [--steps 25]
                                     [--repeats 2] [--device cpu|cuda]

Fits the first ``--photos`` held-out photos of the embedded dataset with the presets ``unguided``,
``guided_x0``, ``guided_eps`` and ``optimize`` (``experiments/fitting/``; the sampling presets with
``--steps`` DDIM steps), ``--batch`` photos per call, and prints seconds per photo (the best of
``--repeats`` runs, after one warm-up run per preset) and each preset's ratio to ``unguided`` (aim: the
``x0`` rule at most 3x). Timing covers the whole fit: identity embedding, camera and light
initialisation, sampling with the hook, decoding.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

PRESETS = ("unguided", "guided_x0", "guided_eps", "optimize")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="outputs/quickstart/ldm/checkpoints/last.ckpt")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from fitdiff.evaluation.faces import load_faces, select_photos
    from fitdiff.face.identity import build_identity_encoder
    from fitdiff.face.scene import FaceScene
    from fitdiff.face.synthetic_recognizer import SyntheticRecognizer  # noqa: F401  (registers it)
    from fitdiff.fitting import Reconstructor, load_preset
    from fitdiff.ldm.module import LatentDiffusionModule
    from fitdiff.synthetic.dataset_model import dataset_shape_model

    for path in (Path(args.ckpt), Path(args.data) / "manifest.json"):
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run make quickstart first (or pass --ckpt / --data)")
    held = load_faces(args.data, ["val", "test"])
    photos = held.subset(select_photos(held, args.photos))
    module = LatentDiffusionModule.load_checkpoint(args.ckpt, map_location=args.device)
    pipeline = module.pipeline(ema=True)
    model = module.shape_model() or dataset_shape_model(args.data)
    scene = FaceScene(model.to(args.device))
    guide = build_identity_encoder("synthetic_recognizer", weights=str(Path(args.data) / "recognizer.safetensors"))
    guide = guide.to(args.device)

    seconds: dict[str, float] = {}
    for name in PRESETS:
        overrides = [] if name == "optimize" else [f"sampler.num_inference_steps={args.steps}"]
        rec = Reconstructor(pipeline, scene, guide, load_preset(name, overrides))
        runs = []
        for repeat in range(args.repeats + 1):  # the first run warms up
            elapsed = 0.0
            for start in range(0, len(photos), args.batch):
                part = photos.subset(list(range(start, min(start + args.batch, len(photos)))))
                gens = [torch.Generator().manual_seed(i) for i in range(len(part))]
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                rec(part.image, part.landmarks, generator=gens)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                elapsed += time.perf_counter() - t0
            if repeat:
                runs.append(elapsed / len(photos))
        seconds[name] = min(runs)
    print(f"{len(photos)} photos, batch {args.batch}, {args.steps} DDIM steps, device {args.device}, "
          f"{torch.get_num_threads()} threads; checkpoint {args.ckpt}")
    print(f"{'preset':12s} {'s / photo':>10s} {'x unguided':>11s}")
    for name, value in seconds.items():
        print(f"{name:12s} {value:10.2f} {value / seconds['unguided']:11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
