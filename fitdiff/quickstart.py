"""The quickstart: the whole pipeline end to end, on whatever this machine has.

``make quickstart`` runs ``python -m fitdiff.quickstart``. It needs no data, no GPU and no network:
every stage works on the embedded synthetic dataset and reuses what an earlier run already produced,
so running it twice is cheap. Stages, in order:

1. ``assets``      — list the registered external files (pretrained weights, shape models) and their
   state; none is needed for the quickstart.
2. ``configs``     — compose and validate every experiment in ``experiments/experiment/``.
3. ``dataset``     — build the embedded synthetic fitted dataset in ``data/synthetic`` (400 subjects x 4
   photos, 40 validation and 40 test subjects, 64x64 UV maps, 128x128 photos, with its trained synthetic
   recognizer; about 5 minutes), unless one built with the same settings is there, and print its
   identity-verification ROC-AUC and linear identity probe on held-out subjects.
4. ``autoencoder`` — train ``experiment=quickstart_ae`` for its fixed budget of 500 steps (about 7
   minutes on 2 idle CPU cores; every machine stops at the same step) unless a finished run is there,
   export its weights as safetensors and print its validation metrics.
5. ``latents``     — encode the dataset with the exported autoencoder into ``data/synthetic_latents``
   (``data_prep/encode_latents.py``) unless latents of that very file are there.
6. ``diffusion``   — train ``experiment=quickstart_ldm`` for its fixed step budget unless a finished run
   is there (``--ablations`` also trains ``experiment=ablation_none``).
7. ``samples``     — ``python -m fitdiff.sample``: unconditional avatars and avatars of a held-out identity
   (OBJ + GLB + grid.png).
8. ``reconstruct`` — ``python -m fitdiff.reconstruct``: guided reconstruction (preset ``guided_x0``) of the
   first held-out photo from its landmarks: avatar, render, relit renders, ``fit.json`` in
   ``reconstruct/guided_x0/``.
9. ``evaluate``    — ``python evaluate.py table=all`` on a stated subset (:data:`QUICKSTART_TABLES`: 4
   held-out photos, 2 samples per photo in the conditioning table, the occluder alone in the robustness
   table, no ``guided_x0`` row): the
   conditioning, reconstruction, robustness, reflectance, shape and ablation tables with their plots,
   image grids and ``report.html``, in ``evaluate/``. ``make tables`` runs the full tables (40 photos,
   every preset and corruption) into ``tables/``.

Each later stage of the method (dataset, autoencoder, diffusion, guided reconstruction, evaluation)
adds itself here as it lands.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fitdiff.quickstart")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO_ROOT / "experiments"


@dataclass
class Stage:
    """One step of the quickstart: ``run(out_dir)`` does the work (and reuses earlier results)."""

    name: str
    description: str
    run: Callable[[Path], None]


def _stage_assets(out_dir: Path) -> None:
    from fitdiff.assets import print_status

    rows = print_status()
    missing = [r["name"] for r in rows if r["state"] != "ok"]
    if missing:
        log.info("not present (not needed by the quickstart): %s", ", ".join(missing))


def experiment_names() -> list[str]:
    """Names of every experiment preset, ``experiments/experiment/*.yaml``."""
    return sorted(p.stem for p in (EXPERIMENTS_DIR / "experiment").glob("*.yaml"))


def compose_experiment(
    name: str | None, output_dir: str | Path, overrides: list[str] | None = None, config_name: str = "train"
):
    """Compose ``config_name`` with ``experiment=name`` (none when None) outside a Hydra run, writing to
    ``output_dir``.

    Hydra's runtime values (``${hydra:...}``) do not exist outside ``@hydra.main``, so the paths that use
    them are set explicitly: the project root is the repository, the work dir the current directory.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fitdiff.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    paths = [
        f"paths.root_dir={REPO_ROOT}",
        f"paths.work_dir={Path.cwd()}",
        f"paths.output_dir={Path(output_dir).resolve()}",
    ]
    with initialize_config_dir(config_dir=str(EXPERIMENTS_DIR), version_base="1.3"):
        experiment = [f"experiment={name}"] if name is not None else []
        return compose(config_name, overrides=[*experiment, *paths, *(overrides or [])])


def _stage_configs(out_dir: Path) -> None:
    from fitdiff.config import validate_config

    names = experiment_names()
    for name in names:
        cfg = compose_experiment(name, out_dir / "configs" / name)
        validate_config(cfg)
        log.info(
            "experiment=%s: composed and validated (%s, %s)", name, cfg.model._target_, cfg.data._target_
        )
    log.info("%d experiment configs are valid", len(names))


def _run_entry_point(script: str, args: list[str]) -> None:
    """Run ``python script args`` (or ``python -m module`` when ``script`` is ``-m``) from the repo root."""
    command = [sys.executable, script if script == "-m" else str(REPO_ROOT / script), *args]
    log.info("$ %s", " ".join(command[1:]))
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def _run_in_process(script: str, args: list[str]) -> None:
    """What :func:`_run_entry_point` does, in this process: for entry points with ``main(argv) -> int``
    (``-m module`` as ``script="-m"`` with the module first in ``args``, or a script path). Each Python
    start costs about 10 s of imports on 2 cores (torch, Lightning, diffusers), so the light stages run
    here; training, the dataset build and ``evaluate.py`` (Hydra applications) keep their own process."""
    import importlib
    import importlib.util

    log.info("$ %s", " ".join([script, *args] if script == "-m" else [str(REPO_ROOT / script), *args]))
    if script == "-m":
        module = importlib.import_module(args[0])
        if not hasattr(module, "main"):  # a package: its __main__ module
            module = importlib.import_module(f"{args[0]}.__main__")
        args = args[1:]
    else:
        spec = importlib.util.spec_from_file_location(f"quickstart_{Path(script).stem}", REPO_ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    code = module.main(list(args))
    if code:
        raise subprocess.CalledProcessError(code, [script, *args])


def _synthetic_dir() -> Path:
    return REPO_ROOT / "data" / "synthetic"


def _stage_dataset(out_dir: Path) -> None:
    data = _synthetic_dir()
    built = (data / "manifest.json").is_file()
    stale = _stale_dataset_settings(data) if built else ""
    if built and not stale:
        log.info("reusing the embedded dataset in %s (delete it to rebuild)", data)
    else:
        if stale:
            log.info("the dataset in %s was built with other settings (%s): rebuilding it", data, stale)
        args = [part for key, value in SYNTHETIC_SETTINGS.items() for part in (f"--{key.replace('_', '-')}", str(value))]
        _run_entry_point("data_prep/make_synthetic.py", [*args, "--out", str(data), "--overwrite"])
    _run_in_process("data_prep/verify_identity.py", ["--data", str(data)])


def _stale_dataset_settings(data: Path) -> str:
    """The ``SYNTHETIC_SETTINGS`` that the dataset in ``data`` was built without, as text ("" = none, or
    no build record there). An earlier, smaller embedded dataset is rebuilt rather than silently reused."""
    import json

    from fitdiff.synthetic.config import EVAL_RECOGNIZER_FILE

    record = data / "synthetic.json"
    built = json.loads(record.read_text()).get("config", {}) if record.is_file() else SYNTHETIC_SETTINGS
    stale = [f"{key} {built.get(key)} instead of {value}"
             for key, value in SYNTHETIC_SETTINGS.items() if built.get(key) != value]
    if record.is_file() and not (data / EVAL_RECOGNIZER_FILE).is_file():
        stale.append(f"no {EVAL_RECOGNIZER_FILE}")
    return ", ".join(stale)


def _validations(metrics_csv: Path) -> list[dict[str, float]]:
    """Every row of ``val/`` metrics in a Lightning CSV log, in logging order."""
    import csv

    rows: list[dict[str, float]] = []
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            if values:
                rows.append(values)
    return rows


def _describe(metrics: dict[str, float]) -> str:
    wanted = ("val/diffuse_psnr", "val/specular_psnr", "val/normals_angular_error")
    return ", ".join(f"{k} {metrics[k]:.2f}" for k in wanted if k in metrics)


def _stage_autoencoder(out_dir: Path) -> None:
    run_dir = out_dir / "autoencoder"
    weights = run_dir / "autoencoder.safetensors"
    if weights.is_file():
        log.info("reusing the trained autoencoder %s (delete %s to retrain)", weights, run_dir)
    else:
        _run_entry_point(
            "train.py",
            [
                "experiment=quickstart_ae",
                "logger=csv",
                f"paths.data_dir={REPO_ROOT / 'data'}",
                f"hydra.run.dir={run_dir}",
            ],
        )
        checkpoints = sorted((run_dir / "checkpoints").glob("step*.ckpt")) or [
            run_dir / "checkpoints" / "last.ckpt"
        ]
        _run_in_process("-m", ["fitdiff.autoencoder", str(checkpoints[-1]), str(weights)])
    rows = _validations(run_dir / "csv" / "metrics.csv")
    scored = [r for r in rows if "val/rec_loss" in r]
    if scored:
        # the exported checkpoint is the best by val/rec_loss (callbacks.model_checkpoint, save_top_k=1)
        best = min(scored, key=lambda r: r["val/rec_loss"])
        log.info("autoencoder, exported weights (best val/rec_loss): %s", _describe(best))
    if rows:
        log.info("autoencoder, last validation: %s", _describe(rows[-1]))


def _latents_dir() -> Path:
    return REPO_ROOT / "data" / "synthetic_latents"


def _stage_latents(out_dir: Path) -> None:
    from fitdiff.data.latent_manifest import LATENT_MANIFEST_NAME, load_latent_manifest
    from fitdiff.io import sha256_file

    weights, latents = out_dir / "autoencoder" / "autoencoder.safetensors", _latents_dir()
    if (latents / LATENT_MANIFEST_NAME).is_file():
        if load_latent_manifest(latents).autoencoder_sha256 == sha256_file(weights):
            log.info("reusing the latents in %s (encoded by %s)", latents, weights)
            return
        log.info("the latents in %s come from another autoencoder: re-encoding", latents)
    _run_in_process("data_prep/encode_latents.py", ["--autoencoder", str(weights), "--data", str(_synthetic_dir()),
                                                     "--out", str(latents), "--overwrite"])


def _finished(run_dir: Path) -> bool:
    """A diffusion run whose last checkpoint reached its configured ``trainer.max_steps``."""
    import torch
    from omegaconf import OmegaConf

    last, config = run_dir / "checkpoints" / "last.ckpt", run_dir / "config_resolved.yaml"
    if not last.is_file() or not config.is_file():
        return False
    steps = OmegaConf.load(config).trainer.max_steps
    return int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", -1)) >= int(steps)


def _diffusion_runs(out_dir: Path, ablations: bool) -> dict[str, Path]:
    names = ["quickstart_ldm"] + (["ablation_none"] if ablations else [])
    return {name: out_dir / ("ldm" if name == "quickstart_ldm" else name) for name in names}


def _stage_diffusion(out_dir: Path, ablations: bool = False) -> None:
    weights = out_dir / "autoencoder" / "autoencoder.safetensors"
    for name, run_dir in _diffusion_runs(out_dir, ablations).items():
        if _finished(run_dir):
            log.info("reusing the finished diffusion run %s (delete it to retrain)", run_dir)
            continue
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        _run_entry_point("train.py", [f"experiment={name}", "logger=csv", f"paths.data_dir={REPO_ROOT / 'data'}",
                                      f"model.autoencoder={weights}", f"hydra.run.dir={run_dir}", *resume])
        rows = [r for r in _validations(run_dir / "csv" / "metrics.csv") if "val/ema_loss" in r]
        if rows:
            log.info("%s, last validation: val/loss %.4f, val/ema_loss %.4f, val/uncond_loss %.4f", name,
                     rows[-1].get("val/loss", float("nan")), rows[-1]["val/ema_loss"],
                     rows[-1].get("val/uncond_loss", float("nan")))


def _held_out_embedding(out_dir: Path) -> Path:
    """The id.npy of the first held-out (val) photo, saved as a file for ``fitdiff.sample --identity``."""
    import numpy as np

    from fitdiff.data import decode_sample, load_manifest, read_shard

    data = _synthetic_dir()
    shard = load_manifest(data).shards_for("val")[0]
    raw = next(iter(read_shard(str(data / shard.name), fields=("identity",))))
    sample = decode_sample(raw, fields=("identity",), shard=shard.name)
    path = out_dir / "samples" / f"identity_{sample.key}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, sample.identity)
    return path


def _stage_samples(out_dir: Path) -> None:
    ckpt = out_dir / "ldm" / "checkpoints" / "last.ckpt"
    _run_in_process("-m", ["fitdiff.sample", "--ckpt", str(ckpt), "--n", "8", "--seed", "0",
                            "--out", str(out_dir / "samples" / "unconditional")])
    identity = _held_out_embedding(out_dir)
    _run_in_process("-m", ["fitdiff.sample", "--ckpt", str(ckpt), "--n", "4", "--seed", "0", "--identity",
                            str(identity), "--out", str(out_dir / "samples" / "conditional")])


def _held_out_photo(out_dir: Path) -> tuple[Path, Path]:
    """The first held-out (val) photo and its 68 landmarks as files (``photo.png``, ``photo.npy``), the
    input of ``fitdiff.reconstruct``."""
    import numpy as np

    from fitdiff.data import decode_sample, load_manifest, read_shard

    data = _synthetic_dir()
    shard = load_manifest(data).shards_for("val")[0]
    raw = next(iter(read_shard(str(data / shard.name), fields=("image", "landmarks"))))
    sample = decode_sample(raw, fields=("image", "landmarks"), shard=shard.name)
    folder = out_dir / "reconstruct" / "input"
    folder.mkdir(parents=True, exist_ok=True)
    photo, landmarks = folder / f"{sample.key}.png", folder / f"{sample.key}.npy"
    photo.write_bytes(raw["image.png"])
    np.save(landmarks, sample.landmarks)
    return photo, landmarks


def _stage_reconstruct(out_dir: Path) -> None:
    ckpt = out_dir / "ldm" / "checkpoints" / "last.ckpt"
    photo, landmarks = _held_out_photo(out_dir)
    _run_in_process("-m", ["fitdiff.reconstruct", "--ckpt", str(ckpt), "--image", str(photo), "--landmarks",
                            str(landmarks), "--recognizer-weights", str(_synthetic_dir() / "recognizer.safetensors"),
                            "--preset", "guided_x0", "--seed", "0", "--out", str(out_dir / "reconstruct" / "guided_x0")])


#: the quickstart's subset of ``evaluate.py table=all`` (``make tables`` runs the full tables: 40 photos,
#: every preset and corruption); stated in the tables' headers and the README
QUICKSTART_TABLES: list[str] = [
    "table.n_photos=4",  # held-out photos of every table, one fitting batch (full: 40)
    "table.tables.conditioning.scheduler=dpm",  # DPM-Solver++ with 20 steps for the sampled rows
    "table.tables.conditioning.steps=20",
    "table.tables.conditioning.n_samples=2",  # samples per photo and sampled row (full: 4)
    "table.tables.conditioning.diversity_samples=16",  # (full: 64)
    "table.tables.reconstruction.presets=[unguided,guided_eps,optimize]",  # full: also guided_x0
    "table.tables.robustness.corruptions=[occluder]",  # full: also side light, noise and JPEG
]


def _evaluate_args(out_dir: Path, ablations: bool) -> list[str]:
    ckpts = [str(run / "checkpoints" / "last.ckpt") for run in _diffusion_runs(out_dir, ablations).values()]
    return ["table=all", f"ckpts=[{','.join(ckpts)}]", f"paths.data_dir={REPO_ROOT / 'data'}",
            "extras.print_config=false"]


def _stage_evaluate(out_dir: Path, ablations: bool = False) -> None:
    """``evaluate.py table=all`` with :data:`QUICKSTART_TABLES`, composed and run in this process (the
    quickstart has torch and Lightning loaded already)."""
    from fitdiff.tasks import evaluate

    args = [*_evaluate_args(out_dir, ablations), *QUICKSTART_TABLES]
    log.info("$ evaluate.py %s", " ".join(args))
    evaluate(compose_experiment(None, out_dir / "evaluate", args, config_name="evaluate"))


def tables_main(argv: list[str] | None = None) -> int:
    """``make tables``: the full ``evaluate.py table=all`` (40 held-out photos, every preset and
    corruption) on the quickstart's checkpoints, into ``<out>/tables``."""
    parser = argparse.ArgumentParser(prog="python -m fitdiff.quickstart tables")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "quickstart")
    parser.add_argument("--ablations", action="store_true", help="also compare experiment=ablation_none")
    parser.add_argument("overrides", nargs="*", help="more evaluate.py overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    missing = [r for r in _diffusion_runs(args.out, args.ablations).values() if not _finished(r)]
    if missing:
        log.error("no finished diffusion run in %s: run make quickstart first", ", ".join(map(str, missing)))
        return 2
    start = time.perf_counter()
    _run_entry_point("evaluate.py", [*_evaluate_args(args.out, args.ablations), *args.overrides,
                                     f"hydra.run.dir={args.out / 'tables'}"])
    log.info("full tables in %s (%.1f min); report %s", args.out / "tables", (time.perf_counter() - start) / 60,
             args.out / "tables" / "report.html")
    return 0


#: the embedded dataset's data_prep/make_synthetic.py settings (also checked against an existing build)
SYNTHETIC_SETTINGS: dict[str, int] = {
    "subjects": 400,
    "val_subjects": 40,
    "test_subjects": 40,
    "images_per_subject": 4,
    "uv_res": 64,
    "image_res": 128,
    "seed": 0,
}


STAGES: list[Stage] = [
    Stage("assets", "registered external files and their state", _stage_assets),
    Stage("configs", "compose and validate every experiment config", _stage_configs),
    Stage("dataset", "embedded synthetic fitted dataset + identity verification", _stage_dataset),
    Stage("autoencoder", "train the quickstart branched VQGAN (quickstart_ae, 500 steps)", _stage_autoencoder),
    Stage("latents", "pre-encode the dataset with the exported autoencoder", _stage_latents),
    Stage("diffusion", "train the quickstart SPADE latent diffusion (quickstart_ldm)", _stage_diffusion),
    Stage("samples", "unconditional and identity-conditioned avatars (python -m fitdiff.sample)", _stage_samples),
    Stage("reconstruct", "guided reconstruction of a held-out photo (python -m fitdiff.reconstruct)", _stage_reconstruct),
    Stage("evaluate", "every table on 4 held-out photos + the report (evaluate.py table=all)", _stage_evaluate),
]
#: stages that also run the conditioning ablation with --ablations
ABLATION_STAGES = ("diffusion", "evaluate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fitdiff.quickstart", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "outputs" / "quickstart", help="output folder"
    )
    parser.add_argument("--only", nargs="*", choices=[s.name for s in STAGES], help="run only these stages")
    parser.add_argument("--ablations", action="store_true",
                        help="also train experiment=ablation_none and put it in the conditioning table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    selected = [s for s in STAGES if not args.only or s.name in args.only]
    timings = []
    for index, stage in enumerate(selected, 1):
        log.info("── stage %d/%d: %s — %s", index, len(selected), stage.name, stage.description)
        start = time.perf_counter()
        if stage.name in ABLATION_STAGES:
            stage.run(args.out, ablations=args.ablations)  # type: ignore[call-arg]
        else:
            stage.run(args.out)
        timings.append((stage.name, time.perf_counter() - start))
    log.info("quickstart finished: %s (total %.1f min)", ", ".join(f"{n} {t:.1f}s" for n, t in timings),
             sum(t for _, t in timings) / 60)
    _print_locations(args.out)
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["tables"]:
        raise SystemExit(tables_main(sys.argv[2:]))
    raise SystemExit(main())
