"""The fitted-dataset folder layout (one folder per sample) and a per-file torch Dataset over it.

Layout (also documented in ``data_prep/README.md``)::

    SRC/<subject>/<image>/image.png, diffuse.png, specular.png, normals.npy, shape.npy, id.npy,
                          landmarks.npy, meta.json

The sample key is ``<subject>_<image>``. :class:`FolderDataset` reads such a folder one file per field
(the baseline the shard reader is benchmarked against).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from fitdiff.data.errors import SampleError
from fitdiff.data.sample import FIELDS, MEMBERS, FaceSample, decode_sample, make_key

__all__ = ["SampleFolder", "find_sample_folders", "read_folder_members", "write_sample_folder", "FolderDataset"]


class SampleFolder:
    """One sample folder: its key (``None`` when the folder names break the key rules) and path."""

    __slots__ = ("key", "path", "problem")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None
        try:
            self.key: str | None = make_key(path.parent.name, path.name)
        except ValueError as exc:
            self.key, self.problem = None, str(exc)

    @property
    def name(self) -> str:
        """``<subject>/<image>``, for messages."""
        return f"{self.path.parent.name}/{self.path.name}"

    def __repr__(self) -> str:
        return f"SampleFolder({self.name!r})"


def find_sample_folders(root: str | Path) -> list[SampleFolder]:
    """Every ``root/<subject>/<image>/`` folder, sorted by subject then image name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    return [
        SampleFolder(image_dir)
        for subject_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for image_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    ]


def read_folder_members(folder: SampleFolder, fields: tuple[str, ...] | list[str] | None = None) -> dict[str, bytes | str]:
    """The raw bytes of the member files present in ``folder`` (only ``fields`` when given)."""
    if folder.key is None:
        raise SampleError(f"bad folder name: {folder.problem}", key=folder.name)
    members: dict[str, bytes | str] = {"__key__": folder.key}
    for name in FIELDS if fields is None else fields:
        path = folder.path / MEMBERS[name]
        if path.is_file():
            members[MEMBERS[name]] = path.read_bytes()
    return members


def write_sample_folder(root: str | Path, sample: FaceSample) -> Path:
    """Write ``sample`` as one file per field under ``root/<subject>/<image>/``; return that folder."""
    subject, image = sample.key.rsplit("_", 1)
    folder = Path(root) / subject / image
    folder.mkdir(parents=True, exist_ok=True)
    for member, data in sample.encode().items():
        if member != "__key__":
            (folder / member).write_bytes(data)  # type: ignore[arg-type]
    return folder


class FolderDataset(Dataset):
    """Map-style dataset over a sample-folder tree: one file open and decode per field.

    Args:
        root: the ``SRC`` folder.
        fields: fields to load (default all).

    Items are :class:`FaceSample` (use :class:`fitdiff.data.batch.FaceCollate` to batch them).
    """

    def __init__(self, root: str | Path, fields: tuple[str, ...] | list[str] | None = None) -> None:
        self.folders = [f for f in find_sample_folders(root) if f.key is not None]
        self.fields = tuple(FIELDS if fields is None else fields)

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> FaceSample:
        folder = self.folders[index]
        return decode_sample(read_folder_members(folder, self.fields), fields=self.fields, shard=str(folder.path.parent))
