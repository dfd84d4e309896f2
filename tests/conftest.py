"""Shared fixtures. Every test runs offline, with W&B credentials hidden and assets in a temp folder."""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per test worker: the workers share the cores, and oversubscribed tiny
    # convolutions run several times slower
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """No W&B key, no forced W&B mode, an empty asset folder: tests never reach the network."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "FITDIFF_ROOT", "FITDIFF_DATA",
                "FITDIFF_RUN_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path_factory.getbasetemp() / "no-netrc"))
    monkeypatch.setenv("FITDIFF_ASSETS", str(tmp_path_factory.mktemp("assets")))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))


@pytest.fixture
def compose_train(tmp_path):
    """``compose_train(experiment, *overrides)`` -> a train config writing into ``tmp_path``."""
    from fitdiff.config.compose import compose_experiment

    def _compose(experiment: str, *overrides: str, config_name: str = "train"):
        return compose_experiment(experiment, tmp_path / "run", list(overrides), config_name=config_name)

    return _compose


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny convolutions run faster, and far faster on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def latent_dataset(tmp_path_factory):
    """A tiny face dataset (32x32 maps, 6 shape coefficients), a tiny autoencoder (factor 2) and its
    pre-encoded latents (16x16 grid, as the quickstart's); ``overrides`` point a diffusion experiment at them.
    """
    from types import SimpleNamespace

    from fitdiff.autoencoder import BranchedVQAutoencoder, export_safetensors
    from fitdiff.data import DatasetWriter, random_sample, random_spec
    from fitdiff.ldm.encode import encode_latents

    root = tmp_path_factory.mktemp("latent_dataset")
    spec = random_spec(uv_resolution=32, shape_dim=6)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with DatasetWriter(root / "faces", spec, samples_per_shard=8) as writer:
            for i in range(24):
                split = "train" if i < 16 else "val" if i < 20 else "test"
                writer.write(split, random_sample(f"s{i // 2}_{i % 2}", spec, i))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = BranchedVQAutoencoder(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2,
                                        quantizer=dict(n_codes=16))
        ae = export_safetensors(net, root / "ae.safetensors")
        encode_latents(ae, root / "faces", root / "latents", device="cpu", progress=False, batch_size=8)
        from fitdiff.face.synthetic_recognizer import RecognizerNet
        from fitdiff.synthetic.recognizer_training import save_recognizer_weights

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            save_recognizer_weights(RecognizerNet(), root / "recognizer.safetensors")
    finally:
        torch.set_num_threads(threads)
    shape_model = "{_target_:fitdiff.face.make_procedural_shape_model,n_vertices:600,n_components:6,seed:0}"
    overrides = [
        f"model.autoencoder={ae}",
        f"data.data_dir={root / 'latents'}",
        "model.shape_model=null",
        f"+model.shape_model={shape_model}",
    ]
    return SimpleNamespace(root=root, faces=root / "faces", latents=root / "latents", autoencoder=ae,
                           recognizer=root / "recognizer.safetensors", overrides=overrides, shape_dim=6)


#: a small denoiser for tests that need a trained diffusion checkpoint
TINY_UNET = ["model.net.model_channels=32", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
             "model.net.attention_resolutions=[2]", "model.net.head_channels=16", "model.net.spade_map_channels=8"]


@pytest.fixture(scope="session")
def tiny_ldm_checkpoint(latent_dataset, tmp_path_factory):
    """``last.ckpt`` of a 2-step ``quickstart_ldm`` run of a small denoiser on ``latent_dataset``."""
    from fitdiff.config.compose import compose_experiment
    from fitdiff.tasks import train

    run = tmp_path_factory.mktemp("tiny_ldm_run")
    cfg = compose_experiment("quickstart_ldm", run, [*latent_dataset.overrides, *TINY_UNET, "logger=none",
                                                     "trainer.max_steps=2", "data.batch_size=4",
                                                     "callbacks.sample_grid.every_n_validations=0",
                                                     "extras.print_config=false"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small embedded-style synthetic dataset (20 subjects x 3 photos of 64 px, 16 px maps)."""
    from fitdiff.synthetic import SyntheticConfig, generate_dataset
    from fitdiff.synthetic.recognizer_training import RecognizerTrainingConfig

    out = tmp_path_factory.mktemp("tiny_synthetic") / "data"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generate_dataset(SyntheticConfig(
            out=out, subjects=20, images_per_subject=3, uv_res=16, image_res=64, seed=0, workers=1, n_vertices=2000,
            n_components=10, recognizer_images=2, recognizer_shared_images=0, samples_per_shard=16, threads=1,
            progress=False, training=RecognizerTrainingConfig(epochs=2, batch_size=8)))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def tiny_detector(tiny_synthetic):
    """``detector.safetensors`` trained on ``tiny_synthetic``'s training photos (by the real command; 60 epochs:
    with 30 its specificity on the 12 held-out backgrounds was 0.75 on one machine, below the test's 0.9)."""
    from helpers import train_detector

    return train_detector(tiny_synthetic, epochs=60)
