"""Which frames make good anchors: a frontal, unoccluded face and both hands in view.

An anchor's translation fixes the new identity and the look of every frame it serves, so
it should show the face plainly and the hands. Scores come from what the prepare stage
already has: the face track (a really detected face, not interpolated or occluded, and how
frontal it is from its 68 landmarks) and the frame itself (hands found as skin-coloured
regions outside the face, with the skin colour sampled from the signer's own cheeks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

NOSE_TIP, LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 30, 36, 45
CHEEKS = (2, 3, 13, 14, 29, 31, 35)  # landmarks that bound skin without eyes or mouth
MIN_HAND_AREA = 0.15  # of the face box area


def face_score(track: Any, i: int) -> float:
    """0 unless the face was really found (detected or edited, not occluded); else how
    frontal it is, 1 = nose tip midway between the outer eye corners, 0 = in profile."""
    from .faces import DETECTED, EDITED

    if track.status[i] not in (DETECTED, EDITED) or track.occluded[i]:
        return 0.0
    points = track.landmarks[i]
    left, right = points[LEFT_EYE_OUTER, 0], points[RIGHT_EYE_OUTER, 0]
    if not np.isfinite(points).all() or right - left <= 0:
        return 0.0
    where = (points[NOSE_TIP, 0] - left) / (right - left)
    return float(np.clip(1 - 2 * abs(where - 0.5), 0.0, 1.0))


def hands_in_view(frame: np.ndarray, landmarks: np.ndarray) -> int:
    """Skin-coloured regions of at least a sixth of the face's size outside the face: the
    hands in view (0, 1 or 2). ``landmarks`` (68, 2) are in ``frame``'s pixels."""
    import cv2

    ycrcb = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    hull = cv2.convexHull(landmarks[list(CHEEKS)].astype(np.int32))
    cheeks = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(cheeks, hull, 1)
    samples = ycrcb[cheeks > 0][:, 1:]
    if len(samples) < 10:
        return 0
    mean, spread = samples.mean(0), samples.std(0) + 2.0
    distance = np.abs((ycrcb[..., 1:] - mean) / spread).max(-1)
    skin = (distance < 2.5).astype(np.uint8)
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    grow = 0.35 * (x1 - x0)
    face = (int(x0 - grow), int(y0 - 2 * grow), int(x1 + grow), int(y1 + grow))
    skin[max(face[1], 0) : max(face[3], 0), max(face[0], 0) : max(face[2], 0)] = 0
    skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(skin)
    big = stats[1:, cv2.CC_STAT_AREA] >= MIN_HAND_AREA * (x1 - x0) * (y1 - y0)
    return int(min(big.sum(), 2))


def anchor_score(track: Any, i: int, frame: np.ndarray | None = None, scale_xy=(1.0, 1.0)):
    """Face score times a hands factor (1/3, 2/3, 1 for 0, 1, 2 hands in view); the face
    alone without ``frame``. ``scale_xy``: frame pixels per track (source) pixel."""
    face = face_score(track, i)
    if face == 0.0 or frame is None:
        return face
    landmarks = track.landmarks[i] * np.asarray(scale_xy, np.float32)
    return face * (1 + hands_in_view(frame, landmarks)) / 3


def choose_anchor(track: Any, frames: int, reach: float = 0.125) -> int:
    """The frame near the middle (within ``reach`` of the clip) with the most frontal,
    unoccluded face (ties: nearest the middle); the middle when no face was found."""
    middle = frames // 2
    half = max(1, int(frames * reach))
    window = range(max(0, middle - half), min(frames, middle + half + 1))
    best = max(window, key=lambda i: (face_score(track, i), -abs(i - middle)))
    if face_score(track, best) > 0:
        return best
    from .faces import DETECTED, EDITED

    good = np.flatnonzero(np.isin(track.status, (DETECTED, EDITED)))
    return middle if good.size == 0 else int(good[np.argmin(np.abs(good - middle))])


def scorer(inputs: Any) -> Callable[[int], float] | None:
    """Anchor scores of a prepared clip's frames (at working size), or None for inputs
    without a face track."""
    track, geometry = getattr(inputs, "track", None), getattr(inputs, "geometry", None)
    if track is None or geometry is None:
        return None
    scale_y, scale_x = geometry.scale_yx
    return lambda i: anchor_score(track, i, inputs.frame(i), (scale_x, scale_y))
