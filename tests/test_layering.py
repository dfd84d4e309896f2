"""The package's layers (docs/DESIGN.md §2): a module imports only from its own layer or lower ones.

Every import in every ``fitdiff`` source file is read with ``ast`` (lazy imports inside functions and
relative imports included), so a new package must be given a layer here before it can import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fitdiff"

#: top-level module or package of fitdiff -> layer (lowest first)
LAYERS: dict[str, int] = {
    "__init__": 0, "io": 0, "config": 0, "optim": 0, "assets": 0, "loggers": 0,
    "data": 1, "render": 1, "metrics": 1,
    "face": 2, "synthetic": 2,
    "autoencoder": 3, "diffusion": 3, "ldm": 3,
    "fitting": 4, "completion": 4, "augment": 4, "callbacks": 4, "evaluation": 4, "export": 4, "smoke": 4,
    "tasks": 5, "quickstart": 5, "sample": 5, "reconstruct": 5, "complete": 5, "report": 5, "demo": 5,
}
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imported_tops(path: Path) -> set[str]:
    """Top-level fitdiff modules that ``path`` imports (absolute or relative)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = parts if parts[-1] == "__init__" else parts[:-1]  # the package the file belongs to
    package = tuple(p for p in package if p != "__init__")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package[: len(package) - (node.level - 1)]
                target = (*base, *(node.module.split(".") if node.module else ()))
                names = ["fitdiff." + ".".join(target) if target else "fitdiff"]
                if not target:  # "from . import x" at the package root
                    names = [f"fitdiff.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        found.update(n.split(".")[1] for n in names if n.startswith("fitdiff."))
    return found - {_top(path)}


def test_every_part_of_the_package_has_a_layer():
    tops = {_top(p) for p in SOURCES}
    assert not tops - set(LAYERS), f"give these a layer in tests/test_layering.py: {sorted(tops - set(LAYERS))}"


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_imports_go_to_the_same_or_a_lower_layer(path):
    source = _top(path)
    upward = sorted(t for t in _imported_tops(path) if LAYERS.get(t, 99) > LAYERS.get(source, -1))
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {LAYERS.get(source)}) imports higher layers: {upward}"


def test_the_check_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    probe = tmp_path / "fitdiff" / "render" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..face import scene\nfrom . import cameras\n\ndef f():\n    import fitdiff.fitting.guided\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "fitdiff")
    assert _imported_tops(probe) == {"face", "fitting"}
