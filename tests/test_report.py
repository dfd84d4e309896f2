"""``python -m fitdiff.report``: one self-contained, offline HTML page of an evaluation run directory."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fitdiff.evaluation.table import Column, ResultTable, TableRow
from fitdiff.report import ReportError, read_run_dir, write_report
from fitdiff.report.__main__ import main

SHA = "3f" * 32
SCRIPT_METHOD = "<script>alert(1)</script> probe"
METHODS = {
    "reconstruction": ["mean face", "guided s=1", SCRIPT_METHOD],
    "conditioning": ["unconditional", "conditional spade"],
}
#: one formatted cell of each table (mean ± std of the values below)
CELLS = {"reconstruction": "2.00 ± 1.00", "conditioning": "0.500 ± 0.100"}
TITLES = {"reconstruction": "Reconstruction", "conditioning": "Conditioning"}


def _png(path: Path, size: tuple[int, int] = (48, 32), seed: int = 0) -> Path:
    """A small gradient PNG (not one flat colour)."""
    h, w = size[1], size[0]
    ramp = np.linspace(0, 255, w, dtype=np.float64)[None, :, None] * np.ones((h, 1, 3))
    ramp[..., (seed % 3)] = 255 - ramp[..., (seed % 3)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ramp.astype(np.uint8)).save(path)
    return path


def _write_tables(run: Path) -> None:
    """Two tables written the way ``evaluate.py`` writes them, with a plot each."""
    recon = ResultTable(
        [
            TableRow("mean face", {"shape_rmse_mm": [1.0, 2.0, 3.0], "psnr": [20.0, 22.0, 24.0]}, {"n_photos": 3}),
            TableRow("guided s=1", {"shape_rmse_mm": [0.5, 0.7, 0.9], "psnr": [26.0, 27.0, 28.0]}, {"n_photos": 3}),
            TableRow(SCRIPT_METHOD, {"shape_rmse_mm": [4.0, 4.0], "psnr": [10.0, 11.0]}, {"n_photos": 2}),
        ],
        columns=[Column("shape_rmse_mm", "shape (mm)", "{:.2f}"), Column("psnr", "PSNR (dB)", "{:.1f}")],
    )
    degradation = (
        "### Degradation under blur\n\n"
        "| method | shape (mm) |\n|---|:---:|\n| mean face | 2.10 ± 0.90 |\n\n"
        "- blur sigma 2 px\n- see [the protocol](https://example.org/protocol) for details\n"
    )
    recon.write(run, "reconstruction", title=TITLES["reconstruction"],
                header=[f"diffusion checkpoint sha256 `{SHA}`", "sampler ddim, 50 steps, seed 0"],
                sections=[degradation])
    cond = ResultTable(
        [
            TableRow("unconditional", {"identity_cos": [0.4, 0.5, 0.6]}, {"n_photos": 3, "n_samples": 4}),
            TableRow("conditional spade", {"identity_cos": [0.7, 0.8]}, {"n_photos": 2, "n_samples": 4}),
        ],
    )
    cond.write(run, "conditioning", title=TITLES["conditioning"], header=["seed 0"])
    _png(run / "reconstruction.png", (80, 60), 1)
    _png(run / "conditioning.png", (80, 60), 2)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run directory with two tables, plots, two grids, settings and a ``tables.json``."""
    run = tmp_path / "eval-run"
    _write_tables(run)
    _png(run / "images" / "recon_0.png", (96, 24), 0)
    _png(run / "images" / "recon_1.png", (96, 24), 1)
    (run / "config.yaml").write_text("table: all\nsampler:\n  steps: 50  # <b>not bold</b>\n")
    index = {
        "title": "FitDiff evaluation",
        "created": "2026-12-02T05:10:00Z",
        "tables": [
            {"name": name, "title": TITLES[name], "csv": f"{name}.csv", "markdown": f"{name}.md",
             "plot": f"{name}.png" if name == "reconstruction" else None}
            for name in ("reconstruction", "conditioning")
        ],
        "images": [
            {"path": "images/recon_0.png", "caption": "photo | render | relit | maps — val subject s0041"},
            {"path": "images/recon_1.png", "caption": "photo | render | relit | maps — val subject s0042"},
        ],
        "settings": ["config.yaml"],
    }
    (run / "tables.json").write_text(json.dumps(index))
    return run


def _data_uris(text: str, mime: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(rf'"data:{re.escape(mime)};base64,([A-Za-z0-9+/=]*)"', text)]


def test_report_shows_every_table_its_header_and_its_extra_sections(run_dir):
    path = write_report(run_dir)
    assert path == run_dir.resolve() / "report.html"
    text = path.read_text(encoding="utf-8")
    for name, methods in METHODS.items():
        assert f"<h2>{TITLES[name]}</h2>" in text
        assert CELLS[name] in text
        for method in methods:
            assert html.escape(method, quote=False) in text
        assert f'href="#table-{name}"' in text and f'id="table-{name}"' in text  # table of contents
    assert SHA in text and "sampler ddim, 50 steps, seed 0" in text
    assert "<h3>Degradation under blur</h3>" in text and "2.10 ± 0.90" in text
    assert "2026-12-02T05:10:00Z" in text and "<title>FitDiff evaluation</title>" in text
    assert 'style="text-align: center;">2.00 ± 1.00' in text  # numbers centred as the Markdown says
    assert "photo | render | relit | maps — val subject s0041" in text
    assert not list(run_dir.glob(".report.html.*"))  # the atomic write left no temporary file


def test_images_and_plots_are_embedded_as_data_uris(run_dir):
    text = write_report(run_dir).read_text(encoding="utf-8")
    embedded = _data_uris(text, "image/png")
    expected = [run_dir / "reconstruction.png", run_dir / "images/recon_0.png", run_dir / "images/recon_1.png"]
    assert embedded == [p.read_bytes() for p in expected]  # conditioning has no plot in the index
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', text))


def test_report_is_self_contained_and_offline(run_dir):
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # the Markdown link is reduced to its text
    assert "the protocol" in text
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    assert "<style>" in text
    for target in re.findall(r'(?:href|src)="([^"]*)"', text):
        assert target.startswith(("#", "data:")), target


def test_csv_link_downloads_the_csv_file(run_dir):
    text = write_report(run_dir).read_text(encoding="utf-8")
    csvs = _data_uris(text, "text/csv")
    assert csvs == [(run_dir / "reconstruction.csv").read_bytes(), (run_dir / "conditioning.csv").read_bytes()]
    assert 'download="reconstruction.csv"' in text and ">CSV</a>" in text


def test_text_from_files_is_escaped(run_dir):
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; probe" in text
    assert "<b>not bold</b>" not in text
    assert "<pre>table: all\nsampler:\n  steps: 50  # &lt;b&gt;not bold&lt;/b&gt;\n</pre>" in text


def test_fallback_without_an_index(run_dir):
    (run_dir / "tables.json").unlink()
    (run_dir / "notes.md").write_text("## Notes without a CSV\n")  # not a table
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- table=all\n")
    contents = read_run_dir(run_dir)
    assert [t.name for t in contents.tables] == ["conditioning", "reconstruction"]  # sorted by name
    assert [t.title for t in contents.tables] == ["Conditioning", "Reconstruction"]  # first ## heading
    assert [t.plot.name for t in contents.tables] == ["conditioning.png", "reconstruction.png"]
    assert [(i.path.name, i.caption) for i in contents.images] == [("recon_0.png", "recon_0"), ("recon_1.png", "recon_1")]
    assert [name for name, _ in contents.settings] == [".hydra/overrides.yaml"]
    text = write_report(run_dir).read_text(encoding="utf-8")
    for name, methods in METHODS.items():
        assert CELLS[name] in text and all(html.escape(m, quote=False) in text for m in methods)
    assert "Notes without a CSV" not in text and "- table=all" in text
    assert len(_data_uris(text, "image/png")) == 4 and "eval-run" in text


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: "{not json", "line 1"),
        (lambda d: {k: v for k, v in d.items() if k != "tables"}, "key 'tables' is missing"),
        (lambda d: {**d, "tables": {}}, "key 'tables' must be a list, got object"),
        (lambda d: {**d, "tables": [{**d["tables"][0], "csv": 3}]}, "key 'tables[0].csv' must be a string"),
        (lambda d: {**d, "tables": [d["tables"][0], {**d["tables"][1], "markdown": "gone.md"}]},
         "key 'tables[1].markdown' names 'gone.md'"),
        (lambda d: {**d, "tables": [{**d["tables"][0], "csv": "../outside.csv"}]},
         "key 'tables[0].csv' must be a path inside the run directory"),
        (lambda d: {**d, "tables": [d["tables"][0], d["tables"][0]]}, "key 'tables[1].name' repeats"),
        (lambda d: {**d, "images": [{"caption": "x"}]}, "key 'images[0].path' is missing"),
        (lambda d: {**d, "images": [{"path": "config.yaml"}]}, "key 'images[0].path' names 'config.yaml', not an image"),
        (lambda d: {**d, "settings": [7]}, "key 'settings[0]' must be a string, got number"),
        (lambda d: {**d, "tables": []}, "holds no result table"),
    ],
)
def test_a_bad_index_names_the_file_and_the_key(run_dir, edit, key):
    index = run_dir / "tables.json"
    changed = edit(json.loads(index.read_text()))
    index.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(ReportError) as error:
        write_report(run_dir)
    assert str(index) in str(error.value) and key in str(error.value)
    assert not (run_dir / "report.html").exists()


def test_cli_writes_the_report_and_prints_its_path(run_dir, tmp_path, capsys):
    out = tmp_path / "pages" / "run.html"
    assert main([str(run_dir), "--out", str(out), "--title", "Run <42>"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text(encoding="utf-8")
    assert "<title>Run &lt;42&gt;</title>" in text and "<h1>Run &lt;42&gt;</h1>" in text
    assert main([str(run_dir)]) == 0 and (run_dir / "report.html").is_file()


def test_cli_errors_name_the_path(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main([str(missing)]) == 2
    assert f"error: {missing}: no such run directory" in capsys.readouterr().err
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "README.md").write_text("## not a table\n")
    assert main([str(empty)]) == 2
    assert f"error: {empty}: holds no result table" in capsys.readouterr().err
    assert not (empty / "report.html").exists()


def test_the_report_does_not_import_torch():
    code = "import sys, fitdiff.report, fitdiff.report.__main__; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("Chromium is not installed (apt-get install chromium)")


@pytest.mark.slow
def test_headless_chromium_renders_the_report(run_dir, tmp_path):
    browser = _chromium()
    report = write_report(run_dir)
    shot = tmp_path / "report.png"
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name, methods in METHODS.items():
        assert TITLES[name] in dom.stdout and CELLS[name] in dom.stdout
        assert all(html.escape(m, quote=False) in dom.stdout for m in methods)
    assert "<script>alert" not in dom.stdout
    done = subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert len(colours) > 50  # text, tables and embedded images, not a blank page
