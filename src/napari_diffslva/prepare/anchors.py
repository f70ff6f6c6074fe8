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
    """Hands in view (0, 1 or 2): skin-coloured regions at least a sixth of the face's
    size that touch neither the face (so not the neck or a hand on the face) nor the
    frame's border (a skin-toned wall does). ``landmarks`` (68, 2) are in ``frame``'s
    pixels."""
    import cv2

    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    fw, fh = x1 - x0, y1 - y0
    skin = _skin_like_cheeks(frame, landmarks).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, kernel)  # noise and dithering
    skin = cv2.morphologyEx(skin, cv2.MORPH_CLOSE, kernel)
    face = np.zeros_like(skin)
    box = [int(v) for v in (x0 - 0.15 * fw, y0 - 0.5 * fh, x1 + 0.15 * fw, y1 + 0.1 * fh)]
    face[max(box[1], 0) : max(box[3], 0), max(box[0], 0) : max(box[2], 0)] = 1
    skin[face > 0] = 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(skin)
    near_face = np.unique(labels[cv2.dilate(face, np.ones((7, 7), np.uint8)) > 0])
    h, w = frame.shape[:2]
    hands = 0
    for k in range(1, count):
        left, top, width, height, area = stats[k]
        on_border = left == 0 or top == 0 or left + width >= w or top + height >= h
        if area >= MIN_HAND_AREA * fw * fh and not on_border and k not in near_face:
            hands += 1
    return min(hands, 2)


def _skin_like_cheeks(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Pixels whose chroma (YCrCb) is within 2.5 spreads of the signer's cheeks'."""
    import cv2

    ycrcb = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    hull = cv2.convexHull(landmarks[list(CHEEKS)].astype(np.int32))
    cheeks = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(cheeks, hull, 1)
    samples = ycrcb[cheeks > 0][:, 1:]
    if len(samples) < 10:
        return np.zeros(frame.shape[:2], bool)
    mean, spread = samples.mean(0), samples.std(0) + 2.0
    return np.abs((ycrcb[..., 1:] - mean) / spread).max(-1) < 2.5


def anchor_score(track: Any, i: int, frame: np.ndarray | None = None) -> float:
    """Face score times a hands factor (1/3, 2/3, 1 for 0, 1, 2 hands in view); the face
    alone without ``frame`` (the source frame: the track's pixels)."""
    face = face_score(track, i)
    if face == 0.0 or frame is None:
        return face
    return face * (1 + hands_in_view(frame, track.landmarks[i])) / 3


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
    """Anchor scores of a prepared clip's frames (its face track and source frames), or
    None for inputs without a face track."""
    track, reader = getattr(inputs, "track", None), getattr(inputs, "reader", None)
    if track is None or reader is None:
        return None
    return lambda i: anchor_score(track, i, reader[i])
