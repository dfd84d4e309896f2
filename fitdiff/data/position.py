"""Where a training stream stands: the pass being read and the batches already taken from it.

A training pass is ``steps_per_epoch`` batches drawn from a freshly seeded stream (the seeds mix in the
pass number, the rank and the worker; :class:`~fitdiff.data.stream.ShardStream`). The position
``(pass, batches)`` therefore determines everything the loader yields next: to resume, the same pass is
re-created and its first ``batches`` batches are dropped (as raw samples, before decoding).

With ``num_workers = W > 0`` batch ``i`` of a pass comes from worker ``i % W`` (the DataLoader takes the
workers' batches in turn), so after ``b`` batches worker ``r`` has produced ``len(range(r, b, W))`` of
them, and the next batch comes from worker ``b % W``. A resumed loader starts with its worker 0, so its
workers take over the roles (seed, skip) rotated by ``b % W``. The position is exact for the number of
workers, batch size, world size and seed it was recorded with.

Iterating the loader does not draw from torch's global generator (a DataLoader draws its workers' base
seed from ``loader.generator``, here one of its own, seeded per pass from the stream's seed, the pass
and the rank): the training steps' random numbers do not depend on where passes begin and end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

__all__ = ["EpochLoader", "PassPosition", "worker_skips"]


@dataclass
class PassPosition:
    """The training position shared by a DataModule and its loaders (counted in the main process).

    Attributes:
        next_pass: the pass the next ``iter(loader)`` starts.
        current: the pass being read (-1 before the first).
        yielded: batches of ``current`` handed out so far (a resumed pass counts its dropped batches).
        skip: batches of the next pass to drop (set when a saved position is restored).
    """

    next_pass: int = 0
    current: int = -1
    yielded: int = 0
    skip: int = 0


def worker_skips(batches: int, num_workers: int, batch_size: int) -> tuple[list[int], int]:
    """Samples each worker role has produced after ``batches`` batches, and the role of the next batch.

    Args:
        batches: batches already taken from the pass (>= 0).
        num_workers: DataLoader workers (0: the main process, one role).
        batch_size: samples per batch.

    Returns:
        (samples to drop per role, the role of the next batch).
    """
    roles = max(1, int(num_workers))
    return [len(range(r, int(batches), roles)) * int(batch_size) for r in range(roles)], int(batches) % roles


def _pass_seed(seed: int, pass_: int, rank: int) -> int:
    """The loader generator's seed of one pass on one rank."""
    return (seed * 1_000_003 + pass_ * 7_919 + rank) % 2**62


class EpochLoader(DataLoader):
    """DataLoader that tells its stream the pass before each ``iter()`` and counts the batches it yields.

    Args:
        *args, **kwargs: as :class:`~torch.utils.data.DataLoader` (the dataset is a training stream with
            ``set_epoch`` and ``resume_within_pass``).
        position: the shared :class:`PassPosition` (a new one when None); a pending ``skip`` is applied to
            the next pass only.
    """

    def __init__(self, *args: Any, position: PassPosition | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(*args, **kwargs)
        self.position = PassPosition() if position is None else position

    def __iter__(self) -> Iterator[Any]:
        pos, stream = self.position, self.dataset
        stream.set_epoch(pos.next_pass)
        if self.generator is not None:  # the workers' base seed: per pass, not from the global generator
            self.generator.manual_seed(_pass_seed(int(stream.seed), pos.next_pass, int(stream.rank)))
        if pos.skip:
            skips, first = worker_skips(pos.skip, self.num_workers, self.batch_size or 1)
            stream.resume_within_pass(skips, first)
        pos.current, pos.next_pass, pos.yielded, pos.skip = pos.next_pass, pos.next_pass + 1, pos.skip, 0
        try:
            inner = super().__iter__()  # workers (or the main process) take their copy of the stream here
        finally:
            stream.resume_within_pass(None)
        return self._counted(inner)

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the position is saved with the DataModule's state (this makes Lightning treat the
        loader as resumable mid-epoch)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore here (see :meth:`state_dict`)."""

    def _counted(self, inner: Iterator[Any]) -> Iterator[Any]:
        pos = self.position
        for batch in inner:
            pos.yielded += 1
            yield batch
