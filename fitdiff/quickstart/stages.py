"""The quickstart's stages, in order; each reuses what an earlier run already produced.

A stage is ``run(out_dir)`` (``run(out_dir, ablations=...)`` for :data:`ABLATION_STAGES`); paths are fixed:
the dataset in ``data/synthetic``, its latents in ``data/synthetic_latents``, everything else in ``out_dir``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fitdiff.config.compose import REPO_ROOT, compose_experiment, experiment_names
from fitdiff.quickstart.launch import run_child, run_main, run_train
from fitdiff.quickstart.settings import QUICKSTART_TABLES, SYNTHETIC_SETTINGS

__all__ = ["Stage", "STAGES", "ABLATION_STAGES", "diffusion_runs", "evaluate_args", "finished"]

log = logging.getLogger("fitdiff.quickstart")


@dataclass
class Stage:
    """One step of the quickstart: ``run(out_dir)`` does the work (and reuses earlier results)."""

    name: str
    description: str
    run: Callable[..., None]


def _data_root() -> Path:
    return REPO_ROOT / "data"


def _synthetic_dir() -> Path:
    return _data_root() / "synthetic"


def _latents_dir() -> Path:
    return _data_root() / "synthetic_latents"


def _stage_assets(out_dir: Path) -> None:
    from fitdiff.assets import print_status

    rows = print_status()
    missing = [r["name"] for r in rows if r["state"] != "ok"]
    if missing:
        log.info("not present (not needed by the quickstart): %s", ", ".join(missing))


def _stage_configs(out_dir: Path) -> None:
    from fitdiff.config import validate_config

    names = experiment_names()
    for name in names:
        cfg = compose_experiment(name, out_dir / "configs" / name)
        validate_config(cfg)
        log.info("experiment=%s: composed and validated (%s, %s)", name, cfg.model._target_, cfg.data._target_)
    log.info("%d experiment configs are valid", len(names))


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
        run_child("data_prep/make_synthetic.py", [*args, "--out", str(data), "--overwrite"])
    run_main("data_prep/verify_identity.py", ["--data", str(data)])


def _stale_dataset_settings(data: Path) -> str:
    """The ``SYNTHETIC_SETTINGS`` that the dataset in ``data`` was built without, as text ("" = none, or
    no build record there). An earlier, smaller embedded dataset is rebuilt rather than silently reused."""
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
        run_train("quickstart_ae", run_dir, ["logger=csv", f"paths.data_dir={_data_root()}"])
        checkpoints = sorted((run_dir / "checkpoints").glob("step*.ckpt")) or [
            run_dir / "checkpoints" / "last.ckpt"
        ]
        run_main("-m", ["fitdiff.autoencoder", str(checkpoints[-1]), str(weights)])
    rows = _validations(run_dir / "csv" / "metrics.csv")
    scored = [r for r in rows if "val/rec_loss" in r]
    if scored:
        # the exported checkpoint is the best by val/rec_loss (callbacks.model_checkpoint, save_top_k=1)
        best = min(scored, key=lambda r: r["val/rec_loss"])
        log.info("autoencoder, exported weights (best val/rec_loss): %s", _describe(best))
    if rows:
        log.info("autoencoder, last validation: %s", _describe(rows[-1]))


def _stage_latents(out_dir: Path) -> None:
    from fitdiff.data.latent_manifest import LATENT_MANIFEST_NAME, load_latent_manifest
    from fitdiff.io import sha256_file

    weights, latents = out_dir / "autoencoder" / "autoencoder.safetensors", _latents_dir()
    if (latents / LATENT_MANIFEST_NAME).is_file():
        if load_latent_manifest(latents).autoencoder_sha256 == sha256_file(weights):
            log.info("reusing the latents in %s (encoded by %s)", latents, weights)
            return
        log.info("the latents in %s come from another autoencoder: re-encoding", latents)
    run_main("data_prep/encode_latents.py", ["--autoencoder", str(weights), "--data", str(_synthetic_dir()),
                                             "--out", str(latents), "--overwrite"])


def _configured_steps(run_dir: Path) -> int | None:
    """``trainer.max_steps`` of the run's own resolved config (None: no config there)."""
    from omegaconf import OmegaConf

    from fitdiff.tasks import RESOLVED_CONFIG

    config = run_dir / RESOLVED_CONFIG
    return int(OmegaConf.load(config).trainer.max_steps) if config.is_file() else None


def _current_steps(name: str, run_dir: Path) -> int:
    """``trainer.max_steps`` of experiment ``name`` as it is configured now."""
    return int(compose_experiment(name, run_dir).trainer.max_steps)


def finished(run_dir: Path, name: str | None = None) -> bool:
    """A diffusion run whose last checkpoint reached its configured ``trainer.max_steps`` (with ``name``,
    also the current budget of experiment ``name``)."""
    import torch

    last, steps = run_dir / "checkpoints" / "last.ckpt", _configured_steps(run_dir)
    if not last.is_file() or steps is None:
        return False
    if name is not None and steps != _current_steps(name, run_dir):
        return False
    return int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", -1)) >= steps


def _set_aside_other_budget(name: str, run_dir: Path) -> None:
    """A run of ``name`` made with another step budget than the experiment's current one is renamed to
    ``<run_dir>-<steps>steps`` (kept, never overwritten), so the quickstart trains the current budget
    from scratch instead of reusing or resuming it (a resumed run's learning-rate schedule would differ)."""
    steps = _configured_steps(run_dir)
    if steps is None:
        return
    budget = _current_steps(name, run_dir)
    if steps == budget:
        return
    aside = run_dir.with_name(f"{run_dir.name}-{steps}steps")
    n = 1
    while aside.exists():
        aside, n = run_dir.with_name(f"{run_dir.name}-{steps}steps-{n}"), n + 1
    run_dir.rename(aside)
    log.warning("%s in %s was trained for %d steps, the experiment's budget is now %d: moved it to %s and "
                "training again", name, run_dir, steps, budget, aside)


def diffusion_runs(out_dir: Path, ablations: bool) -> dict[str, Path]:
    """Experiment name -> run dir of the quickstart's diffusion runs (``quickstart_ldm`` in ``ldm/``)."""
    names = ["quickstart_ldm"] + (["ablation_none"] if ablations else [])
    return {name: out_dir / ("ldm" if name == "quickstart_ldm" else name) for name in names}


def _stage_diffusion(out_dir: Path, ablations: bool = False) -> None:
    weights = out_dir / "autoencoder" / "autoencoder.safetensors"
    for name, run_dir in diffusion_runs(out_dir, ablations).items():
        _set_aside_other_budget(name, run_dir)
        if finished(run_dir):
            log.info("reusing the finished diffusion run %s (delete it to retrain)", run_dir)
            continue
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        run_train(name, run_dir, ["logger=csv", f"paths.data_dir={_data_root()}", f"model.autoencoder={weights}",
                                  *resume])
        rows = [r for r in _validations(run_dir / "csv" / "metrics.csv") if "val/ema_loss" in r]
        if rows:
            log.info("%s, last validation: val/loss %.4f, val/ema_loss %.4f, val/uncond_loss %.4f", name,
                     rows[-1].get("val/loss", float("nan")), rows[-1]["val/ema_loss"],
                     rows[-1].get("val/uncond_loss", float("nan")))


def _stage_samples(out_dir: Path) -> None:
    from fitdiff.quickstart.inputs import held_out_embedding

    ckpt = out_dir / "ldm" / "checkpoints" / "last.ckpt"
    run_main("-m", ["fitdiff.sample", "--ckpt", str(ckpt), "--n", "8", "--seed", "0",
                    "--out", str(out_dir / "samples" / "unconditional")])
    identity = held_out_embedding(_synthetic_dir(), out_dir)
    run_main("-m", ["fitdiff.sample", "--ckpt", str(ckpt), "--n", "4", "--seed", "0", "--identity",
                    str(identity), "--out", str(out_dir / "samples" / "conditional")])


def _stage_reconstruct(out_dir: Path) -> None:
    from fitdiff.quickstart.inputs import held_out_photo

    ckpt = out_dir / "ldm" / "checkpoints" / "last.ckpt"
    photo, landmarks = held_out_photo(_synthetic_dir(), out_dir)
    run_main("-m", ["fitdiff.reconstruct", "--ckpt", str(ckpt), "--image", str(photo), "--landmarks",
                    str(landmarks), "--recognizer-weights", str(_synthetic_dir() / "recognizer.safetensors"),
                    "--preset", "guided_x0", "--seed", "0", "--out", str(out_dir / "reconstruct" / "guided_x0")])


def evaluate_args(out_dir: Path, ablations: bool) -> list[str]:
    """``evaluate.py table=all`` overrides for the quickstart's checkpoints (without the table subset)."""
    ckpts = [str(run / "checkpoints" / "last.ckpt") for run in diffusion_runs(out_dir, ablations).values()]
    return ["table=all", f"ckpts=[{','.join(ckpts)}]", f"paths.data_dir={_data_root()}",
            "extras.print_config=false"]


def _stage_evaluate(out_dir: Path, ablations: bool = False) -> None:
    """``evaluate.py table=all`` with :data:`QUICKSTART_TABLES`, composed and run in this process."""
    from fitdiff.tasks import evaluate

    args = [*evaluate_args(out_dir, ablations), *QUICKSTART_TABLES]
    log.info("$ evaluate.py %s", " ".join(args))
    evaluate(compose_experiment(None, out_dir / "evaluate", args, config_name="evaluate"))


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
