"""The acceptance criteria of the conditioning table, read off its rows (docs: the diffusion-stage issue).

For every conditional row ``conditional <variant> s=<s>`` (not its ``(mean of k)`` companion):

1. at least 30 % lower shape error (``shape_rmse_mm``) and diffuse error (``diffuse_rmse``) than the
   ``unconditional`` row;
2. lower shape and diffuse error than ``mean face``;
3. its ``(mean of k)`` row at most the ``linear probe``'s shape and diffuse error;

and, where both were measured at the same scale, the ``none`` variant worse (higher shape and diffuse
error) than ``spade``. A row ``conditional <variant> s=<s>, shape temperature 0`` (its shape is an estimate
of the conditional mean, not a draw) is set against the unconditional samples, the unconditional row
at temperature 0, the mean face and the linear probe on shape. Each check is one line stating the numbers and ``yes`` / ``NO``.
"""

from __future__ import annotations

import re

from fitdiff.evaluation.table import ResultTable

__all__ = ["acceptance_checks", "REDUCTION"]

#: required relative error reduction of conditional against unconditional samples
REDUCTION = 0.30
_ROW = re.compile(r"^conditional (?P<variant>.+) s=(?P<scale>[^ ]+)$")
_MEAN_SHAPE = ", shape temperature 0"
_KEYS = (("shape_rmse_mm", "shape", "{:.2f} mm"), ("diffuse_rmse", "diffuse", "{:.4f}"))


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def acceptance_checks(table: ResultTable) -> list[str]:
    """One line per check (empty when the table has no conditional row)."""
    records = {r["method"]: r for r in table.records()}

    def value(method: str, key: str) -> float | None:
        record = records.get(method)
        return None if record is None else float(record[f"{key}_mean"])

    lines: list[str] = []
    conditional = [(m, _ROW.match(m)) for m in records]
    conditional = [(m, match) for m, match in conditional if match]
    for method, _ in conditional:
        parts = []
        for key, name, fmt in _KEYS:
            mine, uncond = value(method, key), value("unconditional", key)
            mean_face, probe = value("mean face", key), value("linear probe", key)
            averaged = value(f"{method} (mean of {records[method]['n_samples']})", key)
            if mine is None:
                continue
            if uncond is not None and uncond > 0:
                drop = 1.0 - mine / uncond
                parts.append(
                    f"{name} {fmt.format(mine)} vs unconditional {fmt.format(uncond)} "
                    f"({abs(drop):.0%} {'lower' if drop >= 0 else 'higher'}; {REDUCTION:.0%} lower needed: "
                    f"{_yes(drop >= REDUCTION)})"
                )
            if mean_face is not None:
                parts.append(f"{name} below mean face {fmt.format(mean_face)}: {_yes(mine < mean_face)}")
            if probe is not None and averaged is not None:
                parts.append(
                    f"{name} of the mean of samples {fmt.format(averaged)} <= linear probe "
                    f"{fmt.format(probe)}: {_yes(averaged <= probe)}"
                )
        if parts:
            lines.append(f"{method}: " + "; ".join(parts))
    for method in records:
        if not (method.startswith("conditional ") and method.endswith(_MEAN_SHAPE)):
            continue
        mine, parts = value(method, "shape_rmse_mm"), []
        for other in ("unconditional", "unconditional" + _MEAN_SHAPE, "mean face", "linear probe"):
            theirs = value(other, "shape_rmse_mm")
            if theirs is not None and theirs > 0:
                drop = 1.0 - mine / theirs
                parts.append(f"vs {other} {theirs:.2f} mm: {abs(drop):.0%} {'lower' if drop >= 0 else 'higher'}")
        lines.append(f"{method}: shape {mine:.2f} mm " + "; ".join(parts))
    by_scale: dict[str, dict[str, str]] = {}
    for method, match in conditional:
        by_scale.setdefault(match["scale"], {})[match["variant"]] = method
    for scale, variants in by_scale.items():
        if "none" in variants and "spade" in variants:
            none, spade = variants["none"], variants["spade"]
            parts = [
                f"{name} {fmt.format(value(none, key))} vs {fmt.format(value(spade, key))}: "
                f"{_yes(value(none, key) > value(spade, key))}"
                for key, name, fmt in _KEYS
            ]
            lines.append(f"none worse than spade at s={scale}: " + "; ".join(parts))
    return lines
