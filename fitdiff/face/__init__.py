"""Face models: PCA shape model, procedural template, the differentiable face scene, identity, detection
and alignment."""

from . import synthetic_recognizer  # noqa: F401 - registers the "synthetic_recognizer" identity encoder
from .alignment import (
    ARCFACE_TEMPLATE,
    align_faces,
    alignment_transform,
    arcface_template,
    similarity_transform,
    transform_points,
)
from .detection import Detection, FaceDetector, MissingLandmarksError, NoFaceError, landmarks_for
from .identity import (
    ArcFaceEncoder,
    IdentityEncoder,
    build_identity_encoder,
    cosine_similarity,
    identity_loss,
    register_identity_encoder,
)
from .scene import FaceRender, FaceScene, SceneLights, camera_from_meta
from .shape_model import PCAShapeModel, ShapeModelError
from .template import make_face_template, make_procedural_shape_model

__all__ = [
    "ARCFACE_TEMPLATE",
    "ArcFaceEncoder",
    "Detection",
    "FaceRender",
    "FaceScene",
    "FaceDetector",
    "IdentityEncoder",
    "MissingLandmarksError",
    "NoFaceError",
    "PCAShapeModel",
    "SceneLights",
    "ShapeModelError",
    "align_faces",
    "alignment_transform",
    "arcface_template",
    "build_identity_encoder",
    "camera_from_meta",
    "cosine_similarity",
    "identity_loss",
    "landmarks_for",
    "make_face_template",
    "make_procedural_shape_model",
    "register_identity_encoder",
    "similarity_transform",
    "transform_points",
]
