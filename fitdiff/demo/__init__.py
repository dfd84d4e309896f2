"""Interactive demo: photo in, relightable 3D avatar out, in the browser (``python -m fitdiff.demo``).

:mod:`fitdiff.demo.backend` does the work (reconstruct, sample, relight, package files) and knows
nothing of the page; :mod:`fitdiff.demo.app` is the Gradio page over it; :mod:`fitdiff.demo.cli` the
command. Gradio is the optional ``demo`` extra (``pip install -e '.[demo]'``).
"""
