"""Face reenactment backends: one interface, chosen by a setting.

``"warp"`` (default) needs no weights: landmark-driven piecewise-affine warping.
``"reenact"`` runs the Thin-Plate Spline Motion Model from a local ``vox.pth.tar``.
Both render the source face with each driving frame's expression, on aligned 256x256 crops.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Protocol

import numpy as np

from ..errors import SettingsError

BACKENDS = ("warp", "reenact")


class ReenactBackend(Protocol):
    """Renders the source face with the driver's expressions, one crop per driving crop.

    All crops are aligned (H, W, 3) uint8 RGB of the same size (256x256); landmarks are
    (68, 2) (x, y) crop pixels. Motion is relative: the driver's change since its
    ``neutral`` frame is applied to the source, so the source keeps its own face shape.

    Privacy contract: the output is rendered from ``source_crop`` alone. From the driver a
    backend takes measurements only: its landmarks, one ``teeth`` bit per frame, and, when
    ``reads_driving_crops`` is True, what it measures on the driving crops (TPSMM's
    keypoints); otherwise the driving and neutral crops are passed as None.
    """

    name: str
    reads_driving_crops: bool

    def reenact(
        self,
        source_crop: np.ndarray,
        source_landmarks: np.ndarray,
        driving_crops: Iterable[np.ndarray | None],
        driving_landmarks: Iterable[np.ndarray],
        neutral_crop: np.ndarray | None,
        neutral_landmarks: np.ndarray,
        teeth: Iterable[bool] | None = None,
    ) -> Iterator[np.ndarray]: ...


def make_backend(name: str, weights: str | os.PathLike | None = None) -> ReenactBackend:
    """The backend called ``name`` (``"warp"`` or ``"reenact"``; the latter loads weights:
    ``weights`` path, or ``vox.pth.tar`` found in the weight folders)."""
    if name == "warp":
        from .landmark_warp import LandmarkWarpBackend

        return LandmarkWarpBackend()
    if name == "reenact":
        from ..weights import resolve_weights

        return _tpsmm_backend(str(resolve_weights("tpsmm", weights)))
    raise SettingsError(f"face backend {name!r} unknown: use one of {', '.join(BACKENDS)}")


@cache
def _tpsmm_backend(path: str) -> ReenactBackend:
    """TPSMM loaded once per process and weight file (a batch worker reuses it per clip)."""
    from .tpsmm_backend import TPSMMBackend

    return TPSMMBackend.from_weights(path)


class StillBackend:
    """The module switched off: the source face pasted unchanged on every frame. Not a
    user setting; the baseline the expression measurements compare against."""

    name = "still"
    reads_driving_crops = False

    def reenact(
        self,
        source_crop: np.ndarray,
        source_landmarks: np.ndarray,
        driving_crops: Iterable[np.ndarray | None],
        driving_landmarks: Iterable[np.ndarray],
        neutral_crop: np.ndarray | None,
        neutral_landmarks: np.ndarray,
        teeth: Iterable[bool] | None = None,
    ) -> Iterator[np.ndarray]:
        for _ in driving_landmarks:
            yield source_crop
