"""What a report shows of an evaluation run directory: its tables, plots, image grids and settings.

``python evaluate.py table=NAME`` writes into the run directory ``RUN_DIR``:

* ``NAME.csv``: ``method``, ``<metric>_mean`` / ``<metric>_std`` per metric, then integer counts;
* ``NAME.md``: the Markdown document of the table (``## Title``, header bullets, the table, extra sections);
* ``NAME.png``: the table's plot (optional);
* ``images/*.png``: reconstruction grids;
* ``tables.json``: the index of all of the above, every path relative to ``RUN_DIR``::

    {"title": "FitDiff evaluation", "created": "2026-12-02T05:10:00Z",
     "tables": [{"name": "reconstruction", "title": "Reconstruction", "csv": "reconstruction.csv",
                 "markdown": "reconstruction.md", "plot": "reconstruction.png"}],
     "images": [{"path": "images/recon_0.png", "caption": "photo | render | relit | maps"}],
     "settings": [".hydra/config.yaml"]}

  ``tables`` is required (``title`` defaults to ``name``, ``plot`` may be null or absent); ``title``,
  ``created``, ``images`` (``caption`` defaults to the file stem) and ``settings`` are optional.

Without ``tables.json`` the run directory is read as: every ``*.md`` with a sibling ``.csv``, by name,
titled by its first ``## `` heading, with ``NAME.png`` as its plot when present; ``images/*.png``
captioned by their stems; ``.hydra/config.yaml`` and ``.hydra/overrides.yaml`` when present.

:func:`read_run_dir` returns a :class:`RunContents`; every problem raises :class:`ReportError`, whose
message names the file (and, for ``tables.json``, the key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "INDEX_NAME",
    "IMAGE_TYPES",
    "ReportError",
    "TableEntry",
    "ImageEntry",
    "RunContents",
    "read_run_dir",
]

#: the index file's name inside the run directory
INDEX_NAME = "tables.json"
#: image file suffix -> MIME type of the images a report embeds
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}
#: settings files shown when there is no index, relative to the run directory
DEFAULT_SETTINGS = (".hydra/config.yaml", ".hydra/overrides.yaml")
DEFAULT_TITLE = "FitDiff evaluation"


class ReportError(ValueError):
    """A run directory cannot be reported on (the message names the path, and the key when there is one)."""


@dataclass(frozen=True)
class TableEntry:
    """One result table: its file stem, title, CSV and Markdown files and optional plot (absolute paths)."""

    name: str
    title: str
    csv: Path
    markdown: Path
    plot: Path | None = None


@dataclass(frozen=True)
class ImageEntry:
    """One image (reconstruction grid) and its caption."""

    path: Path
    caption: str


@dataclass
class RunContents:
    """Everything a report shows of one run directory, in display order.

    Attributes:
        run_dir: the run directory (absolute).
        title: the report's title.
        created: when the run was written (free text, ISO 8601 in ``tables.json``), or ``None``.
        tables, images: in display order.
        settings: settings files shown verbatim, as (path relative to ``run_dir``, absolute path).
        index: the ``tables.json`` read, or ``None`` for the fallback layout.
    """

    run_dir: Path
    title: str
    created: str | None = None
    tables: list[TableEntry] = field(default_factory=list)
    images: list[ImageEntry] = field(default_factory=list)
    settings: list[tuple[str, Path]] = field(default_factory=list)
    index: Path | None = None


def read_run_dir(run_dir: str | Path) -> RunContents:
    """The :class:`RunContents` of ``run_dir``, from its ``tables.json`` or, without one, its files.

    Raises:
        ReportError: ``run_dir`` is not a directory, holds no table, or its ``tables.json`` is malformed
            or names a missing file.
    """
    run_dir = Path(run_dir).resolve()
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory")
    index = run_dir / INDEX_NAME
    contents = _read_index(run_dir, index) if index.is_file() else _read_layout(run_dir)
    if not contents.tables:
        where = index if contents.index else run_dir
        raise ReportError(f"{where}: holds no result table (expected NAME.md beside NAME.csv, or {INDEX_NAME})")
    return contents


def _read_layout(run_dir: Path) -> RunContents:
    """The fallback: tables, images and settings found by file name."""
    tables = []
    for md in sorted(run_dir.glob("*.md")):
        csv = md.with_suffix(".csv")
        if not csv.is_file():
            continue
        plot = md.with_suffix(".png")
        tables.append(TableEntry(md.stem, _heading(md) or md.stem, csv, md, plot if plot.is_file() else None))
    images = [ImageEntry(p, p.stem) for p in sorted((run_dir / "images").glob("*.png")) if p.is_file()]
    settings = [(rel, run_dir / rel) for rel in DEFAULT_SETTINGS if (run_dir / rel).is_file()]
    return RunContents(run_dir, f"{DEFAULT_TITLE}: {run_dir.name}", None, tables, images, settings)


def _heading(markdown: Path) -> str | None:
    """The text of the first ``## `` heading of a Markdown file, or ``None``."""
    for line in _read_text(markdown).splitlines():
        if line.startswith("## "):
            return line[3:].strip() or None
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReportError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


class _Index:
    """Typed look-ups into a parsed ``tables.json``; every error names the file and the key."""

    def __init__(self, path: Path, run_dir: Path):
        self.path = path
        self.run_dir = run_dir

    def fail(self, key: str, problem: str) -> ReportError:
        return ReportError(f"{self.path}: key '{key}' {problem}")

    def get(self, obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...],
            default: Any = ..., nullable: bool = False) -> Any:
        """``obj[key]`` checked to be a ``kind`` (``default`` when absent; required when no default)."""
        name = f"{where}.{key}" if where else key
        if key not in obj:
            if default is ...:
                raise self.fail(name, "is missing")
            return default
        value = obj[key]
        if value is None and nullable:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(name, f"must be a {_json_name(expected)}, got {_json_name(type(value).__name__)}")
        return value

    def file(self, relative: str, key: str) -> Path:
        """The existing file ``relative`` names inside the run directory."""
        pure = PurePosixPath(relative.replace("\\", "/"))
        if not relative or pure.is_absolute() or ".." in pure.parts:
            raise self.fail(key, f"must be a path inside the run directory, got {relative!r}")
        path = self.run_dir / pure
        if not path.is_file():
            raise self.fail(key, f"names {relative!r}, which is not a file in {self.run_dir}")
        return path

    def image(self, relative: str, key: str) -> Path:
        path = self.file(relative, key)
        if path.suffix.lower() not in IMAGE_TYPES:
            raise self.fail(key, f"names {relative!r}, not an image ({', '.join(IMAGE_TYPES)})")
        return path


def _json_name(python_name: str) -> str:
    return {"dict": "object", "list": "list", "str": "string", "int": "number", "float": "number",
            "NoneType": "null", "bool": "boolean"}.get(python_name, python_name)


def _read_index(run_dir: Path, path: Path) -> RunContents:
    """The contents ``tables.json`` lists."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    index = _Index(path, run_dir)
    if not isinstance(data, dict):
        raise ReportError(f"{path}: must hold a JSON object, got {_json_name(type(data).__name__)}")
    title = index.get(data, "title", "", str, DEFAULT_TITLE)
    created = index.get(data, "created", "", str, None, nullable=True)

    tables: list[TableEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(index.get(data, "tables", "", list)):
        where = f"tables[{i}]"
        if not isinstance(item, dict):
            raise index.fail(where, f"must be an object, got {_json_name(type(item).__name__)}")
        name = index.get(item, "name", where, str)
        if not name:
            raise index.fail(f"{where}.name", "must not be empty")
        if name in seen:
            raise index.fail(f"{where}.name", f"repeats {name!r} of tables[{seen[name]}]")
        seen[name] = i
        plot = index.get(item, "plot", where, str, None, nullable=True)
        tables.append(TableEntry(
            name=name,
            title=index.get(item, "title", where, str, name),
            csv=index.file(index.get(item, "csv", where, str), f"{where}.csv"),
            markdown=index.file(index.get(item, "markdown", where, str), f"{where}.markdown"),
            plot=index.image(plot, f"{where}.plot") if plot is not None else None,
        ))

    images = []
    for i, item in enumerate(index.get(data, "images", "", list, [])):
        where = f"images[{i}]"
        if not isinstance(item, dict):
            raise index.fail(where, f"must be an object, got {_json_name(type(item).__name__)}")
        image = index.image(index.get(item, "path", where, str), f"{where}.path")
        images.append(ImageEntry(image, index.get(item, "caption", where, str, image.stem)))

    settings = []
    for i, relative in enumerate(index.get(data, "settings", "", list, [])):
        if not isinstance(relative, str):
            raise index.fail(f"settings[{i}]", f"must be a string, got {_json_name(type(relative).__name__)}")
        settings.append((relative, index.file(relative, f"settings[{i}]")))
    return RunContents(run_dir, title, created, tables, images, settings, index=path)
