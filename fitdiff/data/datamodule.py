"""The LightningDataModule of both training stages: manifest-checked WebDataset shards -> FaceBatch.

Training: shards resampled per rank, a sample shuffle buffer, optional photo colour jitter, and a fixed
number of steps per epoch on every rank (derived from the manifest, batch size and world size, or set
with ``steps_per_epoch``). Validation / test: every sample of the rank's shards once, in a fixed order;
with fewer shards than ranks every rank reads all shards and keeps every ``world_size``-th sample, so
that no rank is left without data (a rank with no batches would stall the others' metric reductions).

The rank, epoch and loader plumbing is :class:`ShardDataModule`, shared with the latent-shard
DataModule (:mod:`fitdiff.data.latent_datamodule`). Its ``state_dict`` (saved in checkpoints) is the
training position: a resumed run re-creates the same seeded pass and drops the batches already trained
on, so it sees the batches an uninterrupted run would (:mod:`fitdiff.data.position`).

Hydra: ``experiments/data/shards.yaml`` (``_target_: fitdiff.data.FaceDataModule``).
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from fitdiff.config.ranges import Interval
from fitdiff.data.bad_samples import BadSampleCounter
from fitdiff.data.batch import FaceCollate, PhotoJitter
from fitdiff.data.manifest import Manifest, load_manifest
from fitdiff.data.position import EpochLoader, PassPosition
from fitdiff.data.remote import as_location, join_url
from fitdiff.data.sample import FIELDS
from fitdiff.data.stream import ShardStream
from fitdiff.data.validation import SampleSpec

__all__ = ["FaceDataModule", "ShardDataModule", "resolve_rank"]

log = logging.getLogger(__name__)


def resolve_rank(trainer: L.Trainer | None = None) -> tuple[int, int]:
    """(rank, world size): from the trainer, else ``RANK``/``WORLD_SIZE``, else torch.distributed, else (0, 1)."""
    if trainer is not None:
        return int(trainer.global_rank), int(trainer.world_size)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _SizedShardStream(ShardStream):
    """Training stream with a known length (samples per rank per epoch), so loaders report their steps."""

    def __init__(self, *args, length: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.length = int(length)

    def __len__(self) -> int:
        return self.length


class _SampleSplitStream(ShardStream):
    """Evaluation stream for fewer shards than ranks: every rank reads every shard, keeps its samples.

    Sample ``g`` (its position in shard order, counted with the manifest's per-shard counts) goes to
    rank ``g % world_size``: disjoint and together complete over ranks. With fewer samples than ranks,
    rank ``r`` gets sample ``r % samples`` (some samples are then evaluated on two ranks).
    """

    def rank_shards(self) -> list[tuple[str, int | None]]:
        return list(zip(self.shards, self.counts))

    def _read(self, sources: Iterator[dict]) -> Iterator[dict]:
        offsets, total = {}, 0
        for path, count in zip(self.shards, self.counts):
            offsets[path] = total
            total += int(count or 0)
        for source in sources:
            first = offsets[source["url"]]
            for i, raw in enumerate(super()._read(iter([source]))):
                g = first + i
                if (g % self.world_size == self.rank) if total >= self.world_size else (g == self.rank % total):
                    yield raw


class ShardDataModule(L.LightningDataModule):
    """What every shard DataModule shares: manifest check at setup, per-rank streams, epoch-sized loaders.

    A subclass provides :meth:`_load_manifest` (an object with ``shards_for(split)``, ``counts`` and
    ``check(folder, verify_checksums=, splits=)``), :meth:`_stream_options` (keyword arguments of its
    streams), :meth:`_collate` and, for samples other than :class:`FaceSample`, the three stream classes
    (:attr:`eval_stream`, :attr:`sample_split_stream`, :attr:`train_stream`).

    Args: as :class:`FaceDataModule` (``data_dir`` to ``verify_checksums``, ``pin_memory`` to
    ``world_size``).
    """

    eval_stream: type[ShardStream] = ShardStream
    sample_split_stream: type[ShardStream] = _SampleSplitStream
    train_stream: type[_SizedShardStream] = _SizedShardStream

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        verify_checksums: bool = False,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.data_dir: str | Path = as_location(data_dir)  # a Path, or the URL as given
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers = int(num_workers)
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("batch_size must be >= 1 and num_workers >= 0")
        self.shuffle_buffer = int(shuffle_buffer)
        self.requested_steps = steps_per_epoch
        self.seed = int(seed) if seed is not None else random.SystemRandom().randrange(2**31)
        self.verify_checksums = verify_checksums
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = persistent_workers
        self._rank_override = (rank, world_size)
        self.manifest: Any = None
        self.rank, self.world_size = 0, 1
        self.streams: dict[str, ShardStream] = {}
        self.steps_per_epoch = 0
        self.position = PassPosition()  #: the training pass and the batches taken from it (checkpointed)

    # ----------------------------------------------------------------------------------------- hooks

    def _load_manifest(self) -> Any:
        raise NotImplementedError

    def _stream_options(self) -> dict[str, Any]:
        return {}

    def _collate(self, train: bool) -> Callable[[list], Any]:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------- setup

    def _resolve_rank(self) -> tuple[int, int]:
        rank, world = self._rank_override
        if rank is not None or world is not None:
            if rank is None or world is None:
                raise ValueError("pass both rank and world_size, or neither")
            return int(rank), int(world)
        return resolve_rank(getattr(self, "trainer", None))

    def setup(self, stage: str | None = None) -> None:
        """Load and check the manifest, then build the streams ``stage`` needs (all when ``None``)."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}.get(
            stage or "", ("train", "val", "test")
        )
        self.manifest = self._load_manifest()
        self.manifest.check(self.data_dir, verify_checksums=self.verify_checksums, splits=splits)
        self.rank, self.world_size = self._resolve_rank()
        for split in splits:
            self.streams[split] = self._stream(split)

    def _stream(self, split: str) -> ShardStream:
        assert self.manifest is not None
        entries = [e for e in self.manifest.shards_for(split) if e.samples > 0]
        paths = [join_url(self.data_dir, e.name) for e in entries]
        counts = [e.samples for e in entries]
        common = dict(counts=counts, rank=self.rank, world_size=self.world_size, **self._stream_options())
        if split != "train":
            if not entries:
                log.info("%s: the manifest lists no %s samples", self.data_dir, split)
            elif len(entries) < self.world_size:
                log.info("%s: %d %s shard(s) for %d ranks: the ranks split the samples instead of the shards",
                         self.data_dir, len(entries), split, self.world_size)
                return self.sample_split_stream(paths, train=False, **common)
            return self.eval_stream(paths, train=False, **common)
        if not entries:
            raise ValueError(f"{self.data_dir}: the manifest lists no training samples")
        if len(entries) < self.world_size:
            log.warning("%d training shard(s) for %d ranks: every rank resamples all of them", len(entries),
                        self.world_size)
        workers = max(1, self.num_workers)
        total = self.manifest.counts["train"]
        steps = self.requested_steps or math.ceil(total / (self.batch_size * self.world_size))
        per_worker = math.ceil(max(1, steps) / workers)
        self.steps_per_epoch = per_worker * workers
        if self.requested_steps and self.steps_per_epoch != self.requested_steps:
            log.info("steps_per_epoch %d rounded up to %d (a multiple of %d workers)", self.requested_steps,
                     self.steps_per_epoch, workers)
        return self.train_stream(
            paths, train=True, samples_per_worker=per_worker * self.batch_size, shuffle_buffer=self.shuffle_buffer,
            seed=self.seed, length=self.steps_per_epoch * self.batch_size, **common,
        )

    # ----------------------------------------------------------------------------------------- loaders

    def _loader_kwargs(self, workers: int) -> dict:
        return dict(
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
        )

    def _get(self, split: str) -> ShardStream:
        if split not in self.streams:
            raise RuntimeError(f"no {split} stream: call setup() with the matching stage first")
        return self.streams[split]

    def train_dataloader(self) -> DataLoader:
        """Infinite-resampled training loader: exactly :attr:`steps_per_epoch` batches per epoch and rank."""
        stream = self._get("train")
        return EpochLoader(
            stream, position=self.position, batch_size=self.batch_size, drop_last=True,
            collate_fn=self._collate(True), **self._loader_kwargs(self.num_workers),
        )

    # ----------------------------------------------------------------------------------------- resume

    def _position_setup(self) -> dict[str, int]:
        return dict(batch_size=self.batch_size, num_workers=self.num_workers, world_size=self.world_size,
                    seed=self.seed, steps_per_epoch=self.steps_per_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The training position, saved in checkpoints: ``pass`` and the ``batches`` (per rank, all ranks
        alike) the training loop has taken from it, with the settings the position is exact for.

        Under a fitting trainer the batches are the trainer's (the loader is one prefetched batch ahead);
        a completed pass is saved as the start of the next.
        """
        pos = self.position
        if pos.current < 0:
            pass_, batches = pos.next_pass, pos.skip
        else:
            pass_, batches = pos.current, pos.yielded
            trainer = self.trainer
            if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
                batches = min(batches, int(trainer.fit_loop.epoch_loop.batch_progress.current.ready))
        if self.steps_per_epoch and batches >= self.steps_per_epoch:
            pass_, batches = pass_ + 1, 0
        return {"pass": int(pass_), "batches": int(batches), **self._position_setup()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` position: the next training pass is the saved one, re-seeded
        alike, without the batches already taken (call before the first ``iter`` of the train loader)."""
        if "pass" not in state_dict:
            return
        now = self._position_setup()
        changed = [f"{k} {state_dict[k]} -> {now[k]}" for k in now
                   if k in state_dict and state_dict[k] != now[k] and (k != "steps_per_epoch" or now[k])]
        if changed:
            log.warning("the data position was saved with other settings (%s): the batches after resuming are "
                        "not those of an uninterrupted run", ", ".join(changed))
        pos = self.position
        pos.next_pass, pos.skip, pos.current, pos.yielded = int(state_dict["pass"]), int(state_dict["batches"]), -1, 0
        if self.steps_per_epoch and pos.skip >= self.steps_per_epoch:
            pos.next_pass, pos.skip = pos.next_pass + 1, 0
        log.info("data: resuming at training pass %d after %d batch(es)", pos.next_pass, pos.skip)

    def _eval_loader(self, split: str) -> DataLoader | list:
        stream = self._get(split)
        n_shards = len(stream.rank_shards())
        if n_shards == 0:
            return []
        workers = min(self.num_workers, n_shards)  # more workers than shards would idle
        return DataLoader(
            stream, batch_size=self.val_batch_size, drop_last=False,
            collate_fn=self._collate(False), generator=torch.Generator().manual_seed(0),  # the global one untouched
            **self._loader_kwargs(workers),
        )

    def val_dataloader(self) -> DataLoader | list:
        """Validation loader: every sample of this rank's share of the val split once, in a fixed order."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        """Test loader: every sample of this rank's share of the test split once, in a fixed order."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        """The test split, as for :meth:`test_dataloader`."""
        return self._eval_loader("test")


class FaceDataModule(ShardDataModule):
    """Face shards (made by ``data_prep/build_shards.py`` or ``make_synthetic.py``) for training.

    Batches are :class:`fitdiff.data.FaceBatch`.

    Args:
        data_dir: folder with ``manifest.json`` and the shards, or its URL (``s3://``, ``gs://``,
            ``https://``, ``file://``, ``pipe:``; see :mod:`fitdiff.data.remote`), streamed without retries.
        batch_size: training batch size per process.
        val_batch_size: validation / test batch size (default ``batch_size``).
        num_workers: DataLoader worker processes (0 = load in the main process).
        fields: sample fields to load (default all: image, diffuse, specular, normals, shape, identity,
            landmarks, meta); e.g. ``[diffuse, specular, normals]`` for the autoencoder stage. The members
            of other fields are skipped without decoding.
        shuffle_buffer: training sample-shuffle buffer (samples held per worker).
        steps_per_epoch: training steps per epoch on every rank; default
            ``ceil(train samples / (batch_size * world_size))``, rounded up to a multiple of the workers.
        seed: base seed of the training shard resampling and shuffling (default: fresh per run).
        validate_samples: run the full schema check (ranges, unit normals, identity norm, ...) on every
            decoded sample; decoding, dtype and rank checks always run.
        on_bad_sample: a sample that fails decoding or validation ``"raise"``s (default) or is ``"skip"``ped:
            logged with its shard path and key, and counted (:mod:`fitdiff.data.bad_samples`).
        max_bad_fraction: with ``"skip"``, the run stops with :class:`~fitdiff.data.BadSampleLimitError` when
            more than this fraction (in [0, 1]) of the samples a loader process has read were skipped...
        bad_fraction_min_samples: ...once it has read at least this many samples (and at the end of every
            complete validation / test pass, whatever the count).
        verify_checksums: hash every shard at setup against the manifest (slow for large datasets).
        jitter_brightness, jitter_contrast, jitter_saturation, jitter_hue: photo colour augmentation of
            training batches (torchvision ColorJitter ranges; 0 disables); never applied to val / test.
        pin_memory: pin batches for faster host-to-GPU copies (default: when CUDA is available).
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        rank, world_size: override the data-parallel rank / world size (default: the trainer's, else
            ``RANK`` / ``WORLD_SIZE``, else a single process).
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        fields: list[str] | None = None,
        shuffle_buffer: int = 1000,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        validate_samples: bool = True,
        on_bad_sample: Literal["raise", "skip"] = "raise",
        max_bad_fraction: Annotated[float, Interval(0.0, 1.0)] = 0.01,
        bad_fraction_min_samples: Annotated[int, Interval(1, None)] = 1000,
        verify_checksums: bool = False,
        jitter_brightness: float = 0.0,
        jitter_contrast: float = 0.0,
        jitter_saturation: float = 0.0,
        jitter_hue: float = 0.0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, val_batch_size, num_workers, shuffle_buffer, steps_per_epoch, seed,
                         verify_checksums, pin_memory, persistent_workers, rank, world_size)
        self.fields = tuple(FIELDS if fields is None else fields)
        unknown = [f for f in self.fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; fields: {', '.join(FIELDS)}")
        self.validate_samples = validate_samples
        BadSampleCounter(on_bad_sample, max_bad_fraction, bad_fraction_min_samples)  # check the values now
        self.bad_sample_options = dict(on_bad_sample=on_bad_sample, max_bad_fraction=float(max_bad_fraction),
                                       bad_fraction_min_samples=int(bad_fraction_min_samples))
        self.jitter = PhotoJitter(jitter_brightness, jitter_contrast, jitter_saturation, jitter_hue)
        self.manifest: Manifest | None = None

    @property
    def spec(self) -> SampleSpec:
        """The dataset's sample spec (after :meth:`setup`)."""
        if self.manifest is None:
            raise RuntimeError("FaceDataModule.setup() has not run yet")
        return self.manifest.spec

    def _load_manifest(self) -> Manifest:
        return load_manifest(self.data_dir)

    def _stream_options(self) -> dict[str, Any]:
        assert self.manifest is not None
        return dict(spec=self.manifest.spec, fields=self.fields, validate=self.validate_samples,
                    **self.bad_sample_options)

    def _collate(self, train: bool) -> FaceCollate:
        return FaceCollate(self.fields, self.jitter if train else None)
