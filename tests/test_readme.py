"""The README's code examples run as written."""

import re

import pytest

from helpers import REPO_ROOT


def _python_block(section: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"no python example in README section {section!r}"
    return match.group(1)


@pytest.mark.usefixtures("one_torch_thread")
def test_face_toolkit_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_python_block("Face toolkit"), "README.md#face-toolkit", "exec"), scope)
    assert scope["out"].image.shape == (2, 3, 256, 256)
    assert scope["embedding"].shape == (2, 512)
    assert scope["shape"].grad.abs().sum() > 0  # the identity term reached the shape coefficients
    assert sorted(p.name for p in (tmp_path / "avatar").iterdir()) == [
        "avatar.mtl", "avatar.obj", "avatar_diffuse.png", "avatar_normals.png", "avatar_specular.png"
    ]
