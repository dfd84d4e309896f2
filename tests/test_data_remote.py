"""Shards read from URLs (http://, file://, pipe:) on a loopback server: same batches, clear errors."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fitdiff.data import DatasetWriter, FaceDataModule, ManifestError, ShardError, random_sample, random_spec
from fitdiff.data.manifest import load_manifest
from fitdiff.data.remote import is_url, join_url, open_url
from fitdiff.data.stream import read_shard
from fitdiff.data.tar_reader import iter_tar_samples

SPEC = random_spec(image_resolution=32, uv_resolution=16)
PER_SHARD = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """12 train samples (3 shards) and 6 val samples (2 shards, the last one of 2 samples)."""
    folder = tmp_path_factory.mktemp("remote_dataset")
    with DatasetWriter(folder, SPEC, samples_per_shard=PER_SHARD) as writer:
        for i in range(18):
            writer.write("train" if i < 12 else "val", random_sample(f"s{i // 2}_{i % 2}", SPEC, i))
    return folder


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


class _Dropping(_Quiet):
    """Serves ``val-00000.tar`` with its full Content-Length, then closes the socket halfway through."""

    drop = "/val-00000.tar"

    def do_GET(self) -> None:
        if self.path != self.drop:
            return super().do_GET()
        data = (Path(self.directory) / self.drop.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


@contextlib.contextmanager
def _serve(folder: Path, handler: type[http.server.BaseHTTPRequestHandler] = _Quiet) -> Iterator[str]:
    """``http://127.0.0.1:PORT/`` serving ``folder`` from a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _dm(data_dir: str | Path, **kwargs) -> FaceDataModule:
    dm = FaceDataModule(str(data_dir), batch_size=3, seed=0, shuffle_buffer=4, **kwargs)
    dm.setup("fit")
    return dm


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        assert x.keys == y.keys
        for f in fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v, f.name


@pytest.fixture(scope="module")
def local_batches(dataset):
    dm = _dm(dataset)
    return list(dm.train_dataloader()), list(dm.val_dataloader())


def test_url_helpers():
    assert is_url("s3://b/faces") and is_url("http://h/") and is_url("file:///x") and is_url("pipe:cat x")
    assert not is_url("data/shards") and not is_url("/abs/path") and not is_url(Path("s3:/x"))
    assert join_url("s3://b/faces/", "manifest.json") == "s3://b/faces/manifest.json"
    assert join_url("pipe:curl -sf http://h/d", "a.tar") == "pipe:curl -sf http://h/d/a.tar"
    assert join_url("pipe:aws s3 cp s3://b/{name} -", "a.tar") == "pipe:aws s3 cp s3://b/a.tar -"
    assert join_url("pipe:cat /d/{name}", "a b.tar") == "pipe:cat /d/'a b.tar'"
    assert join_url("data/shards", "a.tar") == str(Path("data/shards") / "a.tar")


def test_http_gives_the_local_batches(dataset, local_batches):
    with _serve(dataset) as url:
        dm = _dm(url, verify_checksums=True)
        assert dm.data_dir == url and dm.streams["val"].shards[0] == f"{url}val-00000.tar"
        _assert_same(list(dm.val_dataloader()), local_batches[1])
        _assert_same(list(dm.train_dataloader()), local_batches[0])


def test_http_with_loader_workers(dataset, local_batches):
    with _serve(dataset) as url:
        dm = _dm(url, num_workers=2, persistent_workers=False)
        keys = sorted(k for b in dm.val_dataloader() for k in b.keys)
    assert keys == sorted(k for b in local_batches[1] for k in b.keys)


def test_file_url(dataset, local_batches):
    dm = _dm(dataset.as_uri(), verify_checksums=True)
    _assert_same(list(dm.val_dataloader()), local_batches[1])
    _assert_same(list(dm.train_dataloader()), local_batches[0])


@pytest.mark.parametrize("template", ["pipe:cat {dir}", "pipe:cat {dir}/{{name}}"])
def test_pipe(dataset, local_batches, template):
    dm = _dm(template.format(dir=dataset), verify_checksums=True)
    _assert_same(list(dm.val_dataloader()), local_batches[1])


def test_latent_shards_over_http(tmp_path):
    from test_data_latents import _write

    from fitdiff.data import LatentDataModule, load_latent_manifest

    _write(tmp_path)

    def batches(data_dir: str) -> list:
        dm = LatentDataModule(data_dir, batch_size=4, seed=0)
        dm.setup("fit")
        return list(dm.val_dataloader())

    with _serve(tmp_path) as url:
        _assert_same(batches(url), batches(str(tmp_path)))
        with pytest.raises(ManifestError, match=rf"^{url}sub/latents.json does not exist"):
            load_latent_manifest(f"{url}sub")


def test_connection_dropped_mid_shard(dataset):
    with _serve(dataset, _Dropping) as url:
        dm = _dm(url)  # the HEAD request reports the full size: setup passes
        with pytest.raises(ShardError) as info:
            list(dm.val_dataloader())
    message = str(info.value)
    assert f"shard {url}val-00000.tar: cannot read the tar archive " in message
    assert "after sample 's" in message or "before the first sample" in message
    assert "\n" not in message


def test_pipe_cut_short(dataset):
    size = (dataset / "val-00000.tar").stat().st_size
    with pytest.raises(ShardError, match=r"pipe:head .*val-00000.tar: cannot read the tar archive after sample 's\d_\d'"):
        list(read_shard(f"pipe:head -c {size // 2} {dataset}/val-00000.tar", expected=PER_SHARD))
    with pytest.raises(ShardError, match=r"before the first sample: .*exited with status 1"):
        list(read_shard(f"pipe:cat {dataset}/missing.tar"))


def test_missing_manifest_and_shard_name_the_url(dataset, tmp_path):
    with _serve(tmp_path) as url:
        with pytest.raises(ManifestError, match=rf"^{url}manifest.json does not exist: point data_dir") as info:
            FaceDataModule(url).setup("fit")
        assert "\n" not in str(info.value)
    partial = tmp_path / "partial"
    shutil.copytree(dataset, partial)
    (partial / "train-00001.tar").unlink()
    with _serve(partial) as url:
        with pytest.raises(ManifestError, match=rf"shard {url}train-00001.tar is listed in {url}manifest.json but"):
            _dm(url)
        with pytest.raises(ShardError, match=rf"shard {url}train-00001.tar: cannot read .* before the first sample: "
                                             r"not found"):
            list(read_shard(f"{url}train-00001.tar"))
        shutil.copy(dataset / "train-00001.tar", partial)
        (partial / "train-00002.tar").write_bytes((dataset / "train-00002.tar").read_bytes()[:1024])
        with pytest.raises(ManifestError, match=rf"shard {url}train-00002.tar: 1024 bytes in storage, manifest says"):
            _dm(url)
    with pytest.raises(ManifestError, match=r"^pipe:cat /no/such/manifest.json: cannot be read .*exited with status"):
        load_manifest("pipe:cat /no/such")


def test_train_cli_reports_a_missing_remote_manifest(tmp_path, caplog):
    from fitdiff.tasks import run_cli

    def task(cfg):
        FaceDataModule(cfg.data.data_dir).setup("fit")
        return {}

    with _serve(tmp_path) as url, caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        run_cli(task, OmegaConf.create({"data": {"data_dir": url}}))
    assert info.value.code == 2
    assert f"data error: {url}manifest.json does not exist" in caplog.text


class _NonSeekable(io.RawIOBase):
    """Only ``read``: ``seek`` and ``tell`` raise, ``seekable()`` is False (a network stream)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args) -> int:
        raise AssertionError("seek called")

    def tell(self) -> int:
        raise AssertionError("tell called")

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else self._pos + n
        out = self._data[self._pos : end]
        self._pos += len(out)
        return out


@pytest.mark.parametrize("select", [None, lambda name: name.endswith(".json")])
def test_tar_reader_needs_only_read(dataset, select):
    path = dataset / "train-00000.tar"
    with open(path, "rb") as f:
        expected = list(iter_tar_samples(f, str(path), select))
    got = list(iter_tar_samples(_NonSeekable(path.read_bytes()), str(path), select))
    assert got == expected and len(got) == PER_SHARD
    with open_url(path.as_uri()) as stream:
        assert not stream.seekable()
        assert list(iter_tar_samples(stream, str(path), select)) == expected
