"""Subject-level train / val / test assignment: no subject ever appears in two splits."""

from __future__ import annotations

import random
from collections.abc import Iterable

__all__ = ["assign_splits"]


def assign_splits(
    subjects: Iterable[str], val_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0
) -> dict[str, str]:
    """Map each subject id to ``train``, ``val`` or ``test``.

    The sorted unique subjects are shuffled with ``random.Random(seed)``; the first
    ``round(n * test_fraction)`` go to test, the next ``round(n * val_fraction)`` to val, the rest to
    train. A non-zero fraction gets at least one subject when there are at least three subjects, and
    train always keeps at least one. The result depends only on the subject set, the fractions and the
    seed (not on file order).
    """
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(f"fractions must be in [0, 1) with a sum below 1, got val {val_fraction}, test {test_fraction}")
    ordered = sorted(set(subjects))
    n = len(ordered)
    random.Random(seed).shuffle(ordered)

    def count(fraction: float) -> int:
        wanted = round(n * fraction)
        return max(wanted, 1) if fraction > 0 and n >= 3 else wanted

    n_test = count(test_fraction)
    n_val = count(val_fraction)
    while n_test + n_val > max(n - 1, 0) and (n_test or n_val):  # keep a training subject
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    splits = {s: "test" for s in ordered[:n_test]}
    splits.update({s: "val" for s in ordered[n_test:n_test + n_val]})
    splits.update({s: "train" for s in ordered[n_test + n_val:]})
    return splits
