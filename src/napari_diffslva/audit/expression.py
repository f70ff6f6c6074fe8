"""Facial features that carry sign language grammar, from dlib's 68 landmarks.

In ASL the face is grammar: raised brows mark yes/no questions and topics, furrowed brows
wh-questions, eye aperture and mouth shapes modify signs, head tilts and nods mark clauses.
Each feature is normalised by face size (the distance between the eye centres), so a
feature means the same at any distance from the camera; head angles are in degrees.

Landmarks are ``(68, 2)`` (x, y) pixels in dlib's order (0-16 jaw, 17-21 and 22-26 the
brows, 27-35 nose, 36-41 and 42-47 the eyes, 48-59 outer and 60-67 inner lips); "left"
and "right" below are image left and right.
"""

from __future__ import annotations

import numpy as np

FEATURES = (
    "brow_raise",
    "brow_inner_gap",
    "eye_aperture",
    "mouth_open",
    "mouth_width",
    "head_pitch",
    "head_yaw",
    "head_roll",
)
UNITS = {
    "brow_raise": "eye distances, brows above the eyes (up = raised)",
    "brow_inner_gap": "eye distances between inner brow ends (down = furrowed)",
    "eye_aperture": "eye distances, lid to lid",
    "mouth_open": "eye distances, inner lip to inner lip",
    "mouth_width": "eye distances, corner to corner",
    "head_pitch": "degrees (positive = chin down)",
    "head_yaw": "degrees (positive = face turned to image right)",
    "head_roll": "degrees (positive = head tilted clockwise in the image)",
}

_LEFT_EYE, _RIGHT_EYE = slice(36, 42), slice(42, 48)
_LEFT_BROW, _RIGHT_BROW = slice(17, 22), slice(22, 27)

# A rough average face in millimetres, camera axes (x right, y down, z away from the
# camera), nose tip at the origin; our own anthropometric estimate, good to a few degrees.
_POSE_POINTS = (30, 8, 36, 45, 39, 42, 48, 54)
_POSE_MODEL = np.array(
    [
        (0.0, 0.0, 0.0),  # 30 nose tip
        (0.0, 65.0, 25.0),  # 8 chin
        (-45.0, -35.0, 35.0),  # 36 outer corner of the image-left eye
        (45.0, -35.0, 35.0),  # 45 outer corner of the image-right eye
        (-15.0, -33.0, 28.0),  # 39 inner corner, image-left eye
        (15.0, -33.0, 28.0),  # 42 inner corner, image-right eye
        (-25.0, 30.0, 25.0),  # 48 mouth corner, image left
        (25.0, 30.0, 25.0),  # 54 mouth corner, image right
    ],
    dtype=np.float64,
)


def head_pose(landmarks: np.ndarray, frame_hw: tuple[int, int]) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees from 2D landmarks and a generic 3D face (PnP).

    The camera is a pinhole with focal length equal to the frame's larger side and the
    centre in the middle: without calibration the angles are approximate, but they move
    with the head, which is what the audit compares.
    """
    import cv2

    h, w = frame_hw
    focal = float(max(h, w))
    camera = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]], dtype=np.float64)
    image_points = np.asarray(landmarks, dtype=np.float64)[list(_POSE_POINTS)]
    # Start from a frontal face at the distance its eye width implies: without a start the
    # solver can land on the mirrored solution (head turned 180 degrees).
    eye_width_px = max(float(np.linalg.norm(image_points[3] - image_points[2])), 1.0)
    depth = focal * (_POSE_MODEL[3, 0] - _POSE_MODEL[2, 0]) / eye_width_px
    nose = image_points[0]
    tvec = np.array(
        [[(nose[0] - w / 2) * depth / focal], [(nose[1] - h / 2) * depth / focal], [depth]]
    )
    ok, rvec, _ = cv2.solvePnP(
        _POSE_MODEL,
        image_points,
        camera,
        None,
        np.zeros((3, 1)),
        tvec,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return (float("nan"),) * 3
    rotation, _ = cv2.Rodrigues(rvec)
    # Rotation about x (pitch), y (yaw), z (roll) in the camera frame, R = Rz Ry Rx.
    pitch = np.degrees(np.arctan2(rotation[2, 1], rotation[2, 2]))
    yaw = np.degrees(np.arcsin(-np.clip(rotation[2, 0], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return float(pitch), float(-yaw), float(roll)


def expression_features(landmarks: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """The :data:`FEATURES` of one face: ``(F,)`` float64, NaN if landmarks are missing."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        return np.full(len(FEATURES), np.nan)
    left_eye, right_eye = pts[_LEFT_EYE].mean(0), pts[_RIGHT_EYE].mean(0)
    across = right_eye - left_eye
    size = float(np.hypot(*across))
    if size < 1e-6:
        return np.full(len(FEATURES), np.nan)
    across /= size
    up = np.array([across[1], -across[0]])  # perpendicular to the eye line, towards the brows

    brow_raise = 0.5 * (
        ((pts[_LEFT_BROW] - left_eye) @ up).mean() + ((pts[_RIGHT_BROW] - right_eye) @ up).mean()
    )
    brow_gap = np.linalg.norm(pts[21] - pts[22])

    def aperture(eye: slice) -> float:
        e = pts[eye]  # corners 0 and 3, upper lid 1, 2, lower lid 5, 4
        return 0.5 * (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4]))

    eyes = 0.5 * (aperture(_LEFT_EYE) + aperture(_RIGHT_EYE))
    mouth_open = np.mean(
        [np.linalg.norm(pts[a] - pts[b]) for a, b in ((61, 67), (62, 66), (63, 65))]
    )
    mouth_width = np.linalg.norm(pts[48] - pts[54])
    pitch, yaw, roll = head_pose(pts, frame_hw)
    return np.array(
        [
            brow_raise / size,
            brow_gap / size,
            eyes / size,
            mouth_open / size,
            mouth_width / size,
            pitch,
            yaw,
            roll,
        ]
    )


def clip_features(landmarks: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Features of every frame: landmarks ``(N, 68, 2)`` (NaN where missing) -> ``(N, F)``."""
    if not len(landmarks):
        return np.zeros((0, len(FEATURES)))
    return np.stack([expression_features(p, frame_hw) for p in np.asarray(landmarks)])


def pearson(a: np.ndarray, b: np.ndarray, min_frames: int = 3) -> float:
    """Pearson correlation over frames where both are finite; NaN when it is undefined
    (fewer than ``min_frames`` such frames or a constant series)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < min_frames:
        return float("nan")
    a, b = a[both] - a[both].mean(), b[both] - b[both].mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 1e-12 else float("nan")


def compare_features(original: np.ndarray, anonymized: np.ndarray) -> tuple[dict, dict]:
    """Per-feature Pearson correlation over time and mean absolute error (feature units)."""
    correlation, error = {}, {}
    for k, name in enumerate(FEATURES):
        a, b = original[:, k], anonymized[:, k]
        correlation[name] = pearson(a, b)
        both = np.isfinite(a) & np.isfinite(b)
        error[name] = float(np.abs(a[both] - b[both]).mean()) if both.any() else float("nan")
    return correlation, error
