"""A neutral 68-point face that is nobody's: the shape the face-region sketch is drawn on.

The template is a symmetric face with average proportions, written here as round numbers
(not measured on any person): jaw, brows, nose, eyes and a closed mouth in the 68-point
order of dlib/iBUG 300-W. Coordinates are canonical: x right, y down, origin at the
centroid of :data:`STABLE` (nose bridge, nostrils, eye corners), eyes level, and the
face's size (square root of the landmarks' convex-hull area) is 1.

:func:`template_shape` varies the proportions (jaw width, chin, eye spacing and size,
brows, nose, mouth) with a seed, for a new face shape per seed; seed 0 is the template.
"""

from __future__ import annotations

from functools import cache

import numpy as np

# Landmarks that barely move with expression: nose bridge, nostril wings, eye corners.
# Head pose is measured on them; the canonical origin is their centroid.
STABLE = np.array([27, 28, 29, 30, 31, 35, 36, 39, 42, 45])

# The image-left half and the midline of the template (x <= 0), before normalisation.
# Mirrored halves are filled in by _mirror; indices follow the 68-point scheme.
_LEFT = {
    # jaw, from the image-left ear down to the chin (8)
    0: (-0.555, -0.06), 1: (-0.545, 0.09), 2: (-0.525, 0.24), 3: (-0.49, 0.385),
    4: (-0.435, 0.525), 5: (-0.35, 0.65), 6: (-0.245, 0.75), 7: (-0.125, 0.825),
    8: (0.0, 0.85),
    # image-left brow, outer to inner
    17: (-0.435, -0.165), 18: (-0.37, -0.24), 19: (-0.275, -0.27), 20: (-0.175, -0.268),
    21: (-0.075, -0.238),
    # nose bridge (27-30) and the nostril base (31-33)
    27: (0.0, -0.14), 28: (0.0, -0.047), 29: (0.0, 0.046), 30: (0.0, 0.14),
    31: (-0.125, 0.21), 32: (-0.065, 0.228), 33: (0.0, 0.243),
    # image-left eye: outer corner, upper lid, inner corner, lower lid
    36: (-0.325, -0.105), 37: (-0.268, -0.144), 38: (-0.203, -0.145), 39: (-0.143, -0.106),
    40: (-0.205, -0.095), 41: (-0.268, -0.093),
    # outer lips: left corner, upper lip to its middle (51), lower lip middle (57) and left
    48: (-0.235, 0.415), 49: (-0.155, 0.368), 50: (-0.065, 0.347), 51: (0.0, 0.356),
    57: (0.0, 0.543), 58: (-0.075, 0.532), 59: (-0.16, 0.495),
    # inner lips of a closed mouth: the upper and lower inner lines meet
    60: (-0.205, 0.418), 61: (-0.065, 0.426), 62: (0.0, 0.429), 66: (0.0, 0.431),
    67: (-0.065, 0.428),
}  # fmt: skip
# image-right point -> its image-left mirror
_MIRROR = {
    **{16 - i: i for i in range(8)},
    **{26 - i: 17 + i for i in range(5)},
    35: 31, 34: 32,
    45: 36, 44: 37, 43: 38, 42: 39, 47: 40, 46: 41,
    54: 48, 53: 49, 52: 50, 55: 59, 56: 58,
    64: 60, 63: 61, 65: 67,
}  # fmt: skip

# Proportions a seed varies, each (landmarks, what changes, relative standard deviation).
_JAW = np.arange(0, 17)
_CHIN = np.arange(4, 13)
_BROWS = np.arange(17, 27)
_NOSE = np.arange(28, 36)
_NOSTRILS = np.arange(31, 36)
_EYES = (np.arange(36, 42), np.arange(42, 48))
_MOUTH = np.arange(48, 68)
VARIATION = 0.06  # relative spread of a varied proportion (one standard deviation)


def _mirror() -> np.ndarray:
    shape = np.zeros((68, 2))
    for i, xy in _LEFT.items():
        shape[i] = xy
    for right, left in _MIRROR.items():
        shape[right] = (-_LEFT[left][0], _LEFT[left][1])
    return shape


def face_size(points: np.ndarray) -> float:
    """Square root of the convex-hull area of the points (a scale for a face)."""
    import cv2

    hull = cv2.convexHull(np.asarray(points, np.float32))
    return float(np.sqrt(max(cv2.contourArea(hull), 1e-12)))


def normalised(shape: np.ndarray) -> np.ndarray:
    """``shape`` moved so :data:`STABLE` is centred at 0 and scaled to face size 1."""
    shape = np.asarray(shape, np.float64)
    return (shape - shape[STABLE].mean(0)) / face_size(shape)


@cache
def _template() -> np.ndarray:
    return normalised(_mirror())


def _scale_about(shape: np.ndarray, idx: np.ndarray, factor: tuple[float, float], centre) -> None:
    shape[idx] = centre + (shape[idx] - centre) * np.asarray(factor)


def template_shape(seed: int = 0) -> np.ndarray:
    """The canonical template ``(68, 2)``; ``seed > 0`` gives a face with other proportions
    (each varied by about :data:`VARIATION`, symmetric, still a plausible face)."""
    shape = _template().copy()
    if seed == 0:
        return shape
    r = np.clip(
        np.random.default_rng(seed).normal(0.0, VARIATION, 9), -2 * VARIATION, 2 * VARIATION
    )
    origin = np.zeros(2)
    eye_line = np.array([0.0, shape[36:48, 1].mean()])
    _scale_about(shape, _JAW, (1 + r[0], 1.0), origin)  # jaw width
    _scale_about(shape, _CHIN, (1.0, 1 + r[1]), eye_line)  # chin length
    for k, eye in enumerate(_EYES):  # eye spacing (both eyes and brows move apart)
        side = np.sign(shape[eye, 0].mean())
        shape[eye, 0] += side * r[2] * 0.2
        shape[_BROWS[5 * k : 5 * k + 5], 0] += side * r[2] * 0.2
        _scale_about(shape, eye, (1 + r[3], 1 + r[3]), shape[eye].mean(0))  # eye size
    shape[_BROWS, 1] += r[4] * 0.5 * (shape[_BROWS, 1] - eye_line[1])  # brow height
    _scale_about(shape, _NOSE, (1.0, 1 + r[5]), shape[27])  # nose length
    _scale_about(shape, _NOSTRILS, (1 + r[6], 1.0), shape[33])  # nose width
    mouth_centre = shape[_MOUTH].mean(0)
    _scale_about(shape, _MOUTH, (1 + r[7], 1 + r[8]), mouth_centre)  # mouth width, lips
    return normalised(shape)


def hairline_arc(shape: np.ndarray, points: int = 24) -> np.ndarray:
    """``(points, 2)`` canonical points of the upper head outline: from the top of the jaw
    (landmark 0) up over the forehead to landmark 16, an elliptic arc as high above the
    brows as the brows are above the nose base (the face's upper third)."""
    shape = np.asarray(shape, np.float64)
    left, right = shape[0], shape[16]
    centre = (left + right) / 2
    half_width = np.linalg.norm(right - left) / 2
    top = shape[17:27, 1].min() - (shape[33, 1] - shape[17:27, 1].mean())
    half_height = centre[1] - top
    angles = np.linspace(np.pi, 2 * np.pi, points)
    return np.column_stack(
        [centre[0] + half_width * np.cos(angles), centre[1] + half_height * np.sin(angles)]
    )
