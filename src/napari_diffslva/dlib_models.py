"""dlib's face models, shipped as data files inside ``face-recognition-models``.

That package's ``__init__`` imports ``pkg_resources``, which current setuptools no longer
provides, so its data folder is located without importing it.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from .errors import WeightsError

_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}


def models_dir() -> Path:
    """The ``models`` folder of the installed ``face-recognition-models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "face-recognition-models is not installed: pip install face-recognition-models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_path(name: str) -> Path:
    """Path of one of dlib's model files (``landmarks68``, ``embedding``, ...)."""
    path = models_dir() / _FILES[name]
    if not path.is_file():
        raise WeightsError(f"{path}: dlib model file missing; reinstall face-recognition-models")
    return path


@cache
def hog_detector() -> Any:
    """dlib's HOG frontal face detector (cached: building it costs ~50 ms)."""
    import dlib

    return dlib.get_frontal_face_detector()


@cache
def landmark_predictor() -> Any:
    """dlib's 68-point shape predictor."""
    import dlib

    return dlib.shape_predictor(str(model_path("landmarks68")))


@cache
def face_encoder() -> Any:
    """dlib's ResNet 128-d face embedding model (same person: L2 distance below ~0.6)."""
    import dlib

    return dlib.face_recognition_model_v1(str(model_path("embedding")))
