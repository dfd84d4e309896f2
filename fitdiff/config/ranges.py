"""Value ranges that a parameter's type hint can carry, checked by :func:`fitdiff.config.validate_config`.

Use as ``typing.Annotated[float, Interval(0.0, 1.0)]``: the config check then rejects a value outside
the closed interval before any work starts, naming the key and the interval. Python ignores the
annotation at run time, so the target still checks its own arguments when built without a config.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Interval"]


@dataclass(frozen=True)
class Interval:
    """The closed interval [low, high]; ``None`` leaves that side open-ended."""

    low: float | None = None
    high: float | None = None

    def accepts(self, value: object) -> bool:
        """Whether ``value`` (a real number, not a bool) lies in the interval."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"in [{low}, {high}]"
