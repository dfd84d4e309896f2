"""``python -m fitdiff.quickstart [--only STAGE ...]`` and ``python -m fitdiff.quickstart tables``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from fitdiff.config.compose import REPO_ROOT
from fitdiff.quickstart.launch import run_child
from fitdiff.quickstart.settings import FULL_TABLES
from fitdiff.quickstart.stages import ABLATION_STAGES, STAGES, diffusion_runs, evaluate_args, finished

__all__ = ["main", "tables_main"]

log = logging.getLogger("fitdiff.quickstart")

DEFAULT_OUT = REPO_ROOT / "outputs" / "quickstart"


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages in order, then print their times and where the results are."""
    parser = argparse.ArgumentParser(prog="python -m fitdiff.quickstart",
                                     description="the whole pipeline end to end on the embedded synthetic dataset")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in STAGES], help="run only these stages")
    parser.add_argument("--ablations", action="store_true",
                        help="also train experiment=ablation_none and put it in the conditioning table")
    args = parser.parse_args(argv)
    _logging()
    args.out.mkdir(parents=True, exist_ok=True)
    selected = [s for s in STAGES if not args.only or s.name in args.only]
    timings = []
    for index, stage in enumerate(selected, 1):
        log.info("── stage %d/%d: %s — %s", index, len(selected), stage.name, stage.description)
        start = time.perf_counter()
        if stage.name in ABLATION_STAGES:
            stage.run(args.out, ablations=args.ablations)
        else:
            stage.run(args.out)
        timings.append((stage.name, time.perf_counter() - start))
    log.info("quickstart finished: %s (total %.1f min)", ", ".join(f"{n} {t:.1f}s" for n, t in timings),
             sum(t for _, t in timings) / 60)
    _print_locations(args.out)
    return 0


def tables_main(argv: list[str] | None = None) -> int:
    """``make tables``: the full ``evaluate.py table=all`` (40 held-out photos, every preset and
    corruption; :data:`FULL_TABLES`) on the quickstart's checkpoints, into ``<out>/tables``."""
    parser = argparse.ArgumentParser(prog="python -m fitdiff.quickstart tables")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--ablations", action="store_true", help="also compare experiment=ablation_none")
    parser.add_argument("overrides", nargs="*", help="more evaluate.py overrides")
    args = parser.parse_args(argv)
    _logging()
    missing = [r for n, r in diffusion_runs(args.out, args.ablations).items() if not finished(r, n)]
    if missing:
        log.error("no finished diffusion run of the current step budget in %s: run make quickstart first",
                  ", ".join(map(str, missing)))
        return 2
    start = time.perf_counter()
    run_child("evaluate.py", [*evaluate_args(args.out, args.ablations), *FULL_TABLES, *args.overrides,
                              f"hydra.run.dir={args.out / 'tables'}"])
    log.info("full tables in %s (%.1f min); report %s", args.out / "tables", (time.perf_counter() - start) / 60,
             args.out / "tables" / "report.html")
    return 0


def _print_locations(out: Path) -> None:
    """Where the main results are (those that exist)."""
    places = [("tables (Markdown + CSV + plots)", out / "evaluate"), ("report", out / "evaluate" / "report.html"),
              ("avatar", out / "reconstruct" / "guided_x0" / "avatar.glb"),
              ("avatar side by side", out / "reconstruct" / "guided_x0" / "side_by_side.png"),
              ("samples", out / "samples"), ("checkpoints", out / "ldm" / "checkpoints")]
    found = [(what, path) for what, path in places if path.exists()]
    if found:
        width = max(len(what) for what, _ in found)
        log.info("results:\n%s", "\n".join(f"  {what:<{width}}  {path}" for what, path in found))
    log.info("outputs in %s; full tables (40 photos): make tables", out)
    if (out / "ldm" / "checkpoints" / "last.ckpt").exists():
        log.info("try it in the browser: python -m fitdiff.demo  (needs the demo extra: pip install -e '.[demo]')")
