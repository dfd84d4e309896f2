"""Sample schema: encode/decode round trip, safe decoders, validation errors naming key and field."""

from __future__ import annotations

import io

import numpy as np
import pytest

from fitdiff.data import (
    FaceSample,
    SampleError,
    SampleSpec,
    decode_sample,
    five_point_landmarks,
    make_key,
    random_sample,
    random_spec,
    subject_of,
    validate_sample,
)
from fitdiff.data.codecs import decode_npy, decode_png, encode_png
from fitdiff.data.split import assign_splits

SPEC = random_spec(image_resolution=32, uv_resolution=16, shape_dim=8, num_landmarks=68)


def _sample(key: str = "subjA_0", seed: int = 0, spec: SampleSpec = SPEC) -> FaceSample:
    return random_sample(key, spec, seed)


def test_encode_decode_round_trip_is_exact():
    sample = _sample()
    members = sample.encode()
    assert set(members) == {"__key__", "image.png", "diffuse.png", "specular.png", "normals.npy", "shape.npy",
                            "id.npy", "landmarks.npy", "meta.json"}
    back = decode_sample(members)
    for name in ("image", "diffuse", "specular", "normals", "shape", "identity", "landmarks"):
        a, b = getattr(sample, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b), name
    assert back.meta == sample.meta
    validate_sample(back, SPEC)


def test_encoding_is_deterministic():
    assert _sample(seed=3).encode() == _sample(seed=3).encode()
    assert _sample(seed=3).encode() != _sample(seed=4).encode()


@pytest.mark.parametrize("channels", [1, 3])
def test_specular_one_or_three_channels(channels):
    spec = random_spec(specular_channels=channels)
    sample = _sample(spec=spec)
    back = decode_sample(sample.encode())
    assert back.specular.shape == (16, 16, channels)
    validate_sample(back, spec)


def test_png_codec_keeps_rgb_order():
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0] = 200  # pure red
    assert np.array_equal(decode_png(encode_png(image)), image)


def test_decode_only_requested_fields():
    back = decode_sample(_sample().encode(), fields=("diffuse", "normals"))
    assert back.present() == ("diffuse", "normals")


def test_npy_decoder_refuses_pickle():
    stream = io.BytesIO()
    np.save(stream, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        decode_npy(stream.getvalue())
    members = _sample().encode()
    members["shape.npy"] = stream.getvalue()
    with pytest.raises(SampleError, match=r"sample 'subjA_0', field 'shape.npy'"):
        decode_sample(members)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float16).reshape(2, 4, 3),
        np.arange(6, dtype=np.float32),
        np.zeros((0, 2), np.float32),
        np.array(3.5),
        np.asfortranarray(np.arange(15.0).reshape(3, 5)),
        np.arange(5, dtype=">i4"),
        np.array([True, False]),
        np.arange(4, dtype=np.complex64),  # not on the fast path: np.load decodes it
    ],
    ids=["f2-3d", "f4-1d", "empty", "0d", "fortran", "big-endian", "bool", "complex"],
)
def test_npy_decoder_matches_numpy(array, monkeypatch):
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    fast_path = array.dtype.kind in "fiub"
    if fast_path:  # the header parser must handle these without np.load
        monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load used"))
    back = decode_npy(stream.getvalue())
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
    assert back.flags.writeable and (back.flags.owndata or not fast_path)


@pytest.mark.parametrize("damage", ["truncate", "extend", "bad-header"])
def test_npy_decoder_rejects_damaged_data(damage):
    stream = io.BytesIO()
    np.save(stream, np.arange(8, dtype=np.float32), allow_pickle=False)
    data = stream.getvalue()
    data = {"truncate": data[:-3], "extend": data + b"\0" * 4, "bad-header": data.replace(b"'shape'", b"'shope'")}[damage]
    with pytest.raises(ValueError, match="(?i)truncated|damaged|header"):
        decode_npy(data)


def test_missing_member_names_key_and_field():
    members = _sample().encode()
    del members["diffuse.png"]
    with pytest.raises(SampleError, match=r"sample 'subjA_0', field 'diffuse.png': missing") as info:
        decode_sample(members, shard="train-00003.tar")
    assert info.value.shard == "train-00003.tar" and info.value.field == "diffuse.png"


def test_garbage_png_names_field():
    members = _sample().encode()
    members["image.png"] = members["image.png"][:40]
    with pytest.raises(SampleError, match="field 'image.png': cannot decode"):
        decode_sample(members)


def _broken(mutate) -> FaceSample:
    sample = _sample()
    mutate(sample)
    return sample


@pytest.mark.parametrize(
    ("mutate", "field", "pattern"),
    [
        (lambda s: s.normals.__setitem__((2, 3, 0), np.nan), "normals.npy", "non-finite"),
        (lambda s: s.normals.__setitem__((2, 3), np.float16(0.5)), "normals.npy", "unit vectors"),
        (lambda s: setattr(s, "diffuse", np.zeros((8, 8, 3), np.uint8)), "diffuse.png", r"shape must be \(16, 16, 3\)"),
        (lambda s: setattr(s, "image", np.zeros((32, 32, 3), np.float32)), "image.png", "dtype must be uint8"),
        (lambda s: setattr(s, "identity", s.identity * 2), "id.npy", "L2-normalised"),
        (lambda s: setattr(s, "landmarks", s.landmarks[:5]), "landmarks.npy", r"shape must be \(68, 2\)"),
        (lambda s: s.landmarks.__setitem__((0, 0), 1e4), "landmarks.npy", "outside"),
        (lambda s: s.shape.__setitem__(0, 50.0), "shape.npy", "exceeds"),
        (lambda s: s.meta.pop("recognizer"), "meta.json", "missing key"),
        (lambda s: s.meta.__setitem__("uv_resolution", 32), "meta.json", "uv_resolution"),
        (lambda s: s.meta.__setitem__("subject", "other"), "meta.json", "disagrees"),
        (lambda s: s.meta.__setitem__("shape_model", "lsfm"), "meta.json", "shape_model"),
        (lambda s: setattr(s, "specular", np.zeros((16, 16, 3), np.uint8)), "specular.png", "shape must be"),
        (lambda s: setattr(s, "shape", None), "shape.npy", "missing"),
    ],
)
def test_validation_names_the_field(mutate, field, pattern):
    with pytest.raises(SampleError, match=pattern) as info:
        validate_sample(_broken(mutate), SPEC, shard="val-00001.tar")
    assert info.value.field == field and info.value.key == "subjA_0"
    assert "val-00001.tar" in str(info.value) and "subjA_0" in str(info.value)


def test_field_subset_validation_ignores_unloaded_fields():
    sample = _sample()
    sample.image = None
    validate_sample(sample, SPEC, fields=("diffuse", "specular", "normals"))


def test_keys_and_subjects():
    assert make_key("subj_01", "img-3") == "subj_01_img-3"
    assert subject_of("subj_01_img-3") == "subj_01"
    with pytest.raises(ValueError):
        make_key("subj", "a_b")
    with pytest.raises(ValueError):
        make_key("su.bj", "0")
    for bad in ("nounderscore", "a.b_0", "_x_0", "s_"):
        with pytest.raises(SampleError):
            validate_sample(FaceSample(key=bad), SPEC, fields=())


def test_spec_from_sample():
    spec = SampleSpec.from_sample(_sample())
    assert (spec.image_resolution, spec.uv_resolution, spec.shape_dim, spec.num_landmarks) == (32, 16, 8, 68)
    assert spec.recognizer == SPEC.recognizer and SampleSpec.from_dict(spec.to_dict()) == spec


def test_five_point_landmarks_from_68():
    points = np.random.default_rng(0).uniform(0, 100, size=(68, 2)).astype(np.float32)
    five = five_point_landmarks(points)
    assert five.shape == (5, 2)
    np.testing.assert_allclose(five[0], points[36:42].mean(0), rtol=1e-6)
    np.testing.assert_allclose(five[1], points[42:48].mean(0), rtol=1e-6)
    assert np.array_equal(five[2:], points[[30, 48, 54]])
    assert np.array_equal(five_point_landmarks(points[:5]), points[:5])
    assert five_point_landmarks(np.stack([points, points])).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="N == 5 or N == 68"):
        five_point_landmarks(points[:10])


def test_subject_split_is_disjoint_seeded_and_sized():
    subjects = [f"s{i}" for i in range(40)]
    splits = assign_splits(subjects, 0.1, 0.2, seed=1)
    assert set(splits) == set(subjects)
    counts = {k: list(splits.values()).count(k) for k in ("train", "val", "test")}
    assert counts == {"train": 28, "val": 4, "test": 8}
    assert assign_splits(reversed(subjects), 0.1, 0.2, seed=1) == splits  # independent of order
    assert assign_splits(subjects, 0.1, 0.2, seed=2) != splits
    small = assign_splits(["a", "b", "c"], 0.05, 0.05, seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]
    assert assign_splits(["a"], 0.5, 0.4) == {"a": "train"}
