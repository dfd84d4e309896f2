"""What a shard stream does with a sample that fails decoding or validation: raise, or skip within a limit.

``on_bad_sample="raise"`` (the default) stops at the first bad sample with its :class:`SampleError`
(shard path, key and field). ``"skip"`` drops it, logs a warning naming the shard path and key, counts it,
and stops the run with :class:`BadSampleLimitError` once too many were dropped:

* ``read`` counts every sample the stream tried to decode (good or bad); ``skipped`` the bad ones.
* After each sample, once ``read >= min_samples``, the stream stops when ``skipped > max_bad_fraction *
  read``. Before ``min_samples`` samples the fraction is too noisy to judge and is not checked, except at
  the end of a complete pass over a finite (validation / test) stream, where it is checked whatever the
  count.
* The counts belong to one reading process: each DataLoader worker keeps its own, over every sample it
  read since it started (with persistent workers, since the start of training; with ``num_workers=0``,
  since the stream was built).

Shard-level damage (an unreadable tar archive, a sample count that disagrees with the manifest) is not a
bad sample and always raises.
"""

from __future__ import annotations

import logging
from typing import Literal

from fitdiff.data.errors import BadSampleLimitError, SampleError

__all__ = ["BAD_SAMPLE_POLICIES", "BadSampleCounter"]

log = logging.getLogger(__name__)

#: accepted values of ``on_bad_sample``
BAD_SAMPLE_POLICIES: tuple[str, ...] = ("raise", "skip")


class BadSampleCounter:
    """Applies the ``on_bad_sample`` policy and counts read / skipped samples (see the module doc).

    Args:
        on_bad_sample: ``"raise"`` or ``"skip"``.
        max_bad_fraction: largest tolerated fraction of skipped samples, in [0, 1].
        min_samples: samples read before the fraction is checked (>= 1).
    """

    def __init__(
        self, on_bad_sample: Literal["raise", "skip"] = "raise", max_bad_fraction: float = 0.01, min_samples: int = 1000,
    ) -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {', '.join(BAD_SAMPLE_POLICIES)}, got {on_bad_sample!r}")
        if isinstance(max_bad_fraction, bool) or not 0.0 <= float(max_bad_fraction) <= 1.0:
            raise ValueError(f"max_bad_fraction must be a number in [0, 1], got {max_bad_fraction!r}")
        if isinstance(min_samples, bool) or int(min_samples) != min_samples or int(min_samples) < 1:
            raise ValueError(f"bad_fraction_min_samples must be an integer >= 1, got {min_samples!r}")
        self.policy = on_bad_sample
        self.max_bad_fraction = float(max_bad_fraction)
        self.min_samples = int(min_samples)
        self.read = 0
        self.skipped = 0

    @property
    def skipping(self) -> bool:
        """Whether bad samples are skipped (else they raise)."""
        return self.policy == "skip"

    def good(self) -> None:
        """Count a sample that decoded and validated."""
        self.read += 1
        self._check(final=False)

    def bad(self, error: SampleError) -> None:
        """Count and log a skipped sample; raise ``error`` itself under ``"raise"``.

        Raises:
            SampleError: the policy is ``"raise"``.
            BadSampleLimitError: the skipped fraction now exceeds the limit.
        """
        if not self.skipping:
            raise error
        self.read += 1
        self.skipped += 1
        log.warning("skipped bad sample (%d of %d read so far): %s", self.skipped, self.read, error)
        self._check(final=False, last=error)

    def end_of_pass(self) -> None:
        """Check the fraction after a complete pass over a finite stream, whatever the count."""
        self._check(final=True)

    def _check(self, final: bool, last: SampleError | None = None) -> None:
        if not self.skipped or (self.read < self.min_samples and not final):
            return
        if self.skipped > self.max_bad_fraction * self.read:
            when = "in a complete pass" if final and self.read < self.min_samples else "so far"
            latest = f"; the latest: {last}" if last is not None else ""
            raise BadSampleLimitError(
                f"{self.skipped} of {self.read} samples read {when} were bad and skipped "
                f"({self.skipped / self.read:.2%}), more than data.max_bad_fraction={self.max_bad_fraction:g} allows"
                f"{latest}; each skipped sample's shard path and key is in the log (fix or rebuild those shards, or "
                f"raise data.max_bad_fraction)"
            )
