"""The renderer is a lower layer: nothing under fitdiff/render may import (or even name) fitdiff.face."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

RENDER = Path(__file__).resolve().parent.parent / "fitdiff" / "render"
SOURCES = sorted(RENDER.rglob("*.py"))
# the pattern of `grep -rn "fitdiff.face\|fitdiff import face" fitdiff/render`
GREP = re.compile(r"fitdiff.face|fitdiff import face")


def imported_modules(source: str, package: str) -> list[str]:
    """Absolute names of every module an import in ``source`` (a module of ``package``) refers to:
    ``import a.b``, ``from a import b`` (both ``a`` and ``a.b``) and relative imports, resolved."""
    parts = package.split(".")
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return names


def face_imports(source: str, package: str) -> list[str]:
    return [m for m in imported_modules(source, package) if m == "fitdiff.face" or m.startswith("fitdiff.face.")]


def _package(path: Path) -> str:
    return ".".join(["fitdiff", *path.relative_to(RENDER.parent).parent.parts])


def test_sources_are_found():
    assert RENDER / "renderer.py" in SOURCES and RENDER / "mesh.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(RENDER)))
def test_render_imports_nothing_from_face(path: Path):
    assert face_imports(path.read_text(), _package(path)) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(RENDER)))
def test_render_does_not_name_face_even_in_docs(path: Path):
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if GREP.search(line)]
    assert hits == [], f"{path.name}: lines {hits}"


@pytest.mark.parametrize(
    "source",
    [
        "from fitdiff.face.shape_model import PCAShapeModel",
        "from fitdiff import face",
        "import fitdiff.face.template as t",
        "from ...face import shape_model",  # relative, from fitdiff.render.backends
        "def f():\n    from fitdiff.face import identity\n",  # a lazy import counts too
    ],
)
def test_the_check_catches_every_spelling(source: str):
    assert face_imports(source, "fitdiff.render.backends")
    assert not face_imports("from fitdiff.render import mesh\nfrom .. import cameras", "fitdiff.render.backends")


@pytest.mark.slow
def test_importing_the_renderer_loads_no_face_module():
    probe = "import sys, fitdiff.render; print(sorted(m for m in sys.modules if m.startswith('fitdiff.face')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            cwd=RENDER.parent.parent, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
