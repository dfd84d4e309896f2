"""Commands written in the docs and config comments work as written.

Every ``python -m MODULE`` names a runnable module, and every concrete ``python train.py ...`` /
``python evaluate.py ...`` line (no placeholders such as NAME, <run> or /path/to) composes and
validates with exactly the overrides it shows.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from fitdiff.config import validate_config

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("data_prep/*.md"), *ROOT.glob("experiments/**/*.yaml")]
)
PLACEHOLDER = re.compile(r"NAME|<|\.\.\.|/path/to|SHARDS|\bRUN\b|\[")


def _commands(pattern: str) -> list[tuple[str, str]]:
    """(file, command) for every match of ``pattern`` in the documentation files, deduplicated."""
    found: dict[str, str] = {}
    for path in DOC_FILES:
        for match in re.finditer(pattern, path.read_text()):
            command = match.group(0).split("#")[0].strip().rstrip("`").strip()
            found.setdefault(command, str(path.relative_to(ROOT)))
    return sorted((file, command) for command, file in found.items())


MODULE_COMMANDS = _commands(r"python -m [A-Za-z_][\w.]*")
ENTRY_COMMANDS = [
    (f, c) for f, c in _commands(r"python (?:train|evaluate)\.py[^\n`]*") if "experiment=" in c and not PLACEHOLDER.search(c)
]


def test_the_docs_hold_commands():
    assert len(MODULE_COMMANDS) >= 4 and len(ENTRY_COMMANDS) >= 5


@pytest.mark.parametrize(("file", "command"), MODULE_COMMANDS, ids=[c for _, c in MODULE_COMMANDS])
def test_python_m_modules_exist(file, command):
    module = command.split()[2]
    if module in ("pytest", "pip", "module"):  # not ours ("python -m module" is a generic phrase)
        return
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{file}: '{command}' names no module"
    if spec.submodule_search_locations is not None:  # a package runs through its __main__
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{file}: {module} has no __main__"


@pytest.mark.slow
@pytest.mark.parametrize(("file", "command"), ENTRY_COMMANDS, ids=[c for _, c in ENTRY_COMMANDS])
def test_entry_point_commands_compose_and_validate(compose_train, file, command):
    words = shlex.split(command)[2:]
    overrides = [w for w in words if "=" in w and not w.startswith("-")]
    overrides = [w.split(",")[0] if not w.startswith("tags=") else w for w in overrides]  # first sweep value
    experiment = next((w.split("=", 1)[1] for w in overrides if w.startswith("experiment=")), None)
    rest = [w for w in overrides if not w.startswith(("experiment=", "ckpt_path="))]
    config = "evaluate" if command.startswith("python evaluate.py") else "train"
    cfg = compose_train(experiment, *rest, config_name=config)
    validate_config(cfg)
