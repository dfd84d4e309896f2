"""The demo end to end in a real headless browser: upload, result, 3D viewer, relighting, errors, offline.

Needs Gradio (the ``demo`` extra), Selenium and Chromium with its driver (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them); skipped with the missing one named where absent.
The demo runs as its own process with every non-loopback connection refused and logged
(``sitecustomize`` below), so "nothing fetched" is checked, not assumed.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from demo_driver import drive, find_browser
from PIL import Image

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow

GUARD = '''
import os, socket
_log = os.environ["FITDIFF_NET_LOG"]
_local = ("127.0.0.1", "::1", "localhost", "0.0.0.0")
def _note(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in _local:
        _note(f"connect {address!r}")
        raise OSError("network disabled in this test")
    return _connect(self, address)
socket.socket.connect = connect
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if host not in _local and host is not None:
        _note(f"resolve {host!r}")
        raise socket.gaierror("network disabled in this test")
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
'''


def _requirements() -> None:
    for module, extra in (("gradio", "pip install -e '.[demo]'"), ("selenium", "pip install -e '.[dev]'")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed ({extra})")
    browser, driver = find_browser()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    if driver is None:
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network.log"
    log.write_text("")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(guard), os.environ.get("PYTHONPATH", "")]),
           "FITDIFF_NET_LOG": str(log), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "fitdiff.demo", *args, "--port", str(port)], cwd=REPO_ROOT,
                               env=env, stdout=open(tmp_path / "demo.out", "w"), stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"the demo exited: {(tmp_path / 'demo.out').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return process, url, log
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError(f"the demo did not answer on {url}: {(tmp_path / 'demo.out').read_text()[-3000:]}")


def test_demo_in_a_headless_browser(tiny_ldm_checkpoint, latent_dataset, tiny_synthetic, tiny_detector, tmp_path):
    import trimesh

    _requirements()
    work = tmp_path / "work"
    process, url, log = _serve(["--ckpt", str(tiny_ldm_checkpoint), "--data", str(tiny_synthetic),
                                "--recognizer", "synthetic_recognizer", "--recognizer-weights",
                                str(latent_dataset.recognizer), "--work-dir", str(work), "--examples", "2"], tmp_path)
    try:
        example = sorted((work / "examples").glob("*.png"))[0]  # a held-out (test split) photo of the dataset
        blank = tmp_path / "wall.png"
        Image.fromarray(np.full((64, 64, 3), 150, np.uint8)).save(blank)
        shot = Path(os.environ.get("FITDIFF_DEMO_SCREENSHOT", tmp_path / "demo.png"))
        visit = drive(url, example, example.with_suffix(".npy"), blank, shot)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "no face found in wall.png; upload its landmarks" in visit.no_face_message
    assert "Identity similarity" in visit.result_message
    mesh = trimesh.load(io.BytesIO(visit.glb_bytes), file_type="glb", force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.uv is not None
    before = np.asarray(Image.open(io.BytesIO(visit.relit_before)).convert("RGB"), dtype=np.int16)
    after = np.asarray(Image.open(io.BytesIO(visit.relit_after)).convert("RGB"), dtype=np.int16)
    assert before.shape == after.shape and np.abs(before - after).max() > 10
    assert all(name.startswith(url.rstrip("/")) or name.startswith(("data:", "blob:")) for name in visit.resources), \
        [n for n in visit.resources if not n.startswith(url.rstrip("/"))]
    assert log.read_text() == "", f"the demo tried to reach the network:\n{log.read_text()}"
    with Image.open(shot) as image:
        assert image.size[0] >= 1200 and len(image.convert("RGB").getcolors(maxcolors=1 << 24)) > 100
