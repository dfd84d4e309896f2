"""The benchmark callbacks of the diffusion stage (identity, reflectance errors): metrics, sharing, cadence,
inference mode, configs, and a 2-rank DDP run that logs every metric once per validation."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from test_evaluation_conditioning import _checkpoint, _synthetic

from fitdiff.callbacks import IdentitySimilarityCallback, ReflectanceErrorCallback
from fitdiff.callbacks.validation_fits import BenchResult, clear_fit_cache
from fitdiff.config.errors import ConfigError
from fitdiff.metrics.reflectance import map_metric_names
from helpers import REPO_ROOT, run_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METHODS = ("unguided", "guided")
SHORT = ["sampler.num_inference_steps=2", "polish.steps=0"]
IDENTITY_KEYS = {f"bench/{m}/{k}" for m in ("identity_eval", "shape_mm") for k in METHODS} | {
    "bench/identity_similarity_seconds"}


def _reflectance_keys(lpips: bool) -> set[str]:
    return {f"bench/{m}/{k}" for m in METHODS for k in map_metric_names(lpips)} | {"bench/reflectance_error_seconds"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny synthetic dataset with photos (``folder/synthetic``) and a tiny diffusion checkpoint of it."""
    folder = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _synthetic(folder / "synthetic")
        ckpt = _checkpoint(folder, "spade.ckpt")
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(folder=folder, data=folder / "synthetic", ckpt=ckpt)


def _module(bench, shape_model: bool = False):
    from fitdiff.ldm.module import LatentDiffusionModule

    module = LatentDiffusionModule.load_checkpoint(bench.ckpt)
    if shape_model:  # the module builds the dataset's model itself (as quickstart_ldm's does)
        hp = dict(module.hparams)
        hp["shape_model"] = {"_target_": "fitdiff.synthetic.dataset_model.dataset_shape_model",
                             "data_dir": str(bench.data)}
        state = module.state_dict()
        module = LatentDiffusionModule(**hp)
        module.load_state_dict(state)
    return module


def _callbacks(bench, **kwargs):
    common = {"data_dir": str(bench.data), "n_photos": 2, "preset_overrides": SHORT, **kwargs}
    return IdentitySimilarityCallback(**common), ReflectanceErrorCallback(**common, lpips=False)


def test_metrics_are_finite_and_the_second_callback_reuses_the_fits(bench, monkeypatch):
    from fitdiff.fitting import Reconstructor

    clear_fit_cache()
    module = _module(bench)
    identity, reflectance = _callbacks(bench)
    first = identity.compute(module, step=5, images=True)
    assert set(first.metrics) == IDENTITY_KEYS
    assert all(math.isfinite(v) for v in first.metrics.values())
    assert all(-1.0 <= first.metrics[f"bench/identity_eval/{m}"] <= 1.0 for m in METHODS)
    assert first.columns == ["key", "method", "identity_eval", "shape_mm", "photo | render"]
    assert [r[1] for r in first.rows] == ["unguided"] * 2 + ["guided"] * 2 and first.shared == 0
    image = first.rows[0][-1]
    assert image.dtype == np.uint8 and image.shape == (48, 96, 3)  # photo | render

    def refit(*args, **kwargs):
        raise AssertionError("the fits of this step are in the shared cache")

    monkeypatch.setattr(Reconstructor, "__call__", refit)
    second = reflectance.compute(module, step=5)
    assert second.shared == 2 and set(second.metrics) == _reflectance_keys(lpips=False)
    assert all(math.isfinite(v) for v in second.metrics.values())
    assert second.rows[0][-1] is None  # no images without a W&B logger


def test_the_same_seed_gives_the_same_metrics(bench):
    clear_fit_cache()
    first = _callbacks(bench, methods={"unguided": "unguided"})[0].compute(_module(bench), step=1)
    clear_fit_cache()
    again = _callbacks(bench, methods={"unguided": "unguided"})[0].compute(_module(bench), step=1)
    other = _callbacks(bench, methods={"unguided": "unguided"}, seed=1)[0].compute(_module(bench), step=1)
    key = "bench/shape_mm/unguided"
    assert first.metrics[key] == again.metrics[key]
    assert first.metrics["bench/identity_eval/unguided"] == again.metrics["bench/identity_eval/unguided"]
    assert other.metrics[key] != first.metrics[key]


class _FakeWandb(WandbLogger):
    """Records ``log_table`` calls without a W&B run."""

    def __init__(self) -> None:
        self.tables: list[dict] = []

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None) -> None:
        self.tables.append({"key": key, "columns": columns, "data": data, "step": step})


def _fake_trainer(rank: int, broadcasts: list, loggers=()) -> SimpleNamespace:
    def broadcast(obj, src=0):
        broadcasts.append(obj)
        return {"metrics": {"bench/identity_eval/guided": 0.5}} if obj is None else obj  # rank 0's payload

    return SimpleNamespace(sanity_checking=False, is_global_zero=rank == 0, global_rank=rank, global_step=0,
                           loggers=list(loggers), strategy=SimpleNamespace(broadcast=broadcast))


@pytest.mark.parametrize("rank", [0, 1])
def test_cadence_rank_zero_compute_and_identical_logs_on_every_rank(bench, monkeypatch, rank):
    callback = _callbacks(bench, every_n_validations=2)[0]
    computed, logged, broadcasts = [], [], []
    image = np.zeros((4, 8, 3), np.uint8)

    def compute(pl_module, step=0, images=False):
        computed.append((step, images))
        return BenchResult({"bench/identity_eval/guided": 0.5}, ["key", "method", "identity_eval", "photo | render"],
                           [["k0", "guided", 0.5, image]])

    monkeypatch.setattr(callback, "compute", compute)
    module = SimpleNamespace(log=lambda name, value, **kw: logged.append((name, value, kw)))
    wandb = _FakeWandb()
    trainer = _fake_trainer(rank, broadcasts, [wandb])
    trainer.sanity_checking = True
    callback.on_validation_epoch_end(trainer, module)  # the sanity check is not a validation
    trainer.sanity_checking = False
    for step in range(1, 6):
        trainer.global_step = step
        callback.on_validation_epoch_end(trainer, module)
    assert len(broadcasts) == 3  # validations 1, 3, 5, on every rank
    assert computed == ([(1, True), (3, True), (5, True)] if rank == 0 else [])
    assert [(n, v) for n, v, _ in logged] == [("bench/identity_eval/guided", 0.5)] * 3
    assert all(kw["sync_dist"] is False and kw["rank_zero_only"] is False for _, _, kw in logged)
    if rank == 0:
        assert [t["step"] for t in wandb.tables] == [1, 3, 5]
        table = wandb.tables[0]
        assert table["key"] == "bench/identity_similarity" and table["columns"][-1] == "photo | render"
        assert type(table["data"][0][-1]).__name__ == "Image"
    else:
        assert wandb.tables == []


def test_an_error_on_rank_zero_reaches_every_rank(bench, monkeypatch):
    callback = _callbacks(bench)[0]
    monkeypatch.setattr(callback, "compute", lambda *a, **k: (_ for _ in ()).throw(ValueError("broken")))
    with pytest.raises(ValueError, match="broken"):
        callback.run(_fake_trainer(0, []), SimpleNamespace())
    trainer = _fake_trainer(1, [])
    trainer.strategy.broadcast = lambda obj, src=0: {"error": "ValueError: broken"}
    with pytest.raises(RuntimeError, match="failed on rank 0: ValueError: broken"):
        callback.run(trainer, SimpleNamespace())


def test_validation_under_inference_mode_logs_both_and_keeps_the_denoiser_trainable(bench):
    clear_fit_cache()
    module = _module(bench, shape_model=True)
    module.denoiser.requires_grad_(True)
    callbacks = _callbacks(bench, ema=False, methods={"guided": "guided_eps"})
    modes = []

    def validation_step(batch, batch_idx):  # what a validation step leaves behind, in inference mode
        modes.append(torch.is_inference_mode_enabled())
        module.stats.to(module.device)
        module.shape_model()

    module.validation_step = validation_step
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=list(callbacks),
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                        default_root_dir=bench.folder)
    trainer.validate(module, dataloaders=torch.utils.data.DataLoader([torch.zeros(1)]), verbose=False)
    assert modes == [True]
    logged = set(trainer.callback_metrics)
    assert {"bench/identity_eval/guided", "bench/shape_mm/guided", "bench/identity_similarity_seconds",
            "bench/guided/diffuse_psnr", "bench/guided/normals_angle_deg", "bench/reflectance_error_seconds"} <= logged
    assert all(p.requires_grad for p in module.denoiser.parameters())


def test_a_missing_recognizer_or_preset_is_a_clear_error(bench, tmp_path):
    missing = tmp_path / "missing_eval.safetensors"
    callback = IdentitySimilarityCallback(str(bench.data), eval_recognizer_weights=str(missing))
    with pytest.raises(ConfigError, match="evaluation recognizer: no weights at .*missing_eval.safetensors"):
        callback.setup(None, None, "fit")
    guide = tmp_path / "missing_guide.safetensors"
    with pytest.raises(ConfigError, match="missing_guide.safetensors.*reflectance_error.recognizer_weights"):
        ReflectanceErrorCallback(str(bench.data), recognizer_weights=str(guide)).compute(None)
    with pytest.raises(ConfigError, match="unknown fitting preset.*nope"):
        IdentitySimilarityCallback(str(bench.data), methods={"guided": "nope"})


def test_the_documented_commands_compose(compose_train):
    from fitdiff.config import validate_config
    from fitdiff.config.instantiate import instantiate_callbacks

    built = {}
    for choice in ("benchmark", "[default,identity_similarity]", "[default,reflectance_error]"):
        cfg = compose_train("quickstart_ldm", f"callbacks={choice}")
        validate_config(cfg)
        built[choice] = {type(c).__name__ for c in instantiate_callbacks(cfg.callbacks)}
        assert {"LastCheckpoint", "SampleGrid", "ModelCheckpoint"} <= built[choice]  # on top of the defaults
        for node in (cfg.callbacks.get("identity_similarity"), cfg.callbacks.get("reflectance_error")):
            assert node is None or node.data_dir == f"{cfg.paths.data_dir}/synthetic"
    assert {"IdentitySimilarityCallback", "ReflectanceErrorCallback"} <= built["benchmark"]
    assert "ReflectanceErrorCallback" not in built["[default,identity_similarity]"]
    assert "IdentitySimilarityCallback" not in built["[default,reflectance_error]"]
    default = compose_train("quickstart_ldm")
    assert not {"identity_similarity", "reflectance_error"} & set(default.callbacks)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_ranks_log_every_bench_metric_once_per_validation(bench, tmp_path):
    """A 2-rank diffusion training with both benchmark callbacks: each metric once per validation, and the
    ranks end with identical denoiser and EMA weights (saved by tests/ddp_probe.py on every rank)."""
    from fitdiff.ldm.encode import encode_latents

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encode_latents(bench.folder / "ae.safetensors", bench.data, bench.folder / "synthetic_latents", device="cpu",
                       progress=False, batch_size=8)
    finally:
        torch.set_num_threads(threads)
    run, ranks = tmp_path / "run", tmp_path / "ranks"
    steps = "['sampler.num_inference_steps=2','polish.steps=0']"
    result = run_script(
        "train.py", "experiment=quickstart_ldm", "trainer=ddp_cpu", "trainer.devices=2", "logger=csv",
        "extras.print_config=false", f"paths.data_dir={bench.folder}", f"model.autoencoder={bench.folder / 'ae.safetensors'}",
        f"hydra.run.dir={run}", "model.net.model_channels=16", "model.net.channel_mult=[1]",
        "model.net.attention_resolutions=[]", "model.net.norm_groups=8", "model.net.head_channels=16", "model.net.spade_map_channels=8", "data.batch_size=2",
        "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
        "callbacks=benchmark", "callbacks.sample_grid.every_n_validations=0",
        *(f"callbacks.{c}.{k}" for c in ("identity_similarity", "reflectance_error")
          for k in ("n_photos=2", f"preset_overrides={steps}")),
        "callbacks.model_checkpoint.monitor=bench/identity_eval/guided", "callbacks.model_checkpoint.mode=max",
        "model.p_uncond=0.5", "+callbacks.rank_state._target_=ddp_probe.SaveRankState",
        f"+callbacks.rank_state.out_dir={ranks}",
        timeout=360, env={"PYTHONPATH": str(REPO_ROOT / "tests")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output and "fit(s) shared with another benchmark callback" in output
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    for key in IDENTITY_KEYS | _reflectance_keys(lpips=True):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), (key, values)
    assert list((run / "checkpoints").glob("step*.ckpt"))  # monitored on the broadcast metric
    first = torch.load(ranks / "rank0.pt", weights_only=True)
    second = torch.load(ranks / "rank1.pt", weights_only=True)
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, different
    assert any(k.startswith("ema.average.module.") for k in first)
    assert int(first["ema.average.n_averaged"]) == 4
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
