"""Real frames with the signer's face (or mouth) replaced: the privacy tests' stand-ins.

A privacy mechanism that claims independence from the signer's face pixels is tested by
feeding it a copy of a real clip whose face region holds another real person's face
(aligned onto the signer's landmarks) or noise, with the same face track, and comparing.
"""

from __future__ import annotations

import numpy as np

from ..prepare.face_mask import _face_polygon
from ..prepare.faces import FaceTrack

INNER_MOUTH = np.arange(60, 68)


def face_part_mask(landmarks: np.ndarray, hw: tuple[int, int], part: str) -> np.ndarray:
    """Boolean frame mask of ``part``: ``"mouth"`` (the inner-mouth polygon, grown by a
    pixel) or ``"face"`` (jaw line and brows lifted to the forehead, convex)."""
    import cv2

    mask = np.zeros(hw, np.uint8)
    if part == "mouth":
        cv2.fillPoly(mask, [np.round(landmarks[INNER_MOUTH]).astype(np.int32)], 1)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    elif part == "face":
        hull = cv2.convexHull(np.round(_face_polygon(landmarks, 0.35)).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
    else:
        raise ValueError(f"unknown face part {part!r}: use mouth or face")
    return mask.astype(bool)


def aligned_face(
    image: np.ndarray, image_landmarks: np.ndarray, landmarks: np.ndarray, hw: tuple[int, int]
) -> np.ndarray:
    """``image`` moved (similarity) so its face's landmarks lie on ``landmarks``."""
    import cv2

    m, _ = cv2.estimateAffinePartial2D(
        np.asarray(image_landmarks, np.float32), np.asarray(landmarks, np.float32)
    )
    return cv2.warpAffine(image, m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR)


def replace_face_part(
    frames: np.ndarray,
    track: FaceTrack,
    part: str,
    stand_in: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 12,
) -> np.ndarray:
    """A copy of ``frames`` whose ``part`` is, on every face frame of ``track``, the
    ``stand_in`` face ``(image, landmarks)`` aligned onto the track's landmarks, or
    uniform noise when ``stand_in`` is None."""
    rng = np.random.default_rng(seed)
    out = np.array(frames, copy=True)
    hw = out.shape[1:3]
    for t in track.face_frames:
        region = face_part_mask(track.landmarks[t], hw, part)
        if stand_in is None:
            out[t][region] = rng.integers(0, 256, (int(region.sum()), 3), dtype=np.uint8)
        else:
            out[t][region] = aligned_face(*stand_in, track.landmarks[t], hw)[region]
    return out
