"""Start the demo: ``python -m fitdiff.demo [--ckpt CKPT] [--preset guided] [--port 7860]``.

    python -m fitdiff.demo                                   # the quickstart's checkpoint, http://127.0.0.1:7860
    python -m fitdiff.demo --ckpt RUN/checkpoints/last.ckpt --device cuda --host 0.0.0.0

Defaults: the quickstart's diffusion checkpoint (``outputs/quickstart/ldm/checkpoints/last.ckpt``) and
the embedded dataset (``data/synthetic``: held-out example photos, the recognizer, the face detector).
A missing checkpoint does not stop the page from opening: it says how to make one. Results are written
under ``--work-dir`` (default: a fresh temporary folder). Gradio is the optional ``demo`` extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

from fitdiff.demo.backend import PRESETS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CKPT = ROOT / "outputs" / "quickstart" / "ldm" / "checkpoints" / "last.ckpt"
DEFAULT_DATA = ROOT / "data" / "synthetic"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitdiff.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="diffusion checkpoint (.ckpt)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the embedded dataset (examples, recognizer, detector)")
    parser.add_argument("--preset", default="fast", choices=["fast", "guided"], help="preset selected at start")
    parser.add_argument("--recognizer", help="identity encoder name (default: the one the checkpoint records)")
    parser.add_argument("--recognizer-weights", help="identity encoder weights (default: DATA/recognizer.safetensors)")
    parser.add_argument("--detector-weights", help="face detector (default: DATA/detector.safetensors)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work-dir", help="where results are written (default: a new temporary folder)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests that may wait in the queue")
    parser.add_argument("--examples", type=int, default=8, help="held-out example photos offered")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the demo needs Gradio, the optional 'demo' extra: pip install -e '.[demo]'", file=sys.stderr)
        return 2
    from fitdiff.demo.app import build_app, launch
    from fitdiff.demo.backend import DemoBackend, DemoSettings

    for option in ("recognizer_weights", "detector_weights"):
        value = getattr(args, option)
        if value and not Path(value).is_file():
            print(f"error: --{option.replace('_', '-')}: no file at {value}", file=sys.stderr)
            return 2
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="fitdiff-demo-"))
    settings = DemoSettings(ckpt=Path(args.ckpt), data_dir=Path(args.data), work_dir=work,
                            recognizer_weights=Path(args.recognizer_weights) if args.recognizer_weights else None,
                            detector_weights=Path(args.detector_weights) if args.detector_weights else None,
                            recognizer=args.recognizer, device=args.device, examples=args.examples)
    backend = DemoBackend(settings)
    print(backend.status().replace("`", ""), flush=True)
    label = next(k for k, v in PRESETS.items() if (v == "unguided") == (args.preset == "fast"))
    app = build_app(backend, default_preset=label)
    print(f"serving the demo on http://{args.host}:{args.port} (results in {work})", flush=True)
    launch(app, args.host, args.port, [str(work)], max_queue=args.max_queue)
    return 0
