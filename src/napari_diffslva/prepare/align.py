"""Aligned square face crops (FFHQ-style framing) and pasting them back.

Transforms are (2, 3) similarity matrices mapping source (x, y) pixels to crop pixels,
the form ``cv2.warpAffine`` takes. The framing follows FFHQ's published recipe: the crop
side is ``2 * max(2.0 * eye distance, 1.8 * eye-to-mouth distance)``, centred a tenth of
the way from the eyes to the mouth, oriented by the eye line and the face's vertical
axis. That leaves hair, chin and some margin inside the crop, as TPSMM's 256 px VoxCeleb
model expects.
"""

from __future__ import annotations

import numpy as np

from .faces import LOST, FaceTrack


def _frame_params(landmarks: np.ndarray) -> np.ndarray:
    """(centre x, centre y, side length, angle) of the crop square in source pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (lm[48] + lm[54]) / 2 - eye_avg
    # horizontal axis: the eye line plus the eye-to-mouth axis turned by -90 degrees
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    angle = np.arctan2(x_axis[1], x_axis[0])
    half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    centre = eye_avg + 0.1 * eye_to_mouth
    return np.array([centre[0], centre[1], 2 * half, angle])


def _matrix(params: np.ndarray, size: int) -> np.ndarray:
    cx, cy, side, angle = params
    k = size / side
    cos, sin = k * np.cos(angle), k * np.sin(angle)
    # rotate by -angle and scale about the centre, then move the centre to the crop centre
    rot = np.array([[cos, sin], [-sin, cos]])
    shift = np.array([size / 2, size / 2]) - rot @ np.array([cx, cy])
    return np.hstack([rot, shift[:, None]])


def _smooth_runs(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time within each run of consecutive valid frames."""
    if sigma <= 0:
        return values.copy()
    out = values.copy()
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    t = 0
    while t < len(values):
        if not valid[t]:
            t += 1
            continue
        end = t
        while end < len(values) and valid[end]:
            end += 1
        run = values[t:end]
        for i in range(len(run)):
            idx = i + offsets
            keep = (idx >= 0) & (idx < len(run))
            weights = kernel[keep]
            out[t + i] = (weights[:, None] * run[idx[keep]]).sum(0) / weights.sum()
        t = end
    return out


def alignment_transforms(track: FaceTrack, size: int = 256, *, smooth: float = 1.5) -> np.ndarray:
    """(T, 2, 3) float64 source->crop similarity transforms, NaN on LOST frames.

    Framing parameters (centre, side, angle) come from the 68 landmarks (eyes, mouth) and
    are smoothed with a Gaussian of ``smooth`` frames over each run of tracked frames, so
    landmark jitter does not shake the crop (0 turns smoothing off).
    """
    count = len(track)
    valid = (track.status != LOST) & ~np.isnan(track.landmarks).any(axis=(1, 2))
    params = np.full((count, 4), np.nan)
    for t in np.flatnonzero(valid):
        params[t] = _frame_params(track.landmarks[t])
    if valid.any():
        params[valid, 3] = np.unwrap(params[valid, 3])
    params = _smooth_runs(params, valid, smooth)
    transforms = np.full((count, 2, 3), np.nan)
    for t in np.flatnonzero(valid):
        transforms[t] = _matrix(params[t], size)
    return transforms


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine transform to (N, 2) (x, y) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(M, dtype=np.float64)[:, :2].T + np.asarray(M)[:, 2]


def crop_face(frame: np.ndarray, M: np.ndarray, size: int = 256) -> np.ndarray:
    """The (size, size, 3) uint8 face crop of ``frame`` under transform ``M``."""
    import cv2

    return cv2.warpAffine(
        np.ascontiguousarray(frame),
        np.asarray(M, dtype=np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT101,
    )


def paste_back(frame: np.ndarray, crop: np.ndarray, M: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``frame`` with ``crop`` blended in through the inverse of ``M``.

    ``mask`` is (size, size) float in [0, 1] in crop space (1 = take the crop). Returns a
    new uint8 frame; pixels the mask does not reach are unchanged.
    """
    import cv2

    h, w = frame.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    M = np.asarray(M, dtype=np.float64)
    warped = cv2.warpAffine(np.ascontiguousarray(crop), M, (w, h), flags=flags)
    alpha = cv2.warpAffine(
        np.ascontiguousarray(mask, dtype=np.float32),
        M,
        (w, h),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )[..., None]
    blended = frame.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
