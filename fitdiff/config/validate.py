"""Check every ``_target_`` node of a composed config against the signature of what it builds.

Hydra's struct mode already rejects unknown top-level keys given on the command line, and the schema
(:mod:`fitdiff.config.schema`) rejects unknown top-level keys in files. What neither sees is a mistyped
key *inside* an object node (``model.optimizer.lrr: 1e-4`` in an experiment file) or a value of the wrong
type (``trainer.max_epochs=ten``): Hydra would only fail when the object is built, possibly after
minutes of data preparation, or never, if the target takes ``**kwargs``. This module finds such
mistakes up front, from the target's signature and type hints, and names the full dotted key.

Written here because Hydra has no signature check of its own; it is deliberately lenient where a type
hint is too complex to judge (anything but plain scalars, literals, unions and lists).
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import PurePath
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from fitdiff.config.errors import ConfigError

__all__ = ["validate_config", "check_value_type"]

_HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}
_SCALARS = (bool, int, float, str)


def validate_config(cfg: DictConfig) -> None:
    """Resolve ``cfg`` and check every object node; raise :class:`ConfigError` on the first problem.

    Checks: every interpolation resolves; every ``_target_`` imports; every key of a target node is a
    parameter of the target (unless it takes ``**kwargs``); scalar values match the parameter's type
    hint; required parameters without defaults are present (unless ``_partial_``).
    """
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # omegaconf raises several error types; all carry the full key
        raise ConfigError(f"configuration does not resolve: {exc}") from exc
    _walk(container, "")


def _walk(node: Any, path: str) -> None:
    if isinstance(node, dict):
        if "_target_" in node:
            _check_target_node(node, path)
        for key, value in node.items():
            if key in _HYDRA_KEYS:
                continue
            _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, f"{path}[{i}]")


@lru_cache(maxsize=256)
def _resolve_target(target: str) -> Callable[..., Any]:
    return get_object(target)


def _check_target_node(node: dict[str, Any], path: str) -> None:
    where = path or "<root>"
    target = node["_target_"]
    if not isinstance(target, str):
        raise ConfigError(f"{where}._target_ must be a dotted import path string, got {target!r}")
    try:
        obj = _resolve_target(target)
    except Exception as exc:
        raise ConfigError(f"{where}._target_: cannot import {target!r} ({exc})") from exc
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # builtins without a Python signature: nothing to check
    params = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {
        name: p
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    hints = _type_hints(obj)

    for key, value in node.items():
        if key in _HYDRA_KEYS:
            continue
        full = f"{path}.{key}" if path else key
        if key not in named:
            if takes_kwargs:
                continue
            close = difflib.get_close_matches(key, list(named), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown key '{full}': {target} has no parameter '{key}'.{hint} "
                f"Valid keys: {', '.join(sorted(named))}"
            )
        if key in hints and not check_value_type(value, hints[key]):
            outside = _range_violated(value, hints[key])
            if outside is not None:
                raise ConfigError(f"invalid value for '{full}': got {value!r}, {target} expects a value {outside}")
            raise ConfigError(
                f"wrong type for '{full}': got {value!r} ({type(value).__name__}), "
                f"{target} expects {_describe(hints[key])}"
            )

    if not node.get("_partial_", False) and "_args_" not in node:
        missing = [
            name
            for name, p in named.items()
            if p.default is inspect.Parameter.empty and name not in node and name != "self"
        ]
        if missing:
            keys = ", ".join(f"'{path}.{m}'" if path else f"'{m}'" for m in missing)
            raise ConfigError(f"missing required key(s) {keys} for {target}")


def _type_hints(obj: Any) -> dict[str, Any]:
    """Type hints of a callable's parameters; unresolvable ones are left out (never fails)."""
    func = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(func, include_extras=True)  # keep Annotated value ranges
    except Exception:
        pass
    hints: dict[str, Any] = {}
    module_globals = getattr(inspect.getmodule(func), "__dict__", {})
    for name, annotation in getattr(func, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, module_globals)  # noqa: S307 - annotations of imported code
            except Exception:
                continue
        hints[name] = annotation
    return hints


def check_value_type(value: Any, hint: Any) -> bool:
    """Whether a config ``value`` (scalar, list, dict or None) can be passed where ``hint`` is expected.

    Returns True when the hint is too complex to judge. Booleans are not accepted as numbers, and
    floats are not accepted as ints (``max_epochs=1.5``); ints are accepted as floats. ``Annotated``
    metadata with an ``accepts(value) -> bool`` method (:class:`fitdiff.config.ranges.Interval`) must
    accept the value too.
    """
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, (str, typing.ForwardRef)):
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(check_value_type(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is type(None) or hint is None:
        return value is None
    if value is None:
        return True  # many libraries default to None without Optional[...]; leave those alone
    if origin is typing.Annotated:
        return check_value_type(value, args[0]) and all(_accepts(meta, value) for meta in hint.__metadata__)
    if hint in _SCALARS:
        return _scalar_matches(value, hint)
    if origin in (list, tuple, set, frozenset) or _is_abstract_sequence(origin or hint):
        if isinstance(value, str) and _is_abstract_sequence(origin or hint) and origin not in (list, tuple):
            return True  # Sequence/Iterable hints also admit strings
        if not isinstance(value, list):
            return False
        if args and origin is not tuple:
            return all(check_value_type(v, args[0]) for v in value)
        return True
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if inspect.isclass(hint) and issubclass(hint, PurePath):
        return isinstance(value, str)
    return True  # classes (nn.Module, Accelerator...), callables, protocols: not judged


def _is_abstract_sequence(hint: Any) -> bool:
    import collections.abc as abc

    return hint in (abc.Sequence, abc.Iterable, abc.Collection, typing.Sequence, typing.Iterable, Iterable)


def _scalar_matches(value: Any, hint: type) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _accepts(meta: Any, value: Any) -> bool:
    accepts = getattr(meta, "accepts", None)
    return bool(accepts(value)) if callable(accepts) else True


def _range_violated(value: Any, hint: Any) -> str | None:
    """The range (``"in [0, 1]"``) that rejects ``value`` when its type is right but its value is not."""
    if typing.get_origin(hint) is not typing.Annotated or not check_value_type(value, typing.get_args(hint)[0]):
        return None
    rejecting = [str(meta) for meta in hint.__metadata__ if not _accepts(meta, value)]
    return " and ".join(rejecting) or None


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Annotated:
        ranges = [str(m) for m in hint.__metadata__ if callable(getattr(m, "accepts", None))]
        return " ".join([_describe(typing.get_args(hint)[0]), *ranges])
    text = getattr(hint, "__name__", None) if inspect.isclass(hint) else None
    return text or str(hint).replace("typing.", "")
