"""The shard tar reader: same members and grouping as tarfile / webdataset, clear errors on damage."""

import io
import tarfile

import pytest
import webdataset as wds

from fitdiff.data.tar_reader import TarFormatError, iter_tar_members, iter_tar_samples, split_member_name


def _tar(
    members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT, directory: str | None = None
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        if directory is not None:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


MEMBERS = [
    ("a/s0.image.png", b"\x89PNG" + bytes(range(256)) * 3),
    ("a/s0.id.npy", b"x" * 512),  # exactly one block: no padding
    ("a/s0.META.JSON", b"{}"),
    ("a/s1.image.png", b""),  # empty member
    ("a/s1.normals.npy", b"n" * 1000),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_members_match_tarfile(fmt):
    data = _tar(MEMBERS, fmt, directory="a")
    assert list(iter_tar_members(io.BytesIO(data))) == MEMBERS


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names(fmt):
    name = "d" * 90 + "/" + "k" * 120 + ".image.png"  # > 100 bytes: pax path record / GNU long name
    data = _tar([(name, b"abc"), ("short.id.npy", b"z")], fmt)
    assert list(iter_tar_members(io.BytesIO(data))) == [(name, b"abc"), ("short.id.npy", b"z")]


def test_samples_group_like_webdataset(tmp_path):
    path = tmp_path / "shard.tar"
    path.write_bytes(_tar(MEMBERS, directory="a"))
    ours = list(iter_tar_samples(io.BytesIO(path.read_bytes()), str(path)))
    theirs = list(wds.tarfile_samples([{"url": str(path)}], handler=wds.reraise_exception))
    assert [s["__key__"] for s in ours] == ["a/s0", "a/s1"]
    assert ours == [dict(s) for s in theirs]


def test_select_skips_members_on_seekable_and_plain_streams():
    data = _tar(MEMBERS)

    class Unseekable(io.RawIOBase):
        def __init__(self, raw: bytes) -> None:
            self.inner = io.BytesIO(raw)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # noqa: ANN001
            chunk = self.inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    for stream in (io.BytesIO(data), io.BufferedReader(Unseekable(data))):
        got = list(iter_tar_members(stream, select=lambda n: n.endswith(".npy")))
        assert got == [m for m in MEMBERS if m[0].endswith(".npy")]


def test_split_member_name():
    assert split_member_name("x/y.z/key.Image.PNG") == ("x/y.z/key", "image.png")
    assert split_member_name("key") == ("key", "")


def test_bad_checksum_is_reported_with_offset():
    data = bytearray(_tar(MEMBERS))
    second_header = 512 + 1024  # first member's header + its 3 data blocks (772 bytes)
    data[second_header + 10] ^= 0xFF
    with pytest.raises(TarFormatError, match=f"checksum at byte {second_header}"):
        list(iter_tar_members(io.BytesIO(bytes(data))))
    with pytest.raises(TarFormatError, match="checksum at byte 0"):
        list(iter_tar_members(io.BytesIO(b"not a tar archive at all" * 40)))


def test_truncation_is_reported():
    data = _tar(MEMBERS)
    with pytest.raises(TarFormatError, match="end of data in member 'a/s0.image.png'"):
        list(iter_tar_members(io.BytesIO(data[:700])))
    with pytest.raises(TarFormatError, match="end of data in the tar header at byte 1536"):
        list(iter_tar_members(io.BytesIO(data[:1600])))
    # a clean cut at a member boundary reads what is there (the caller checks counts)
    assert [n for n, _ in iter_tar_members(io.BytesIO(data[:1536]))] == ["a/s0.image.png"]


def test_duplicate_member_in_a_sample():
    data = _tar([("s0.id.npy", b"1"), ("s0.id.npy", b"2")])
    with pytest.raises(TarFormatError, match="'s0.id.npy' appears twice in sample 's0'"):
        list(iter_tar_samples(io.BytesIO(data), "shard.tar"))


def test_bad_pax_size_is_reported():
    data = _tar([("k" * 120 + ".id.npy", b"abc")])  # a long name: tarfile writes a pax "path" record first
    assert b" path=" in data
    damaged = data.replace(b" path=", b" size=", 1)  # same record length, value not a number
    with pytest.raises(TarFormatError, match="bad pax size .* for the member at byte 1024"):
        list(iter_tar_members(io.BytesIO(damaged)))


def test_sparse_members_are_refused_not_dropped():
    data = bytearray(_tar([("s0.id.npy", b"abc")]))
    data[156:157] = b"S"  # GNU sparse type flag on the first (only) member header
    data[:512] = _fix_checksum(bytes(data[:512]))
    with pytest.raises(TarFormatError, match="'s0.id.npy' at byte 0 is stored as a sparse file"):
        list(iter_tar_members(io.BytesIO(bytes(data))))


def test_huge_size_field_reports_truncation_without_allocating_it():
    data = bytearray(_tar([("s0.id.npy", b"abc")], fmt=tarfile.USTAR_FORMAT))
    data[124:136] = b"77777777777\0"  # 8 GiB claimed by a header with a valid checksum
    data[:512] = _fix_checksum(bytes(data[:512]))
    with pytest.raises(
        TarFormatError, match=r"end of data in member 's0.id.npy' at byte 512 \(wanted 8589934592"
    ):
        list(iter_tar_members(io.BytesIO(bytes(data))))


def _fix_checksum(header: bytes) -> bytes:
    block = bytearray(header)
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def test_truncated_member_is_reported_when_skipped():
    data = _tar(MEMBERS)
    cut = data[:700]  # inside the first member's data
    with pytest.raises(TarFormatError, match="end of data in member 'a/s0.image.png' at byte 512"):
        list(iter_tar_members(io.BytesIO(cut), select=lambda name: False))
