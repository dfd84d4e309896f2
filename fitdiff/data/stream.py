"""Reading shards as a stream of decoded samples: the IterableDataset behind the DataModule.

Built on webdataset 1.0.2 stages: ``ResampledShards`` (training: shards drawn with replacement, which is
also the shard shuffle), ``shuffle`` (sample buffer), ``split_by_worker`` and ``DataPipeline.with_epoch``.
Tar members are grouped into samples by :mod:`fitdiff.data.tar_reader` (the WebDataset grouping rules,
about eight times faster than ``tarfile``-based ``wds.tarfile_samples``). Decoding uses only the safe
decoders of :mod:`fitdiff.data.codecs`; webdataset's own decoders (which may unpickle) are never used.
Shards may be URLs (:mod:`fitdiff.data.remote`), streamed without seeking and without retries.

Ranks are split here with a rank and world size fixed when the stream is built (at DataModule setup,
from the trainer) instead of ``wds.split_by_node``, which would look them up again inside each worker
process, where the process group may not exist.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from fitdiff.data.bad_samples import BadSampleCounter
from fitdiff.data.errors import SampleError, ShardError
from fitdiff.data.remote import open_url
from fitdiff.data.sample import FIELDS, MEMBERS, FaceSample, decode_sample
from fitdiff.data.tar_reader import TarFormatError, iter_tar_samples
from fitdiff.data.validation import SampleSpec, validate_sample

__all__ = ["ShardStream", "read_shard", "split_by_rank"]

log = logging.getLogger(__name__)


class _SelectMembers:
    """Tar member filter keeping only the members with the given suffixes (the rest is skipped unread)."""

    def __init__(self, suffixes: Iterable[str]) -> None:
        self.suffixes = frozenset(s.lower() for s in suffixes)

    def __call__(self, fname: str) -> bool:
        base = fname.rsplit("/", 1)[-1]
        return base.partition(".")[2].lower() in self.suffixes


def read_shard(
    path: str, fields: tuple[str, ...] | None = None, expected: int | None = None, *,
    members: Iterable[str] | None = None,
) -> Iterator[dict]:
    """Raw samples (``{"__key__", "__url__", "<member>": bytes}``) of one tar shard, in file order.

    Args:
        path: shard file, or its URL (:mod:`fitdiff.data.remote`: ``s3://``, ``https://``, ``file://``,
            ``pipe:`` ...), read as a stream front to back; a failed read is not retried.
        fields: only read the members of these face-sample fields (default: every member, unknown ones
            included).
        expected: the manifest's sample count; a complete read that finds another number raises.
        members: only read the members with these suffixes (``"latent.npy"``; instead of ``fields``).

    Raises:
        ShardError: the file is missing (HTTP 404), not a tar archive, truncated, cut off while streaming
            (dropped connection, short body, failed ``pipe:`` command), or holds ``expected`` != samples
            found; the message names the shard (path or URL), the last good sample key and the last
            member read after it (for more samples than ``expected``: the first sample past the count
            and its members, raised when it is read).
    """
    if fields is not None and members is not None:
        raise ValueError("pass fields or members, not both")
    suffixes = members if members is not None else None if fields is None else (MEMBERS[f] for f in fields)
    select = None if suffixes is None else _SelectMembers(suffixes)
    last_key: str | None = None
    count = 0
    progress: dict[str, str] = {}
    try:
        with open_url(path) as stream:
            for sample in iter_tar_samples(stream, path, select, progress=progress):
                last_key = sample["__key__"]  # type: ignore[assignment]
                count += 1
                if expected is not None and count > expected:
                    found = ", ".join(f"{last_key}.{m}" for m in sample if not m.startswith("__"))
                    raise ShardError(
                        f"shard {path}: holds more samples than the {expected} the manifest lists; sample "
                        f"{count} is {last_key!r} (members {found}): appended, or the shard was replaced?"
                    )
                yield sample
    except (SampleError, ShardError):
        raise
    except Exception as exc:  # TarFormatError (damaged, truncated, duplicate member), OSError, HTTP errors ...
        where = _where(last_key, progress)
        reason = _reason(exc)
        raise ShardError(f"shard {path}: cannot read the tar archive {where}: {reason}") from exc
    if expected is not None and count != expected:
        raise ShardError(
            f"shard {path}: holds {count} samples but the manifest lists {expected} (truncated or replaced?)"
        )


def _where(last_key: str | None, progress: dict[str, str]) -> str:
    """Where a read stopped: after the last complete sample, and after which member of the next one."""
    pending, member = progress.get("key"), progress.get("member")
    if pending is None or pending == last_key or member is None:
        return f"after sample {last_key!r}" if last_key is not None else "before the first sample"
    if last_key is None:
        return f"in sample {pending!r} after its member {member!r} (no complete sample before it)"
    return f"after sample {last_key!r} (in sample {pending!r}, after its member {member!r})"


def _reason(exc: BaseException) -> str:
    """What went wrong, on one line: the tar reader's message, else ``strerror`` or the exception's text."""
    if isinstance(exc, TarFormatError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join((str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)).split())
    if not text:
        return type(exc).__name__
    return text if type(exc) is OSError else f"{type(exc).__name__}: {text}"


def split_by_rank(items: list, rank: int, world_size: int) -> list:
    """Every ``world_size``-th item starting at ``rank`` (disjoint, and together complete, over ranks)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    return items[rank::world_size]


def _drop_first(n: int):
    """A pipeline stage dropping the first ``n`` items."""
    return lambda source: itertools.islice(source, n, None)


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardStream(IterableDataset):
    """Decoded :class:`FaceSample` objects from a list of shards, for one rank.

    Two modes:

    * ``train=True``: this rank's shards (``shards[rank::world_size]``; all shards when there are fewer
      than ranks) are drawn with replacement (``ResampledShards``), samples pass a shuffle buffer, and
      each worker yields exactly ``samples_per_worker`` samples (``with_epoch``). Every rank thus runs
      the same number of steps whatever its shards hold.
    * ``train=False``: this rank's shards, split over workers, read once in order. On one process every
      sample appears exactly once, in a fixed order.

    Args:
        shards: shard paths.
        counts: sample count per shard (from the manifest): checked when a shard is read to its end.
        spec: the dataset spec (for validation).
        fields: fields to decode (default all); the other members are not read.
        train: training mode (see above).
        rank, world_size: this process's place among the data-parallel processes.
        samples_per_worker: training samples per worker per epoch.
        shuffle_buffer: training sample-shuffle buffer size (0 or 1 disables).
        seed: base seed; the epoch, rank and worker are mixed in.
        validate: run :func:`validate_sample` on each decoded sample (else only decoding checks).
        on_bad_sample, max_bad_fraction, bad_fraction_min_samples: what a sample that fails decoding or
            validation does (``"raise"``, or ``"skip"`` within a limit): :mod:`fitdiff.data.bad_samples`.
            The counts are in :attr:`bad_samples`.
    """

    def __init__(
        self,
        shards: list[str],
        *,
        counts: list[int] | None = None,
        spec: SampleSpec | None = None,
        fields: tuple[str, ...] | None = None,
        train: bool = False,
        rank: int = 0,
        world_size: int = 1,
        samples_per_worker: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        validate: bool = True,
        on_bad_sample: str = "raise",
        max_bad_fraction: float = 0.01,
        bad_fraction_min_samples: int = 1000,
    ) -> None:
        super().__init__()
        if train and not samples_per_worker:
            raise ValueError("a training stream needs samples_per_worker")
        if validate and spec is None:
            raise ValueError("validate=True needs the dataset spec")
        self.shards = [str(s) for s in shards]
        self.counts = list(counts) if counts is not None else [None] * len(self.shards)
        self.spec = spec
        self.fields = tuple(FIELDS if fields is None else fields)
        self.train = train
        self.rank, self.world_size = int(rank), int(world_size)
        self.samples_per_worker = samples_per_worker
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.validate = validate
        self.bad_samples = BadSampleCounter(on_bad_sample, max_bad_fraction, bad_fraction_min_samples)
        self.epoch = 0
        self._resume: tuple[tuple[int, ...], int] | None = None  # (samples to drop per worker role, first role)
        split_by_rank([], self.rank, self.world_size)  # range check

    def rank_shards(self) -> list[tuple[str, int | None]]:
        """(path, count) of the shards this rank reads."""
        pairs = list(zip(self.shards, self.counts))
        if self.train and len(pairs) < self.world_size:
            return pairs  # too few shards to split: every rank resamples them all
        return split_by_rank(pairs, self.rank, self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch mixed into the training seeds (the DataModule's loader calls this)."""
        self.epoch = int(epoch)

    def resume_within_pass(self, skips: list[int] | None, first_role: int = 0) -> None:
        """Start the next training pass mid-way (once; ``None`` cancels): see :mod:`fitdiff.data.position`.

        Args:
            skips: samples worker role ``r`` already produced in this pass (one entry per worker, one for
                the main process), dropped again before decoding.
            first_role: the role of worker 0 (the worker of the next batch); worker ``w`` plays role
                ``(w + first_role) % num_workers``: its seeds and its skip.
        """
        self._resume = None if skips is None else (tuple(int(n) for n in skips), int(first_role))

    def _decode(self, source: Iterator[dict]) -> Iterator[FaceSample]:
        counter = self.bad_samples
        for raw in source:
            shard = str(raw.get("__url__", "?"))  # the full path (or URL): the file to fix
            try:
                sample = decode_sample(raw, fields=self.fields, shard=shard)
                if self.validate:
                    assert self.spec is not None
                    validate_sample(sample, self.spec, fields=self.fields, shard=shard)
            except SampleError as exc:
                if not counter.skipping:
                    raise
                counter.bad(exc)
                continue
            counter.good()
            yield sample
        counter.end_of_pass()  # reached only when a finite source ends (never in resampled training)

    def _read(self, sources: Iterator[dict]) -> Iterator[dict]:
        counts = dict(zip(self.shards, self.counts))
        for source in sources:
            yield from read_shard(source["url"], self.fields, counts.get(source["url"]))

    def __iter__(self) -> Iterator[FaceSample]:
        worker, num_workers = _worker()
        epoch = self.epoch
        self.epoch += 1  # persistent workers keep their own copy: advance it here as well
        shards = self.rank_shards()
        skips, first_role = self._resume or ((), 0)
        self._resume = None  # the resumed pass only (persistent workers keep their own copy)
        role = (worker + first_role) % num_workers
        skip = skips[role] if role < len(skips) else 0
        if self.train:
            seed = wds.utils.make_seed(self.seed, epoch, self.rank, role)
            resampled = wds.ResampledShards([p for p, _ in shards], seed=seed, deterministic=True,
                                            worker_seed=lambda: 0)
            stages: list = [resampled, self._read]
            if self.shuffle_buffer > 1:
                stages.append(wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 100), seed=seed + 1))
            # a skipped bad sample yields nothing: then only decoded samples count (dropped after decoding)
            drop_decoded = self.bad_samples.skipping
            if skip and not drop_decoded:
                stages.append(_drop_first(skip))
            stages.append(self._decode)
            if skip and drop_decoded:
                stages.append(_drop_first(skip))
            remaining = int(self.samples_per_worker or 0) - skip
            if remaining <= 0:
                return iter(())
            pipeline = wds.DataPipeline(*stages).with_epoch(remaining)
        else:
            sources = [{"url": p} for p, _ in shards]
            pipeline = wds.DataPipeline(lambda: wds.split_by_worker(sources), self._read, self._decode)
        log.debug("rank %d worker %d/%d epoch %d: %d shard(s)", self.rank, worker, num_workers, epoch, len(shards))
        return iter(pipeline)

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        names = ", ".join(Path(s).name for s in self.shards[:3]) + (", ..." if len(self.shards) > 3 else "")
        return f"ShardStream({mode}, rank {self.rank}/{self.world_size}, {len(self.shards)} shards: {names})"
