"""data.on_bad_sample: raise by default; skip counts, logs (shard path + key) and stops past the fraction."""

from __future__ import annotations

import logging

import pytest

from fitdiff.config import ConfigError, validate_config
from fitdiff.data import (
    BadSampleLimitError,
    DatasetWriter,
    FaceDataModule,
    SampleError,
    random_sample,
    random_spec,
)
from fitdiff.data.bad_samples import BadSampleCounter

SPEC = random_spec(image_resolution=16, uv_resolution=8)


def _dataset(folder, bad, n_train=8, n_val=10, per_shard=4):
    """Write samples s<i>_0; those whose index is in ``bad`` lack their id.npy member."""
    with DatasetWriter(folder, SPEC, samples_per_shard=per_shard, validate=False) as writer:
        for i in range(n_train + n_val):
            sample = random_sample(f"s{i}_0", SPEC, i)
            if i in bad:
                sample.identity = None
            writer.write("train" if i < n_train else "val", sample)


def _dm(folder, **kwargs):
    dm = FaceDataModule(str(folder), batch_size=2, seed=0, shuffle_buffer=0, **kwargs)
    dm.setup("fit")
    return dm


def _val_keys(dm):
    return [k for batch in dm.val_dataloader() for k in batch.keys]


def test_raise_is_the_default_and_names_the_full_shard_path(tmp_path):
    _dataset(tmp_path, bad={13})  # val sample 5 -> val-00001.tar
    dm = _dm(tmp_path)
    with pytest.raises(SampleError, match="missing") as info:
        _val_keys(dm)
    assert (info.value.shard, info.value.key) == (str(tmp_path / "val-00001.tar"), "s13_0")
    assert str(tmp_path / "val-00001.tar") in str(info.value)


def test_skip_drops_counts_and_logs_each_bad_sample(tmp_path, caplog):
    _dataset(tmp_path, bad={9, 14})
    dm = _dm(tmp_path, on_bad_sample="skip", max_bad_fraction=0.3, bad_fraction_min_samples=4)
    with caplog.at_level(logging.WARNING, logger="fitdiff.data.bad_samples"):
        keys = _val_keys(dm)
    assert keys == [f"s{i}_0" for i in range(8, 18) if i not in (9, 14)]
    counter = dm.streams["val"].bad_samples
    assert (counter.read, counter.skipped) == (10, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert f"shard {tmp_path / 'val-00000.tar'}, sample 's9_0'" in warnings[0]
    assert f"shard {tmp_path / 'val-00001.tar'}, sample 's14_0'" in warnings[1]


def test_skipping_past_the_fraction_stops_at_the_end_of_a_pass(tmp_path):
    _dataset(tmp_path, bad={9, 14})  # 2 of 10 val samples: fewer than the minimum count, checked at the end
    dm = _dm(tmp_path, on_bad_sample="skip", max_bad_fraction=0.1)
    with pytest.raises(BadSampleLimitError, match=r"2 of 10 samples read in a complete pass .*max_bad_fraction=0.1"):
        _val_keys(dm)


def test_skipping_past_the_fraction_stops_training(tmp_path):
    _dataset(tmp_path, bad={1, 2, 5})  # 3 of the 8 training samples
    dm = _dm(tmp_path, on_bad_sample="skip", max_bad_fraction=0.2, bad_fraction_min_samples=10,
             steps_per_epoch=50)
    with pytest.raises(BadSampleLimitError, match="more than data.max_bad_fraction=0.2"):
        for _ in dm.train_dataloader():
            pass
    counter = dm.streams["train"].bad_samples
    assert counter.read >= 10 and counter.skipped > 0.2 * counter.read


def test_the_fraction_is_checked_from_the_minimum_count_on():
    counter = BadSampleCounter("skip", max_bad_fraction=0.1, min_samples=10)
    error = SampleError("broken", shard="/data/train-00000.tar", key="a_0")
    counter.bad(error)
    for _ in range(9):
        counter.good()  # 1 of 10 = 0.1: not more than the fraction
    assert (counter.read, counter.skipped) == (10, 1)
    with pytest.raises(BadSampleLimitError, match=r"2 of 11 samples read so far .*/data/train-00000.tar"):
        counter.bad(error)


def test_below_the_minimum_count_a_bad_start_does_not_stop():
    counter = BadSampleCounter("skip", max_bad_fraction=0.0, min_samples=3)
    counter.bad(SampleError("broken", key="a_0"))
    counter.good()
    with pytest.raises(BadSampleLimitError):
        counter.good()  # the third sample reaches the minimum: 1 of 3 > 0


def test_raise_policy_raises_the_sample_error_itself():
    error = SampleError("broken", key="a_0")
    with pytest.raises(SampleError) as info:
        BadSampleCounter().bad(error)
    assert info.value is error


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"on_bad_sample": "ignore"}, "on_bad_sample must be one of raise, skip"),
    ({"max_bad_fraction": 1.5}, r"max_bad_fraction must be a number in \[0, 1\]"),
    ({"bad_fraction_min_samples": 0}, "bad_fraction_min_samples must be an integer >= 1"),
])
def test_the_datamodule_checks_its_arguments(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        FaceDataModule(str(tmp_path), **kwargs)


@pytest.mark.parametrize(("override", "pattern"), [
    ("data.on_bad_sample=ignore", r"wrong type for 'data.on_bad_sample': got 'ignore'.*Literal\['raise', 'skip'\]"),
    ("data.max_bad_fraction=1.5", r"invalid value for 'data.max_bad_fraction': got 1.5, .* a value in \[0, 1\]"),
    ("data.max_bad_fraction=lots", "wrong type for 'data.max_bad_fraction'"),
    ("data.bad_fraction_min_samples=0", r"invalid value for 'data.bad_fraction_min_samples'.* in \[1, inf\]"),
])
def test_config_validation_rejects_bad_values(compose_train, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config(compose_train("smoke", "data=shards", override))


def test_config_validation_accepts_skip(compose_train):
    cfg = compose_train("smoke", "data=shards", "data.on_bad_sample=skip", "data.max_bad_fraction=0.05",
                        "data.bad_fraction_min_samples=100")
    validate_config(cfg)
    assert cfg.data.on_bad_sample == "skip" and cfg.data.max_bad_fraction == 0.05
