"""The signer's expression on a face that is not the signer's: retargeted landmarks, drawn.

What the face-region control map may take from the signer is motion, never shape:

- head pose: a similarity (position, scale, roll) per frame, fitted on the landmarks that
  barely move with expression (:data:`~.face_template.STABLE`) against the signer's own
  neutral face; yaw and pitch are not modelled separately, they reach the sketch as the
  part of the landmark motion a similarity does not explain;
- expression: each landmark's displacement from the signer's neutral face (the mean of the
  frames with the most closed mouth), with the head pose removed and divided by the
  signer's face size, as the face module and TPSMM's "relative" mode measure it.

That displacement is added to the template (:mod:`.face_template`), placed where the
signer's head is, and drawn as soft lines (:func:`draw_sketch`). The signer's proportions
cancel in the displacement; what is left of them is a second-order effect of the pose fit.

Points are (x, y) pixels; a 2-D similarity is a pair of complex numbers ``z -> a z + b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import erf, sqrt

import numpy as np

from .face_template import STABLE, face_size, hairline_arc
from .faces import DETECTED, EDITED, LOST, FaceTrack

NEUTRAL_FRAMES = 5  # frames averaged into the signer's neutral face
# Pairs (upper, lower) that may meet but not cross: inner lips, eyelids.
_NO_CROSSING = ((61, 67), (62, 66), (63, 65), (37, 41), (38, 40), (43, 47), (44, 46))
# Strokes of the sketch: landmark runs, closed or not, and their strength.
STROKES = (
    (np.arange(0, 17), False, 1.0),  # jaw
    (np.arange(17, 22), False, 1.0),  # brows
    (np.arange(22, 27), False, 1.0),
    (np.arange(27, 31), False, 0.6),  # nose bridge (HED draws it faintly)
    (np.arange(31, 36), False, 1.0),  # nostrils
    (np.arange(36, 42), True, 1.0),  # eyes
    (np.arange(42, 48), True, 1.0),
    (np.arange(48, 60), True, 1.0),  # outer lips
    (np.arange(60, 68), True, 1.0),  # inner lips (a closed mouth is one line)
)
HAIRLINE_STRENGTH = 0.7
LINE_WIDTH = 0.02  # of the face size: the core width of a stroke
LINE_BLUR = 0.012  # of the face size: the Gaussian that softens it like an HED line


def _complex(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64)
    return p[..., 0] + 1j * p[..., 1]


def _points(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


@dataclass(frozen=True)
class Similarity:
    """``z -> a z + b`` on (x, y) points as complex numbers: |a| the scale, arg(a) the roll."""

    a: complex
    b: complex

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return _points(self.a * _complex(points) + self.b)

    def inverse(self) -> Similarity:
        return Similarity(1 / self.a, -self.b / self.a)

    def after(self, first: Similarity) -> Similarity:
        """This similarity applied after ``first``."""
        return Similarity(self.a * first.a, self.a * first.b + self.b)

    @property
    def scale(self) -> float:
        return abs(self.a)

    @property
    def angle(self) -> float:
        return float(np.angle(self.a))


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity:
    """The least-squares similarity taking ``source`` points onto ``target`` points."""
    zs, zt = _complex(source), _complex(target)
    cs, ct = zs.mean(), zt.mean()
    a = np.vdot(zs - cs, zt - ct) / max(float(np.vdot(zs - cs, zs - cs).real), 1e-12)
    return Similarity(complex(a), complex(ct - a * cs))


def head_placement(landmarks: np.ndarray) -> Similarity:
    """Canonical -> frame for a face: centred on the :data:`STABLE` centroid, rolled like
    its eye line, scaled by its face size (the four numbers of a head pose)."""
    lm = np.asarray(landmarks, np.float64)
    eyes = lm[42:48].mean(0) - lm[36:42].mean(0)
    a = face_size(lm) * np.exp(1j * np.arctan2(eyes[1], eyes[0]))
    return Similarity(complex(a), complex(_complex(lm[STABLE]).mean()))


def _mouth_gap(lm: np.ndarray) -> float:
    """Inner-lip gap over the eye corners' distance: orders one person's frames by how
    open the mouth is, the same way for any face driven by the same motion."""
    gap = np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1).mean()
    return float(gap / max(np.linalg.norm(lm[45] - lm[36]), 1e-6))


def neutral_face(landmarks: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The signer's neutral face: the mean of the :data:`NEUTRAL_FRAMES` frames among
    ``frames`` with the most closed mouth, each aligned to the first by its head pose."""
    chosen = sorted(frames, key=lambda t: _mouth_gap(landmarks[t]))[:NEUTRAL_FRAMES]
    first = landmarks[chosen[0]]
    aligned = [fit_similarity(landmarks[t][STABLE], first[STABLE])(landmarks[t]) for t in chosen]
    return np.mean(aligned, axis=0)


def filled_landmarks(track: FaceTrack) -> tuple[np.ndarray, np.ndarray]:
    """``(landmarks (T, 68, 2), gap (T,))``: every frame of a track with at least one face
    gets landmarks, LOST frames interpolated between the face frames around them (held at
    the clip ends); ``gap`` is the distance in frames to the nearest face frame."""
    known = np.flatnonzero((track.status != LOST) & np.isfinite(track.landmarks).all(axis=(1, 2)))
    t = np.arange(len(track))
    flat = track.landmarks.reshape(len(track), -1).astype(np.float64)
    filled = np.stack([np.interp(t, known, flat[known, k]) for k in range(flat.shape[1])], 1)
    gap = np.abs(t[:, None] - known[None, :]).min(axis=1)
    return filled.reshape(-1, 68, 2), gap


def _uncrossed(shape: np.ndarray) -> np.ndarray:
    """Lower lids and lips pushed back to their upper partner where they crossed it."""
    out = shape.copy()
    for upper, lower in _NO_CROSSING:
        if out[lower, 1] < out[upper, 1]:
            out[[upper, lower], 1] = out[[upper, lower], 1].mean()
    return out


class Retargeting:
    """The signer's expression and head pose from a face track, on a template face.

    ``landmarks`` is a track's ``(T, 68, 2)`` landmarks (any pixel grid), ``faces`` its
    face frames (the neutral face is chosen among them), ``template`` a canonical shape.
    """

    def __init__(self, landmarks: np.ndarray, faces: np.ndarray, template: np.ndarray) -> None:
        self.landmarks = np.asarray(landmarks, np.float64)
        self.template = np.asarray(template, np.float64)
        self.neutral = neutral_face(self.landmarks, faces)
        self.base = head_placement(self.neutral)

    @classmethod
    def from_track(cls, track: FaceTrack, template: np.ndarray, scale_xy=(1.0, 1.0)):
        """The retargeting of a track whose landmarks are scaled by ``scale_xy`` (source to
        working pixels); None when the track has no face at all."""
        if not (track.status != LOST).any():
            return None
        landmarks, _ = filled_landmarks(track)
        seen = np.flatnonzero(np.isin(track.status, (DETECTED, EDITED)))
        faces = seen if seen.size else np.flatnonzero(track.status != LOST)
        return cls(landmarks * np.asarray(scale_xy, np.float64), faces, template)

    def pose(self, t: int) -> Similarity:
        """Neutral -> frame ``t``: the head's motion since the neutral face."""
        return fit_similarity(self.neutral[STABLE], self.landmarks[t][STABLE])

    def placement(self, t: int) -> Similarity:
        """Canonical -> frame ``t`` pixels."""
        return self.pose(t).after(self.base)

    def expression(self, t: int) -> np.ndarray:
        """``(68, 2)`` canonical displacement of frame ``t`` from the neutral face."""
        unposed = self.pose(t).inverse()(self.landmarks[t])
        return _points((_complex(unposed) - _complex(self.neutral)) / self.base.a)

    def canonical(self, t: int) -> np.ndarray:
        """The template with frame ``t``'s expression, canonical coordinates."""
        return _uncrossed(self.template + self.expression(t))

    def signer_canonical(self, t: int) -> np.ndarray:
        """The signer's own landmarks of frame ``t`` in canonical coordinates (for the
        region the sketch must cover, never drawn)."""
        return self.placement(t).inverse()(self.landmarks[t])

    def sketch_points(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(landmarks (68, 2), hairline (K, 2))`` of frame ``t``'s sketch, in pixels."""
        shape = self.canonical(t)
        place = self.placement(t)
        return place(shape), place(hairline_arc(shape))


def _spline(points: np.ndarray, closed: bool, per_segment: int = 8) -> np.ndarray:
    """A Catmull-Rom curve through ``points`` (``(M, 2)`` samples), for smooth strokes."""
    p = np.asarray(points, np.float64)
    if closed:
        ext = np.vstack([p[-1:], p, p[:2]])
    else:
        ext = np.vstack([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    s = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for k in range(len(ext) - 3):
        p0, p1, p2, p3 = ext[k : k + 4]
        out.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * s
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2
                + (3 * p1 - p0 - 3 * p2 + p3) * s**3
            )
        )
    out.append(p[:1] if closed else p[-1:])
    return np.vstack(out)


def draw_sketch(
    landmarks: np.ndarray, hairline: np.ndarray | None, shape_hw: tuple[int, int]
) -> np.ndarray:
    """Soft, HED-like lines through a face's 68 landmarks (and its hairline arc): float32
    ``(H, W)`` in [0, 1]. Width and softness follow the face size."""
    import cv2

    size = face_size(landmarks)
    width = max(int(round(LINE_WIDTH * size)), 1)
    sigma = max(LINE_BLUR * size, 0.7)
    canvas = np.zeros(shape_hw[:2], np.uint8)
    runs = [(np.asarray(landmarks)[idx], closed, value) for idx, closed, value in STROKES]
    if hairline is not None:
        runs.insert(0, (np.asarray(hairline), False, HAIRLINE_STRENGTH))
    shift = 4  # sub-pixel precision of the polylines
    for points, closed, value in runs:
        curve = np.round(_spline(points, closed) * (1 << shift)).astype(np.int32)
        cv2.polylines(canvas, [curve], closed, int(round(255 * value)), width, cv2.LINE_AA, shift)
    soft = cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), sigma)
    peak = erf(width / (2 * sqrt(2) * sigma))  # a blurred line's height at its centre
    line = np.clip(soft / peak, 0.0, 1.0)
    return (line * (2.0 - line)).astype(np.float32)  # the same ease-out as the soft edges
