"""Asset registry: status, fetch from a loopback HTTP server (good, wrong checksum, truncated), errors."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading

import pytest

from fitdiff import assets
from fitdiff.assets import Asset, AssetChecksumError, AssetDownloadError, AssetMissingError
from helpers import run_script

PAYLOAD = os.urandom(3 * (1 << 20) + 123)  # several 1 MiB chunks plus a tail
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/good.bin":
            body, announced = PAYLOAD, len(PAYLOAD)
        elif self.path == "/wrong.bin":
            body = bytes(reversed(PAYLOAD))
            announced = len(body)
        elif self.path == "/truncated.bin":
            body, announced = PAYLOAD[: len(PAYLOAD) // 2], len(PAYLOAD)
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def blob(monkeypatch, server):
    asset = Asset(
        name="test_blob",
        filename="blob.bin",
        description="a test file",
        sha256=DIGEST,
        url=f"{server}/good.bin",
        source="loopback server",
        licence="test",
    )
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    return asset


def _leftovers() -> list[str]:
    folder = assets.asset_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_good_file_verifies_and_moves_into_place(blob):
    path = assets.fetch(blob.name, progress=False)
    assert path == assets.asset_path(blob.name)
    assert path.read_bytes() == PAYLOAD
    assert assets.require(blob.name) == path
    assert [n for n in _leftovers() if n.startswith(".")] == []  # no temporary file left


def test_fetch_wrong_checksum_leaves_nothing(blob, server):
    with pytest.raises(AssetChecksumError, match="expected " + DIGEST):
        assets.fetch(blob.name, url=f"{server}/wrong.bin", progress=False)
    assert _leftovers() == []


def test_fetch_truncated_transfer_leaves_nothing(blob, server):
    with pytest.raises(AssetDownloadError, match="test_blob"):
        assets.fetch(blob.name, url=f"{server}/truncated.bin", progress=False)
    assert _leftovers() == []


def test_fetch_http_error_names_asset_and_url(blob, server):
    with pytest.raises(AssetDownloadError, match=r"test_blob.*/missing\.bin"):
        assets.fetch(blob.name, url=f"{server}/missing.bin", progress=False)
    assert _leftovers() == []


def test_truncated_download_does_not_replace_a_good_file(blob, server):
    good = assets.fetch(blob.name, progress=False)
    with pytest.raises(AssetDownloadError):
        assets.fetch(blob.name, url=f"{server}/truncated.bin", force=True, progress=False)
    assert good.read_bytes() == PAYLOAD


def test_require_missing_names_file_and_command(blob):
    with pytest.raises(AssetMissingError) as info:
        assets.require(blob.name)
    message = str(info.value)
    assert "blob.bin" in message and "python -m fitdiff.assets fetch test_blob" in message


def test_require_detects_corruption(blob):
    path = assets.fetch(blob.name, progress=False)
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(AssetChecksumError, match="--force"):
        assets.require(blob.name)


def test_manual_asset_says_how_to_get_it():
    with pytest.raises(AssetMissingError, match="python -m fitdiff.assets add lsfm"):
        assets.require("lsfm")
    with pytest.raises(AssetMissingError, match="cannot be downloaded automatically"):
        assets.fetch("lsfm", progress=False)


def test_add_checks_checksum(blob, tmp_path):
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(b"not it")
    with pytest.raises(AssetChecksumError):
        assets.add(blob.name, wrong)
    right = tmp_path / "right.bin"
    right.write_bytes(PAYLOAD)
    assert assets.add(blob.name, right).read_bytes() == PAYLOAD


def test_unknown_asset_lists_known_names():
    with pytest.raises(assets.AssetError, match="arcface_ir_se50"):
        assets.get("nope")


@pytest.mark.slow
def test_status_command_lists_every_registered_asset():
    result = run_script("-m", "fitdiff.assets", "status")
    assert result.returncode == 0, result.stderr
    for name in ("arcface_ir_se50", "retinaface_resnet50", "lpips_vgg16", "lsfm"):
        assert name in result.stdout
    assert "missing" in result.stdout


@pytest.mark.slow
def test_fetch_command_from_mirror_url(server, tmp_path):
    # A registered asset fetched through the CLI from a loopback "mirror": the checksum must match the
    # real file's, so serving our random payload is rejected and nothing is left behind.
    result = run_script("-m", "fitdiff.assets", "fetch", "arcface_ir_se50", "--url", f"{server}/good.bin",
                        "--no-progress")
    assert result.returncode == 1
    assert "sha256" in result.stderr and "nothing was saved" in result.stderr
    assert _leftovers() == []
