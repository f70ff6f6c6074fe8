"""Run the anonymization audit on a pair of clips: original and anonymized, frame for frame.

The original's face track says where the signer's face is; the anonymized face is looked
for near the same place in the same frame. Identity, expression, hands/body and temporal
metrics are computed on the audited frames (all, or every ``stride``-th, at most
``max_frames``) and gathered in an :class:`~napari_diffslva.audit.result.AuditResult`.
Anything that cannot be measured is NaN in the result and explained in ``notes``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SettingsError, VideoError
from ..progress import Progress, ProgressGenerator
from . import expression as expr
from . import hands as hands_metrics
from .identity import (
    SAME_PERSON_THRESHOLD,
    embedding_distance,
    face_embedding,
    face_in_place,
    signer_reference,
)
from .result import (
    AuditResult,
    ExpressionResult,
    HandsResult,
    IdentityResult,
    TemporalResult,
)
from .temporal import warp_errors

if TYPE_CHECKING:
    from ..prepare.pipeline import Prepared

FrameSequence = Sequence[np.ndarray] | np.ndarray  # anything with len() and [i] -> (H, W, 3)
_ASPECT_TOLERANCE = 0.02  # relative; a resized export keeps the aspect to within rounding
# The signer's reference embedding is the mean over this many original frames spread over
# the clip (an embedding costs ~0.1-0.25 s; more frames barely move the mean).
REFERENCE_FRAMES = 8


def sample_frames(count: int, stride: int = 1, max_frames: int | None = None) -> list[int]:
    """Indices of the audited frames: every ``stride``-th, then at most ``max_frames``
    spread evenly over the clip."""
    if stride < 1:
        raise SettingsError(f"stride must be 1 or more, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise SettingsError(f"max_frames must be 1 or more, got {max_frames}")
    indices = list(range(0, count, stride))
    if max_frames is not None and len(indices) > max_frames:
        picks = np.linspace(0, len(indices) - 1, max_frames).round().astype(int)
        indices = [indices[k] for k in picks]
    return indices


def _frame_getter(frames: FrameSequence, name: str, size: tuple[int, int] | None):
    """``get(i)`` -> uint8 RGB frame, resized to ``size`` (h, w) when it differs only in scale."""

    def get(i: int) -> np.ndarray:
        frame = np.asarray(frames[i])
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(
                f"{name} frame {i}: expected uint8 RGB (H, W, 3), got {frame.dtype} {frame.shape}"
            )
        if size is not None and frame.shape[:2] != size:
            import cv2

            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return frame

    return get


def _check_pair(original: FrameSequence, anonymized: FrameSequence) -> tuple[Any, Any, list[str]]:
    """Getters for both clips (the anonymized one at the original's size) and notes."""
    if len(original) == 0 or len(anonymized) == 0:
        raise VideoError("a clip has no frames; the audit needs frames in both clips")
    if len(original) != len(anonymized):
        raise VideoError(
            f"the clips differ in length: original has {len(original)} frames, anonymized "
            f"{len(anonymized)}; the audit compares frame by frame, so export the anonymized "
            "clip with every frame of the original"
        )
    get_original = _frame_getter(original, "original", None)
    first_original, first_anonymized = (
        get_original(0),
        _frame_getter(anonymized, "anonymized", None)(0),
    )
    (h, w), (ha, wa) = first_original.shape[:2], first_anonymized.shape[:2]
    notes = []
    if (h, w) != (ha, wa):
        if abs((w / h) / (wa / ha) - 1) > _ASPECT_TOLERANCE:
            raise VideoError(
                f"the clips differ in shape: original {w}x{h}, anonymized {wa}x{ha}; the audit "
                "needs the same framing (export at the original size)"
            )
        notes.append(f"the anonymized clip ({wa}x{ha}) was resized to the original's {w}x{h}")
    return get_original, _frame_getter(anonymized, "anonymized", (h, w)), notes


def _track_of(track: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (T, 4), landmarks (T, 68, 2)) of a FaceTrack-like object, checked; NaN on
    frames without a face that was seen (interpolated boxes are guesses: an embedding of
    a guessed alignment would measure the guess, not the face)."""
    from ..prepare.faces import INTERPOLATED

    boxes = np.array(track.boxes, dtype=np.float64)
    landmarks = np.array(track.landmarks, dtype=np.float64)
    if boxes.shape != (count, 4) or landmarks.shape != (count, 68, 2):
        raise SettingsError(
            f"the face track covers {boxes.shape[0]} frames with boxes {boxes.shape} and "
            f"landmarks {landmarks.shape}; the original clip has {count} frames: track it again"
        )
    status = getattr(track, "status", None)
    if status is not None:
        guessed = np.asarray(status) == INTERPOLATED
        boxes[guessed], landmarks[guessed] = np.nan, np.nan
    return boxes, landmarks


def _hand_boxes_of(hand_boxes: Any, count: int) -> Sequence[np.ndarray | None] | None:
    if hand_boxes is None:
        return None
    if len(hand_boxes) != count:
        raise SettingsError(
            f"hand boxes are given for {len(hand_boxes)} frames, the clip has {count}: give "
            "one (possibly empty) list of (x0, y0, x1, y1) boxes per frame"
        )
    return hand_boxes


def audit_clips(
    original_frames: FrameSequence,
    anonymized_frames: FrameSequence,
    *,
    hand_boxes: Sequence[Any] | None = None,
    track: Any = None,
    stride: int = 1,
    max_frames: int | None = None,
) -> ProgressGenerator[AuditResult]:
    """Audit an anonymized clip against its original (a progress generator).

    ``original_frames`` and ``anonymized_frames``: sequences (arrays, lists, or a
    :class:`~napari_diffslva.video.VideoReader`) of uint8 RGB ``(H, W, 3)`` frames of equal
    length. ``hand_boxes``: per frame of the whole clip, ``(K, 4)`` boxes ``(x0, y0, x1,
    y1)`` pixels (NaN rows or empty for none). ``track``: a
    :class:`~napari_diffslva.prepare.faces.FaceTrack` of the whole original clip, to skip
    tracking it again. ``stride``/``max_frames`` subsample the audited frames.
    """
    get_original, get_anonymized, notes = _check_pair(original_frames, anonymized_frames)
    count = len(original_frames)
    indices = sample_frames(count, stride, max_frames)
    hands_given = _hand_boxes_of(hand_boxes, count)
    # Decode once, in order: the audited frames and their predecessors (temporal pairs).
    needed = sorted(set(indices) | {i - 1 for i in indices if i > 0})
    clips = _Pair({i: get_original(i) for i in needed}, {i: get_anonymized(i) for i in needed})
    hw = clips.original[indices[0]].shape[:2]

    # 1. Where the signer's face is in the original.
    boxes, landmarks = yield from _signer_face(track, clips, indices, count)
    has_face = np.isfinite(boxes).all(axis=1) & np.isfinite(landmarks).all(axis=(1, 2))
    # 2. Faces of both clips: embeddings (identity) and landmarks (expression).
    faces = yield from _faces(clips, indices, has_face, boxes, landmarks)
    identity = _identity(indices, has_face, faces.original, faces.anonymized, faces.fitted, notes)
    expression = _expression(has_face, landmarks, faces, hw, identity.measured, notes)
    # 3. Hands and body; 4. temporal consistency.
    face_boxes = (boxes, has_face, faces.anonymized_boxes)
    hands = yield from _hands(clips, indices, face_boxes, hands_given, hw, notes)
    temporal = yield from _temporal(clips, indices, notes)
    return AuditResult(
        frames=count,
        frame_indices=indices,
        size=(int(hw[0]), int(hw[1])),
        identity=identity,
        expression=expression,
        hands=hands,
        temporal=temporal,
        notes=notes,
    )


@dataclass
class _Pair:
    """The frames of both clips that the audit reads, by frame index: decoded up front
    (a dict) or read when indexed (:class:`_Lazy`)."""

    original: dict[int, np.ndarray] | _Lazy
    anonymized: dict[int, np.ndarray] | _Lazy


class _Lazy:
    """Frames read when indexed, for a pass that reads each frame once."""

    def __init__(self, get) -> None:
        self._get = get

    def __getitem__(self, index: int) -> np.ndarray:
        return self._get(index)


@dataclass
class _Faces:
    """Per audited frame: face embeddings and the anonymized clip's face."""

    original: np.ndarray  # (N, 128) the signer's (reference frames only)
    anonymized: np.ndarray  # (N, 128) a detected face near the signer's place
    fitted: np.ndarray  # (N, 128) no face detected: read in the original's box
    landmarks: np.ndarray  # (N, 68, 2) of the anonymized face
    anonymized_boxes: np.ndarray  # (N, 4) detected anonymized faces
    fitted_without_detection: list[int]  # frames of ``fitted``


def _signer_face(
    track: Any, clips: _Pair, indices: list[int], count: int
) -> ProgressGenerator[tuple[np.ndarray, np.ndarray]]:
    """Boxes and landmarks of the original's face on the audited frames (tracked here
    when no track of the whole clip is given)."""
    if track is None:
        from ..prepare.faces import track_faces

        sampled = yield from track_faces([clips.original[i] for i in indices])
        return _track_of(sampled, len(indices))
    boxes, landmarks = _track_of(track, count)
    return boxes[indices], landmarks[indices]


def _faces(
    clips: _Pair,
    indices: list[int],
    has_face: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
) -> ProgressGenerator[_Faces]:
    n = len(indices)
    faces = _Faces(
        original=np.full((n, 128), np.nan),
        anonymized=np.full((n, 128), np.nan),
        fitted=np.full((n, 128), np.nan),
        landmarks=np.full((n, 68, 2), np.nan),
        anonymized_boxes=np.full((n, 4), np.nan),
        fitted_without_detection=[],
    )
    with_face = np.flatnonzero(has_face)
    reference_frames = {
        int(with_face[j]) for j in sample_frames(len(with_face), max_frames=REFERENCE_FRAMES)
    }
    for k, i in enumerate(indices):
        start = time.perf_counter()
        if has_face[k]:
            _face_pair(clips, faces, k, i, boxes[k], landmarks[k], k in reference_frames)
        yield Progress("identity", k + 1, n, time.perf_counter() - start)
    return faces


def _face_pair(
    clips: _Pair,
    faces: _Faces,
    k: int,
    i: int,
    box_array: np.ndarray,
    landmarks: np.ndarray,
    reference: bool,
) -> None:
    """Audited frame ``i`` (position ``k``): the signer's embedding on reference frames,
    and the anonymized face found near the signer's place, or read there if none is."""
    from ..prepare.faces import FaceBox

    box = FaceBox(*box_array)
    if reference:
        faces.original[k] = face_embedding(clips.original[i], box, landmarks)
    face = face_in_place(clips.anonymized[i], box)
    faces.landmarks[k] = face.landmarks
    if face.detected:
        faces.anonymized_boxes[k] = face.box.as_array()
        faces.anonymized[k] = face.embedding
    else:  # read where the face should be: a face no detector finds can still be recognised
        faces.fitted[k] = face.embedding
        faces.fitted_without_detection.append(i)


def _expression(
    has_face: np.ndarray,
    landmarks: np.ndarray,
    faces: _Faces,
    hw: tuple[int, int],
    measured: bool,
    notes: list[str],
) -> ExpressionResult:
    original = expr.clip_features(np.where(has_face[:, None, None], landmarks, np.nan), hw)
    anonymized = expr.clip_features(faces.landmarks, hw)
    correlation, error = expr.compare_features(original, anonymized)
    if measured and not np.isfinite(list(correlation.values())).any():
        notes.append(
            "expression: correlation over time needs at least 3 audited frames with "
            "a face in both clips and some movement; it is null here"
        )
    if faces.fitted_without_detection:
        notes.append(
            f"expression: {len(faces.fitted_without_detection)} anonymized frames had no "
            "detectable face; their landmarks were fitted where the original's face is"
        )
    return ExpressionResult(
        list(expr.FEATURES),
        dict(expr.UNITS),
        original,
        anonymized,
        correlation,
        error,
        faces.fitted_without_detection,
    )


def _hands(
    clips: _Pair,
    indices: list[int],
    face_boxes: tuple[np.ndarray, np.ndarray, np.ndarray],
    hands_given: Sequence[np.ndarray | None] | None,
    hw: tuple[int, int],
    notes: list[str],
) -> ProgressGenerator[HandsResult]:
    """Edge F-score outside both faces, SSIM, and SSIM in the given hand boxes."""
    from ..prepare.edges import soft_edges

    boxes, has_face, anonymized_boxes = face_boxes
    n = len(indices)
    fallback_face = np.nanmedian(boxes[has_face], axis=0) if has_face.any() else None
    edge_f, ssim = np.full(n, np.nan), np.full(n, np.nan)
    hand_ssim = None if hands_given is None else np.full(n, np.nan)
    for k, i in enumerate(indices):
        start = time.perf_counter()
        original, anonymized = clips.original[i], clips.anonymized[i]
        face_region = hands_metrics.box_mask(hw, boxes[k] if has_face[k] else fallback_face)
        face_region |= hands_metrics.box_mask(hw, anonymized_boxes[k])
        edge_f[k] = hands_metrics.edge_fscore(
            soft_edges(original), soft_edges(anonymized), exclude=face_region
        )
        ssim[k] = hands_metrics.frame_ssim(original, anonymized)
        if hand_ssim is not None:
            hand_ssim[k] = hands_metrics.region_ssim(original, anonymized, hands_given[i])
        yield Progress("hands", k + 1, n, time.perf_counter() - start)
    if hand_ssim is not None and not np.isfinite(hand_ssim).any():
        notes.append("hands: no usable hand box (each must be at least 7x7 px inside the frame)")
    return HandsResult(edge_f, ssim, hand_ssim)


def _temporal(
    clips: _Pair, indices: list[int], notes: list[str]
) -> ProgressGenerator[TemporalResult]:
    """Warping error on the pairs (i-1, i) that end at an audited frame."""
    pairs = [(i - 1, i) for i in indices if i > 0]
    input_error, output_error = np.full(len(pairs), np.nan), np.full(len(pairs), np.nan)
    for k, (p, i) in enumerate(pairs):
        start = time.perf_counter()
        input_error[k], output_error[k] = warp_errors(
            clips.original[p], clips.original[i], clips.anonymized[p], clips.anonymized[i]
        )
        yield Progress("temporal", k + 1, len(pairs), time.perf_counter() - start)
    if not pairs:
        notes.append("temporal: a single frame has no consecutive pair; warping error is null")
    return TemporalResult(pairs, input_error, output_error)


def audit_identity(
    original_frames: FrameSequence, anonymized_frames: FrameSequence, track: Any
) -> ProgressGenerator[tuple[IdentityResult, list[str]]]:
    """The identity part of :func:`audit_clips` alone, on every frame with a face in
    ``track`` (the original's face track), reading each frame when it is measured:
    ``(identity, notes)``. What a run checks about its own result."""
    get_original, get_anonymized, notes = _check_pair(original_frames, anonymized_frames)
    count = len(original_frames)
    indices = list(range(count))
    boxes, landmarks = _track_of(track, count)
    has_face = np.isfinite(boxes).all(axis=1) & np.isfinite(landmarks).all(axis=(1, 2))
    clips = _Pair(_Lazy(get_original), _Lazy(get_anonymized))
    faces = yield from _faces(clips, indices, has_face, boxes, landmarks)
    identity = _identity(indices, has_face, faces.original, faces.anonymized, faces.fitted, notes)
    return identity, notes


def _identity(
    indices: list[int],
    has_face: np.ndarray,
    original_embeddings: np.ndarray,
    anonymized_embeddings: np.ndarray,
    fitted_embeddings: np.ndarray,
    notes: list[str],
) -> IdentityResult:
    """Distances to the signer's reference embedding, leaks and faceless frames."""
    n = len(indices)
    distance, original_distance, fitted_distance = (np.full(n, np.nan) for _ in range(3))
    if not has_face.any():
        notes.append(
            "identity and expression: no face was found in any audited frame of the "
            "original, so there is nothing to compare; check that the first clip is "
            "the original and that the face is visible and frontal"
        )
        return IdentityResult(
            distance,
            original_distance,
            fitted_distance,
            SAME_PERSON_THRESHOLD,
            [],
            [],
            [],
            measured=False,
        )
    embedded = np.isfinite(original_embeddings).all(axis=1)
    reference = signer_reference(original_embeddings[embedded])
    for k in np.flatnonzero(has_face):
        if embedded[k]:
            original_distance[k] = embedding_distance(original_embeddings[k], reference)
        if np.isfinite(anonymized_embeddings[k]).all():
            distance[k] = embedding_distance(anonymized_embeddings[k], reference)
        elif np.isfinite(fitted_embeddings[k]).all():
            fitted_distance[k] = embedding_distance(fitted_embeddings[k], reference)
    face_frames = [indices[k] for k in np.flatnonzero(has_face)]
    # A face no detector finds can still be recognised: the fitted distance counts too.
    leaking = (distance < SAME_PERSON_THRESHOLD) | (fitted_distance < SAME_PERSON_THRESHOLD)
    leaks = [indices[k] for k in np.flatnonzero(leaking)]
    no_face = [indices[k] for k in np.flatnonzero(has_face & ~np.isfinite(distance))]
    return IdentityResult(
        distance,
        original_distance,
        fitted_distance,
        SAME_PERSON_THRESHOLD,
        leaks,
        no_face,
        face_frames,
        measured=True,
    )


def audit_videos(
    original_path: str | Path,
    anonymized_path: str | Path,
    *,
    hand_boxes: Sequence[Any] | None = None,
    track: Any = None,
    stride: int = 1,
    max_frames: int | None = None,
) -> ProgressGenerator[AuditResult]:
    """:func:`audit_clips` on two files (videos, GIFs, images, image folders).

    Frames are decoded on demand (only the audited frames and their predecessors), so
    long clips do not have to fit in memory. Unreadable files raise
    :class:`~napari_diffslva.errors.VideoError`.
    """
    from ..video import VideoReader, check_frames, probe

    # The original's damaged frames (one decode-only pass): an export made with
    # on_damaged_frame="repeat" shows the previous good frame there, and so does this reader.
    original_info = yield from check_frames(probe(original_path))
    anonymized_info = probe(anonymized_path)
    if original_info.frames != anonymized_info.frames:
        raise VideoError(
            f"{anonymized_path} has {anonymized_info.frames} frames but {original_path} has "
            f"{original_info.frames}; the audit compares frame by frame, so export the "
            "anonymized clip with every frame of the original"
        )
    with (
        VideoReader(original_path, info=original_info, on_damaged="repeat") as original,
        VideoReader(anonymized_path, info=anonymized_info) as anonymized,
    ):
        result = yield from audit_clips(
            original,
            anonymized,
            hand_boxes=hand_boxes,
            track=track,
            stride=stride,
            max_frames=max_frames,
        )
    if original_info.damaged:
        result.damaged_frames = list(original_info.damaged)
        result.notes.append(
            f"{len(original_info.damaged)} frame(s) of the original do not "
            "decode; the audit read the previous good frame in their place"
        )
    return result


def audit_run(
    prepared: Prepared, *, stride: int = 1, max_frames: int | None = None
) -> ProgressGenerator[AuditResult]:
    """:func:`audit_clips` of a run folder's finished frames against the prepared source
    (its face track, with the user's corrections, spares tracking the original again)."""
    from ..pipeline import FINAL
    from ..video import VideoReader

    n = prepared.info.frames
    missing = prepared.run.missing_frames(FINAL, n)
    if missing:
        raise SettingsError(
            f"{len(missing)} of {n} frames are not anonymized yet (first: {missing[0]}); "
            "finish or resume the run first"
        )
    policy = prepared.settings.on_damaged_frame
    with VideoReader(prepared.info.path, info=prepared.info, on_damaged=policy) as original:
        return (
            yield from audit_clips(
                original,
                prepared.run.frame_sequence(FINAL, n),
                track=prepared.track,
                stride=stride,
                max_frames=max_frames,
            )
        )
