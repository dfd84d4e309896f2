"""The embedded synthetic fitted dataset: procedural subjects with known shape and reflectance.

``data_prep/make_synthetic.py`` is the command line; :func:`generate_dataset` the pipeline behind it;
``data_prep/verify_identity.py`` measures the identity signal (:func:`verification_auc`).
"""

from fitdiff.synthetic.generate import GenerationReport, SyntheticConfig, generate_dataset
from fitdiff.synthetic.scene import Scene, SceneRanges, sample_scene
from fitdiff.synthetic.subjects import SubjectTruth, make_subject, rng_for, subject_id
from fitdiff.synthetic.textures import Appearance, ReflectanceMaps, reflectance_maps, sample_appearance
from fitdiff.synthetic.uv_layout import UVLayout, uv_layout
from fitdiff.synthetic.verification import verification_auc

__all__ = [
    "Appearance",
    "GenerationReport",
    "ReflectanceMaps",
    "Scene",
    "SceneRanges",
    "SubjectTruth",
    "SyntheticConfig",
    "UVLayout",
    "generate_dataset",
    "make_subject",
    "reflectance_maps",
    "rng_for",
    "sample_appearance",
    "sample_scene",
    "subject_id",
    "uv_layout",
    "verification_auc",
]
