"""The asset registry: what each external file is, its sha256, size, source and licence.

Later stages and plug-ins add their own files with :func:`register`; the built-in ones are registered
at the bottom of this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from fitdiff.assets.errors import AssetError

__all__ = ["Asset", "ASSETS", "register", "get"]


@dataclass(frozen=True)
class Asset:
    """One registered external file.

    Attributes:
        name: registry key used on the command line and in configs (``arcface_ir_se50``).
        filename: file name inside the asset folder.
        description: what it is and what uses it.
        sha256: expected hex digest of the file; ``None`` when the file is user-made (then only presence
            is checked) .
        url: where ``fetch`` downloads it from; ``None`` when it must be obtained by hand.
        source: human-readable origin (project, release).
        licence: licence / terms of use note.
        how_to_get: instructions for assets with no URL (shown in errors).
        size_bytes: expected size, when known (checked after download).
    """

    name: str
    filename: str
    description: str
    sha256: str | None
    url: str | None
    source: str
    licence: str
    how_to_get: str = ""
    size_bytes: int | None = None

    def fetch_hint(self) -> str:
        """The command or instructions that put this asset in place."""
        if self.url:
            return f"python -m fitdiff.assets fetch {self.name}"
        hint = self.how_to_get or "obtain it from its source"
        return f"{hint}; then: python -m fitdiff.assets add {self.name} /path/to/{self.filename}"


ASSETS: dict[str, Asset] = {}


def register(asset: Asset, *, replace: bool = False) -> Asset:
    """Add ``asset`` to the registry (later stages and plug-ins register their own files)."""
    if asset.name in ASSETS and not replace:
        raise ValueError(f"asset {asset.name!r} is already registered")
    if asset.sha256 is not None and (len(asset.sha256) != 64 or not _is_hex(asset.sha256)):
        raise ValueError(f"asset {asset.name!r}: sha256 must be 64 hex digits, got {asset.sha256!r}")
    ASSETS[asset.name] = asset
    return asset


def _is_hex(text: str) -> bool:
    """Whether ``text`` parses as a hexadecimal number."""
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def get(name: str) -> Asset:
    """The registered asset ``name``; a clear error lists the known names otherwise."""
    try:
        return ASSETS[name]
    except KeyError:
        known = ", ".join(sorted(ASSETS))
        raise AssetError(f"unknown asset {name!r}; registered assets: {known}") from None


_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/v0.1.0"

register(
    Asset(
        name="arcface_ir_se50",
        filename="recognition_arcface_ir_se50.pth",
        description="ArcFace IR-SE50 face-recognition weights (512-d identity embedding, facexlib Backbone)",
        sha256="a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28",
        url=f"{_FACEXLIB}/recognition_arcface_ir_se50.pth",
        source="facexlib v0.1.0 release (xinntao/facexlib)",
        licence="facexlib code MIT; weights trained on MS1M-derived data: research use",
        size_bytes=175367323,
    )
)
register(
    Asset(
        name="retinaface_resnet50",
        filename="detection_Resnet50_Final.pth",
        description="RetinaFace ResNet-50 face detector with 5 landmarks (facexlib RetinaFace)",
        sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        url=f"{_FACEXLIB}/detection_Resnet50_Final.pth",
        source="facexlib v0.1.0 release (xinntao/facexlib)",
        licence="facexlib code MIT; weights trained on WIDER FACE: research use",
        size_bytes=109497761,
    )
)
register(
    Asset(
        name="lpips_vgg16",
        filename="vgg16-397923af.pth",
        description="ImageNet VGG-16 backbone for LPIPS(net='vgg') (the lpips package ships only its heads)",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        source="torchvision model zoo",
        licence="torchvision BSD-3-Clause; ImageNet-trained weights: non-commercial research terms",
    )
)
register(
    Asset(
        name="lsfm",
        filename="lsfm.npz",
        description="LSFM 3D morphable shape model converted to fitdiff's PCAShapeModel .npz",
        sha256=None,
        url=None,
        source="Large Scale Facial Model (Booth et al., Imperial College London)",
        licence="non-commercial research licence, granted on request by its authors",
        how_to_get=(
            "request LSFM from its authors (Imperial College London, iBUG), convert the .mat with "
            "fitdiff's LSFM converter (see README, 'Shape models')"
        ),
    )
)
