"""Training sample order: a new order every epoch, the same orders again for the same seed."""

from __future__ import annotations

import pytest

from fitdiff.data import DatasetWriter, FaceDataModule, random_sample, random_spec

SPEC = random_spec(image_resolution=16, uv_resolution=8, specular_channels=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("order")
    with DatasetWriter(folder, SPEC, samples_per_shard=4) as writer:
        for i in range(24):
            writer.write("train" if i < 20 else "val", random_sample(f"s{i // 2}_{i % 2}", SPEC, i))
    return folder


def _epochs(folder, seed: int, workers: int, n: int = 3) -> list[list[str]]:
    """Training keys of ``n`` consecutive epochs of one loader (as a Trainer iterates it)."""
    dm = FaceDataModule(str(folder), batch_size=4, num_workers=workers, seed=seed, fields=["shape"],
                        shuffle_buffer=16, persistent_workers=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    epochs = [[key for batch in loader for key in batch.keys] for _ in range(n)]
    assert all(len(keys) == dm.steps_per_epoch * 4 for keys in epochs)
    return epochs


@pytest.mark.parametrize("workers", [0, 2])
def test_order_changes_between_epochs_and_repeats_for_a_seed(dataset, workers):
    first = _epochs(dataset, seed=7, workers=workers)
    assert first[0] != first[1] and first[1] != first[2] and first[0] != first[2]
    assert _epochs(dataset, seed=7, workers=workers) == first


def test_another_seed_gives_another_order(dataset):
    assert _epochs(dataset, seed=7, workers=0, n=1) != _epochs(dataset, seed=8, workers=0, n=1)
