"""Weights-free reenactment: move the source face's 68 landmarks the way the driver's move.

The driver's landmark motion since a neutral reference frame (in aligned 256x256 crops, so
head translation/scale/roll are already removed) is scaled to the source's face size and
added to the source landmarks. The source crop is then warped piecewise-affinely onto those
target landmarks (one triangle mesh, one ``cv2.remap``). Two regions need care:

- mouth interior: a closed source mouth has no teeth or dark cavity to stretch, so when the
  target mouth opens wider than the source's, the inner-lip polygon is painted from the
  source's own colours (:mod:`~napari_diffslva.face.mouth`); the driver lends only one
  bit per frame (teeth visible or not), never its pixels;
- eyes: lids may close freely (blinks) but may open at most ``MAX_EYE_OPENING`` times the
  source's opening, so the eyeball texture is never stretched into a smear.

Points are (x, y) crop pixels (OpenCV order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import repeat

import numpy as np

from ..prepare.face_template import face_size
from .mouth import mouth_opening, needs_interior, paint_interior

EYES = (np.arange(36, 42), np.arange(42, 48))  # corners at local 0 and 3, lids 1,2 / 4,5
MAX_EYE_OPENING = 1.25


def expression_vector(landmarks: np.ndarray) -> np.ndarray:
    """Scale-free (mouth opening, eye opening, brow height) of one face, for comparing."""
    lm = np.asarray(landmarks, np.float64)
    eye_distance = max(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)), 1e-6)
    eyes = np.mean([_eye_opening(lm[eye]) for eye in EYES]) / eye_distance
    brows = np.linalg.norm(lm[17:27].mean(0) - lm[36:48].mean(0)) / eye_distance
    return np.array([mouth_opening(lm), eyes, brows])


def neutral_frame(landmarks: Iterable[np.ndarray | None], like: np.ndarray | None = None) -> int:
    """Index of the driving frame to measure motion from: the one whose expression is
    closest to ``like`` (the source face's landmarks), or the most closed mouth."""
    target = None if like is None else expression_vector(like)
    scores = []
    for lm in landmarks:
        if lm is None or not np.isfinite(lm).all():
            scores.append(np.inf)
        elif target is None:
            scores.append(mouth_opening(lm))
        else:
            scores.append(float(np.abs(expression_vector(lm) - target).sum()))
    if not scores or not np.isfinite(min(scores)):
        raise ValueError("no driving frame has landmarks")
    return int(np.argmin(scores))


def _limit_eye_opening(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Scale each target eye's lid offsets from its corner axis to at most
    ``MAX_EYE_OPENING`` times the source eye's opening."""
    out = target.copy()
    for eye in EYES:
        src_open = _eye_opening(source[eye])
        tgt_open = _eye_opening(target[eye])
        if tgt_open <= MAX_EYE_OPENING * src_open or tgt_open <= 1e-6:
            continue
        factor = MAX_EYE_OPENING * src_open / tgt_open
        a, b = target[eye[0]], target[eye[3]]
        axis = (b - a) / max(np.linalg.norm(b - a), 1e-6)
        for i in eye[[1, 2, 4, 5]]:
            rel = target[i] - a
            along = axis * rel.dot(axis)
            out[i] = a + along + (rel - along) * factor
    return out


def _eye_opening(eye: np.ndarray) -> float:
    return float(np.linalg.norm(eye[[1, 2]] - eye[[5, 4]], axis=1).mean())


def target_landmarks(source: np.ndarray, driving: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Source landmarks moved by the driver's motion since its neutral frame ("relative"
    mode: the motion is scaled by the ratio of face sizes, the source's shape is kept)."""
    source = np.asarray(source, np.float64)
    scale = face_size(source) / face_size(neutral)
    moved = source + (np.asarray(driving, np.float64) - np.asarray(neutral, np.float64)) * scale
    return _limit_eye_opening(moved, source)


def _border_points(h: int, w: int) -> np.ndarray:
    """Fixed anchors on the crop border so the whole crop is meshed and its edge stays put."""
    xs = np.linspace(0, w - 1, 5)
    ys = np.linspace(0, h - 1, 5)
    pts = [(x, 0) for x in xs] + [(x, h - 1) for x in xs]
    pts += [(0, y) for y in ys[1:-1]] + [(w - 1, y) for y in ys[1:-1]]
    return np.array(pts, np.float64)


def piecewise_affine_warp(
    image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray
) -> np.ndarray:
    """Warp ``image`` so that ``src_points`` land on ``dst_points`` (same-size output).

    The destination is Delaunay-triangulated (with border anchors that stay fixed); every
    output pixel looks up its triangle in a rasterised index map and samples the source
    through that triangle's affine map, in one ``cv2.remap``.
    """
    import cv2
    from scipy.spatial import Delaunay

    h, w = image.shape[:2]
    border = _border_points(h, w)
    src = np.vstack([np.asarray(src_points, np.float64), border])
    dst = np.vstack([np.asarray(dst_points, np.float64), border])
    triangles = Delaunay(dst).simplices
    index = np.full((h, w), -1, np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(index, np.round(dst[tri]).astype(np.int32), t)
    # Affine dst -> src per triangle: src_tri (2x3) @ inv([dst_tri; 1]) (3x3).
    dst_h = np.concatenate([dst[triangles], np.ones((len(triangles), 3, 1))], axis=2)
    affine = src[triangles].transpose(0, 2, 1) @ np.linalg.pinv(dst_h.transpose(0, 2, 1))
    covered = index >= 0
    if not covered.all():  # rounding gaps at triangle seams: borrow the nearest triangle
        _, nearest = cv2.distanceTransformWithLabels(
            (~covered).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
        )
        labels = np.zeros(nearest.max() + 1, np.int32)
        labels[nearest[covered]] = index[covered]
        index = np.where(covered, index, labels[nearest])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    a = affine[index]
    map_x = (a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]).astype(np.float32)
    map_y = (a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class LandmarkWarpBackend:
    """The weights-free :class:`~napari_diffslva.face.backends.ReenactBackend`."""

    name = "warp"

    reads_driving_crops = False  # landmarks and the teeth bit are all it uses

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
        """One reenacted crop per driving landmark set, rendered from the source crop alone
        (the driving and neutral crops are not read; ``teeth`` says per frame whether the
        driver shows teeth, default no)."""
        source_landmarks = np.asarray(source_landmarks, np.float64)
        shows_teeth = repeat(False) if teeth is None else teeth
        for lm, show in zip(driving_landmarks, shows_teeth, strict=False):
            target = target_landmarks(
                source_landmarks, np.asarray(lm, np.float64), neutral_landmarks
            )
            warped = piecewise_affine_warp(source_crop, source_landmarks, target)
            if needs_interior(target, source_landmarks):
                warped = paint_interior(warped, target, bool(show))
            yield warped
