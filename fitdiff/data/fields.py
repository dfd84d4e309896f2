"""Which sample fields each stage reads: the one definition configs, data modules and tools refer to.

Field names are the attributes of :class:`fitdiff.data.sample.FaceSample` (:data:`FIELDS`). Experiment
configs spell the lists out (``data.fields: [diffuse, specular, normals]``); ``tests/test_fields.py``
checks them against these constants.
"""

from __future__ import annotations

from fitdiff.data.sample import FIELDS

__all__ = [
    "REFLECTANCE_MAPS",
    "AUTOENCODER_FIELDS",
    "DIFFUSION_FIELDS",
    "RECONSTRUCTION_FIELDS",
    "STAGE_FIELDS",
    "stage_fields",
]

#: the reflectance UV maps, in latent order (z = [z_diffuse | z_specular | z_normals])
REFLECTANCE_MAPS: tuple[str, ...] = ("diffuse", "specular", "normals")

#: autoencoder stage: the UV maps only
AUTOENCODER_FIELDS: tuple[str, ...] = REFLECTANCE_MAPS

#: diffusion stage: the maps and shape coefficients (together the latent z_0) and the identity
#: embedding (the condition)
DIFFUSION_FIELDS: tuple[str, ...] = (*REFLECTANCE_MAPS, "shape", "identity")

#: guided reconstruction and its evaluation: the input photo, its landmarks and ``meta`` (camera), and
#: the ground truth the errors are measured against (maps, shape). The identity of the photo is
#: computed by the recognition nets themselves, so the stored ``identity`` is not read.
RECONSTRUCTION_FIELDS: tuple[str, ...] = ("image", "landmarks", "meta", *REFLECTANCE_MAPS, "shape")

#: stage name -> its fields
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "autoencoder": AUTOENCODER_FIELDS,
    "diffusion": DIFFUSION_FIELDS,
    "reconstruction": RECONSTRUCTION_FIELDS,
}

_unknown = sorted({f for fields in STAGE_FIELDS.values() for f in fields} - set(FIELDS))
if _unknown:  # a renamed sample field must be renamed here too
    raise ImportError(f"fitdiff.data.fields names unknown sample fields: {', '.join(_unknown)}")


def stage_fields(stage: str) -> tuple[str, ...]:
    """The fields of ``stage`` ("autoencoder", "diffusion" or "reconstruction")."""
    try:
        return STAGE_FIELDS[stage]
    except KeyError:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_FIELDS)}") from None
