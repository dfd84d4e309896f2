"""The demo page's wiring, without a browser: one queue for the heavy requests, cancel, offline settings."""

from __future__ import annotations

import pytest

from fitdiff.demo.backend import DemoBackend, DemoSettings

gr = pytest.importorskip("gradio", reason="gradio is not installed (the demo extra: pip install -e '.[demo]')")


@pytest.fixture
def app(tmp_path):
    from fitdiff.demo.app import build_app

    backend = DemoBackend(DemoSettings(ckpt=tmp_path / "none.ckpt", data_dir=tmp_path, work_dir=tmp_path / "work"))
    return build_app(backend)


def _fns(app) -> dict:
    return {fn.name: fn for fn in app.fns.values() if fn.name}


def test_heavy_requests_share_one_slot_and_cancel_reaches_them(app):
    fns = _fns(app)
    for name in ("reconstruct", "sample"):
        assert fns[name].concurrency_id == "gpu" and fns[name].concurrency_limit == 1 and fns[name].queue
    cancel = fns["cancel"]
    assert not cancel.queue  # never waits behind what it cancels
    # the cancel button's click also triggers Gradio's cancel of the two running events
    on_click = [fn for fn in app.fns.values() if fn.targets == cancel.targets and fn.cancels]
    assert [{app.fns[i].name for i in fn.cancels} for fn in on_click] == [{"reconstruct", "sample"}]
    relights = [fn for fn in app.fns.values() if fn.name == "relight"]
    assert len(relights) == 4 and all(fn.trigger_mode == "always_last" for fn in relights)


def test_the_page_works_offline(app):
    from fitdiff.demo.app import offline_theme

    assert app.analytics_enabled is False
    theme = offline_theme()
    assert not any(isinstance(font, gr.themes.GoogleFont) for font in theme._font + theme._font_mono)
    assert "googleapis" not in theme._get_theme_css()


def test_missing_checkpoint_is_said_at_the_top(app):
    status = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "status-line"]
    assert len(status) == 1 and "make quickstart" in status[0].value


def test_the_command_without_gradio_says_which_extra(monkeypatch, capsys):
    import builtins

    from fitdiff.demo import cli

    real = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio":
            raise ImportError("no gradio")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert cli.main(["--port", "0"]) == 2
    assert "pip install -e '.[demo]'" in capsys.readouterr().err
