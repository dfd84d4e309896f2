"""fitdiff.io: file hashing, atomic writes, state-dict loading."""

from __future__ import annotations

import collections
import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

from fitdiff.io import (
    AtomicFile,
    StateDictError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    load_state_dict,
    safetensors_metadata,
    sha256_file,
)


class _Boom(RuntimeError):
    pass


def test_sha256_file_equals_hashlib_across_chunk_boundaries(tmp_path):
    data = os.urandom((1 << 20) * 2 + 12345)  # two full chunks and a partial one
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_atomic_write_replaces_on_success_and_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    with atomic_write(path) as handle:
        handle.write(b"first")
        assert not path.exists()  # nothing under the final name until the block ends
    assert path.read_bytes() == b"first"
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    atomic_write_text(path, "line\r\n")
    assert path.read_bytes() == b"line\r\n"  # no newline translation
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


def test_atomic_write_keeps_the_old_file_and_leaves_no_temp_when_the_body_raises(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(_Boom):
        with atomic_write(path, "w") as handle:
            handle.write("half written")
            raise _Boom()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_with_no_previous_file_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(_Boom):
        with atomic_write(tmp_path / "new.bin") as handle:
            handle.write(b"x")
            raise _Boom()
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_with_a_fixed_temp_name(tmp_path):
    path = tmp_path / "shard.tar"
    (tmp_path / "shard.tar.partial").write_bytes(b"left over from a crash")
    target = AtomicFile(path, temp_name="shard.tar.partial")
    target.write(b"abc")
    assert not path.exists()
    assert target.commit() == path
    assert path.read_bytes() == b"abc" and not (tmp_path / "shard.tar.partial").exists()
    with pytest.raises(ValueError, match="already been committed"):
        target.commit()
    dropped = AtomicFile(path, temp_name="shard.tar.partial")
    dropped.write(b"never")
    dropped.discard()
    assert path.read_bytes() == b"abc" and not (tmp_path / "shard.tar.partial").exists()
    with pytest.raises(ValueError, match="plain file name"):
        AtomicFile(path, temp_name="../elsewhere")


def test_atomic_write_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "f", "ab"):
            pass
    assert list(tmp_path.iterdir()) == []


def _state() -> dict[str, torch.Tensor]:
    return {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.arange(4.0), "steps": torch.tensor(7)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_load_state_dict_round_trips_safetensors_and_torch_files(tmp_path):
    state = _state()
    save_file(state, str(tmp_path / "w.safetensors"), metadata={"fitdiff": "{}"})
    torch.save(state, tmp_path / "w.pt")
    _assert_same(load_state_dict(tmp_path / "w.safetensors", what="test"), state)
    _assert_same(load_state_dict(tmp_path / "w.pt", what="test"), state)
    assert safetensors_metadata(tmp_path / "w.safetensors", what="test weights") == {"fitdiff": "{}"}


def test_load_state_dict_unwraps_containers_and_module_prefixes(tmp_path):
    state = _state()
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "lightning.ckpt")
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    ordered = collections.OrderedDict((f"module.{k}", v) for k, v in state.items())
    torch.save(ordered, tmp_path / "plain_ddp.pth")
    for name in ("lightning.ckpt", "ddp.pth", "plain_ddp.pth"):
        _assert_same(load_state_dict(tmp_path / name, what="test weights"), state)


def test_load_state_dict_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": _Boom("not a tensor")}, path)  # a class weights_only refuses
    with pytest.raises(StateDictError, match="evil.pt") as info:
        load_state_dict(path, what="test weights")
    assert "test weights" in str(info.value)


def test_load_state_dict_rejects_non_tensor_values_naming_the_file(tmp_path):
    torch.save({"w": torch.zeros(2), "lr": 0.1}, tmp_path / "mixed.pt")
    with pytest.raises(StateDictError, match=r"mixed\.pt.*'lr' \(float\)"):
        load_state_dict(tmp_path / "mixed.pt", what="test weights")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(StateDictError, match=r"tensor\.pt holds a Tensor"):
        load_state_dict(tmp_path / "tensor.pt", what="test weights")


def test_load_state_dict_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_state_dict(tmp_path / "nothing.safetensors", what="x")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(StateDictError, match="junk.safetensors"):
        load_state_dict(tmp_path / "junk.safetensors", what="test weights")
    (tmp_path / "junk.pt").write_bytes(os.urandom(256))
    with pytest.raises(StateDictError, match="junk.pt"):
        load_state_dict(tmp_path / "junk.pt", what="test weights")
    torch.save(_state(), tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateDictError, match="cut.pt"):
        load_state_dict(tmp_path / "cut.pt", what="test weights")
    with pytest.raises(StateDictError, match="junk.safetensors"):
        safetensors_metadata(tmp_path / "junk.safetensors", what="test weights")
