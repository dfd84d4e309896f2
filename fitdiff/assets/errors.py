"""Errors raised by the asset registry, store and downloader."""

from __future__ import annotations

__all__ = ["AssetError", "AssetMissingError", "AssetChecksumError", "AssetDownloadError"]


class AssetError(RuntimeError):
    """Base class of asset errors."""


class AssetMissingError(AssetError, FileNotFoundError):
    """An asset the code needs is not on disk; the message says how to get it."""


class AssetChecksumError(AssetError):
    """A file's sha256 differs from the registered one."""


class AssetDownloadError(AssetError):
    """A transfer failed or was truncated; nothing was left behind."""
