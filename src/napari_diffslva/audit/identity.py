"""Is the signer still recognisable? dlib's ResNet face embeddings and their L2 distance.

dlib's 128-d embeddings are trained so that two photos of one person lie closer than 0.6
(L2) and of different people farther; they are not zero-centred (unrelated faces still
have cosine similarity 0.8 and more), so the distance, not the cosine, is the measure.
Points are (x, y) pixels (dlib order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import dlib_models
from ..prepare.faces import FaceBox, detect_faces, face_landmarks

SAME_PERSON_THRESHOLD = 0.6  # dlib's published operating point for its face embedding
_HOG_MIN_FACE = 90  # px; HOG's 80 px window needs about this much face (upsample below)
SAME_PLACE_IOU = 0.5  # a found face overlapping the original's box this much is in place


def face_embedding(frame: np.ndarray, box: FaceBox, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-d embedding of the face with these 68 (x, y) landmarks: ``(128,)`` float64.

    The landmarks align the face chip (dlib's own alignment), so pass the landmarks of
    this very frame.
    """
    import dlib

    pts = np.asarray(landmarks, dtype=np.float64)
    rect = dlib.rectangle(
        int(round(box.x0)), int(round(box.y0)), int(round(box.x1)) - 1, int(round(box.y1)) - 1
    )
    shape = dlib.full_object_detection(
        rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts]
    )
    image = np.ascontiguousarray(frame, dtype=np.uint8)
    return np.asarray(
        dlib_models.face_encoder().compute_face_descriptor(image, shape, 0), dtype=np.float64
    )


def signer_reference(embeddings: np.ndarray) -> np.ndarray:
    """One embedding for the signer: the mean over the original's frames (less sensitive
    to one frame's pose or blur than any single frame)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or not len(embeddings):
        raise ValueError("signer_reference needs at least one embedding")
    return embeddings.mean(axis=0)


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """L2 distance between two dlib embeddings (same person below :data:`SAME_PERSON_THRESHOLD`)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def _upsample_for(face_width: float) -> int:
    """HOG upsampling steps (0..2) that bring a face of this width up to the window size."""
    if face_width <= 0:
        return 1
    return int(min(2, max(0, math.ceil(math.log2(_HOG_MIN_FACE / face_width)))))


def box_iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes (0 = apart, 1 = the same)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    inter = max(w, 0.0) * max(h, 0.0)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def locate_face_near(frame: np.ndarray, near: FaceBox, margin: float = 1.0) -> FaceBox | None:
    """The face in ``frame`` closest to where ``near`` is, or None if a detector finds none.

    An anonymized face should sit where the original's was, so the search is a crop of
    ``near`` widened by ``margin`` face sizes on every side (cheaper than the whole frame
    and immune to faces elsewhere, e.g. on a poster or a shirt).
    """
    h, w = frame.shape[:2]
    size = max(near.width, near.height)
    x0, y0 = max(int(near.x0 - margin * size), 0), max(int(near.y0 - margin * size), 0)
    x1, y1 = min(int(near.x1 + margin * size) + 1, w), min(int(near.y1 + margin * size) + 1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
    found = detect_faces(crop, upsample=_upsample_for(near.width))
    if not found:
        return None
    cx, cy = near.center
    best = min(found, key=lambda b: math.hypot(b.center[0] + x0 - cx, b.center[1] + y0 - cy))
    return FaceBox(best.x0 + x0, best.y0 + y0, best.x1 + x0, best.y1 + y0, best.score)


def face_in_box(frame: np.ndarray, box: FaceBox) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks ``(68, 2)`` (x, y) and embedding ``(128,)`` of the face in ``box``."""
    landmarks = face_landmarks(frame, box)
    return landmarks, face_embedding(frame, box, landmarks)


@dataclass(frozen=True)
class FaceInPlace:
    """The face of a new (anonymized) frame where the original's face was."""

    landmarks: np.ndarray  # (68, 2) (x, y)
    embedding: np.ndarray  # (128,)
    detected: bool  # a detector found it; else it was fitted in the original's box
    box: FaceBox  # the detector's box, or the original's box when fitted


def face_in_place(frame: np.ndarray, box: FaceBox) -> FaceInPlace:
    """The face of ``frame`` where ``box`` (the original's face) is: the nearest face a
    detector finds there, measured in ``box`` when it stayed in place (the landmark fit
    depends on the box, and detector jitter is not a change of face); when no detector
    finds one, the face fitted in ``box`` anyway (a face a detector misses can still be
    recognised)."""
    found = locate_face_near(frame, box)
    fit = box if found is None or box_iou(found, box) >= SAME_PLACE_IOU else found
    landmarks = face_landmarks(frame, fit)
    embedding = face_embedding(frame, fit, landmarks)
    return FaceInPlace(landmarks, embedding, found is not None, found or box)
