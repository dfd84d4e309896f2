"""The demo page (Gradio Blocks) over a :class:`~fitdiff.demo.backend.DemoBackend`.

Left: the photo (upload, or one of the held-out examples), optional landmarks, preset, seed and CFG
scale, and the buttons (reconstruct, sample unconditionally, cancel). Right: the message line (result
summary or what went wrong), the 3D viewer of the ``.glb``, the render over the photo, the UV maps, the
relit render with its light sliders (direction in the camera frame, colour, intensity) and the
downloads. Requests go through one queue (one at a time, later users wait their turn); cancel stops
the running one at its next sampler step. Nothing is fetched from the network: the theme uses the
system's fonts and analytics are off (:func:`launch`).
"""

# no `from __future__ import annotations`: Gradio reads the handlers' annotations (gr.Request, gr.Progress)
import logging
import os
from typing import Any

from fitdiff.demo.backend import PRESETS, DemoBackend, DemoCancelled, DemoError

__all__ = ["build_app", "launch", "offline_theme"]

log = logging.getLogger("fitdiff.demo")

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry calls


def offline_theme() -> Any:
    """Gradio's default look with system fonts (the stock theme loads its fonts from Google Fonts)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def _error_text(exc: BaseException) -> str:
    return f"**Error:** {exc}" if not isinstance(exc, DemoCancelled) else "**Cancelled.**"


def build_app(backend: DemoBackend, default_preset: str = "fast (unguided)") -> Any:
    """The page (a ``gr.Blocks``) wired to ``backend``; call :func:`launch` to serve it."""
    import gradio as gr

    azimuth0, elevation0, color0, intensity0 = backend.default_light()
    examples = backend.examples()
    empty = (None,) * 7

    def client_of(request: gr.Request | None) -> str | None:
        return getattr(request, "session_hash", None) if request is not None else None

    def outputs_of(result: Any) -> tuple:
        return (result.summary, str(result.glb), str(result.render), str(result.maps), str(result.relit),
                str(result.glb), str(result.obj_zip), result.key)

    def preview(photo: str | None) -> tuple:
        from fitdiff.face.photo import PhotoError, read_photo

        if not photo:
            return None, ""
        try:
            loaded = read_photo(photo, what="photo")
        except PhotoError as exc:
            return None, _error_text(exc)
        note = f" (downscaled from {loaded.file_size[0]} x {loaded.file_size[1]})" if loaded.downscaled else ""
        return loaded.pixels, f"Photo {loaded.size[0]} x {loaded.size[1]} pixels{note}."

    def reconstruct(photo: str | None, landmarks: str | None, preset: str, seed: float, cfg: float,
                    request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        try:
            result = backend.reconstruct(photo, landmarks, PRESETS.get(preset, preset), int(seed or 0), float(cfg),
                                         client=client_of(request), progress=lambda f, d: progress(f, desc=d))
        except DemoError as exc:
            return (_error_text(exc),) + empty
        return outputs_of(result)

    def sample(seed: float, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        try:
            result = backend.sample(int(seed or 0), client=client_of(request),
                                    progress=lambda f, d: progress(f, desc=d))
        except DemoError as exc:
            return (_error_text(exc),) + empty
        return outputs_of(result)

    def relight(key: str | None, azimuth: float, elevation: float, color: str, intensity: float) -> Any:
        if not key:
            return gr.skip()
        try:
            return str(backend.relight(key, azimuth, elevation, color, intensity))
        except DemoError as exc:
            gr.Warning(str(exc))
            return gr.skip()

    def cancel(request: gr.Request) -> str:
        client = client_of(request)
        if client is not None:
            backend.cancel(client)
        return "**Cancelled.**"

    with gr.Blocks(title="FitDiff demo", analytics_enabled=False) as app:
        gr.Markdown("# FitDiff: a relightable 3D face from one photo")
        gr.Markdown(backend.status(), elem_id="status-line")
        key = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                photo = gr.File(label="Photo (PNG, JPEG, ...)", file_types=["image"], type="filepath",
                                elem_id="photo-upload")
                shown = gr.Image(label="Photo as loaded", interactive=False, height=220, elem_id="photo-preview")
                landmarks = gr.File(label="Landmarks .npy (optional: 68 or 5 points, image pixels)",
                                    file_types=[".npy"], type="filepath", elem_id="landmarks-upload")
                preset = gr.Radio(list(PRESETS), value=default_preset, label="Preset", elem_id="preset")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="seed")
                    cfg = gr.Slider(1.0, 5.0, value=1.0, step=0.25, label="CFG scale", elem_id="cfg")
                with gr.Row():
                    run = gr.Button("Reconstruct", variant="primary", elem_id="run")
                    draw = gr.Button("Sample unconditionally", elem_id="sample")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                if examples:
                    gr.Examples([[str(p), str(q)] for p, q in examples], inputs=[photo, landmarks],
                                label="Held-out photos of the embedded dataset (with their landmarks)")
            with gr.Column(scale=3):
                message = gr.Markdown("", elem_id="message")
                viewer = gr.Model3D(label="Avatar (.glb)", height=360, elem_id="viewer")
                with gr.Row():
                    render = gr.Image(label="Render over the photo", interactive=False, elem_id="render")
                    relit = gr.Image(label="Relit", interactive=False, elem_id="relit")
                maps = gr.Image(label="UV maps: diffuse | specular | normals", interactive=False, elem_id="maps")
                with gr.Row():
                    azimuth = gr.Slider(-90, 90, value=azimuth0, step=5, label="Light azimuth (degrees, + = right)",
                                        elem_id="light-azimuth")
                    elevation = gr.Slider(-60, 80, value=elevation0, step=5, label="Light elevation (degrees)",
                                          elem_id="light-elevation")
                with gr.Row():
                    color = gr.ColorPicker(color0, label="Light colour", elem_id="light-color")
                    intensity = gr.Slider(0.0, 2.0, value=intensity0, step=0.05, label="Light intensity",
                                          elem_id="light-intensity")
                with gr.Row():
                    glb = gr.DownloadButton("Download .glb", elem_id="download-glb")
                    obj = gr.DownloadButton("Download OBJ (.zip)", elem_id="download-obj")
        photo.change(preview, inputs=photo, outputs=[shown, message], queue=False)
        outputs = [message, viewer, render, maps, relit, glb, obj, key]
        run_event = run.click(reconstruct, inputs=[photo, landmarks, preset, seed, cfg], outputs=outputs,
                              concurrency_id="gpu", concurrency_limit=1)
        sample_event = draw.click(sample, inputs=[seed], outputs=outputs, concurrency_id="gpu",
                                  concurrency_limit=1)
        stop.click(cancel, outputs=[message], cancels=[run_event, sample_event], queue=False)
        light = [key, azimuth, elevation, color, intensity]
        for control in (azimuth, elevation, intensity, color):  # while a slider moves: the latest value wins
            control.change(relight, inputs=light, outputs=relit, trigger_mode="always_last", concurrency_id="relight")
    return app


def launch(app: Any, host: str, port: int, allowed_paths: list[str], max_queue: int = 16,
           block: bool = True) -> Any:
    """Serve ``app`` on ``host:port`` through one queue of at most ``max_queue`` waiting requests."""
    app.queue(default_concurrency_limit=1, max_size=max_queue)
    return app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True,
                      allowed_paths=allowed_paths, theme=offline_theme(), prevent_thread_lock=not block,
                      max_file_size="50mb", footer_links=[])
