"""Face detection, 68-point landmarks and one face track per clip (dlib, shipped weights).

Points are (x, y) source pixels here (dlib/OpenCV order); napari layers use (y, x).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import dlib_models
from ..progress import Progress, ProgressGenerator

# Short side below which HOG gets one upsampling step: faces in 320x240 sign clips are too
# small for HOG's 80 px window at native size (0 of 73 frames found; all found upsampled).
_UPSAMPLE_BELOW = 480


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in source pixels (x right, y down) with the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) centre."""
        return (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1))

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def as_array(self) -> np.ndarray:
        """(4,) float32 ``[x0, y0, x1, y1]``."""
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float32)


def auto_upsample(shape_hw: tuple[int, int]) -> int:
    """HOG upsampling steps for a frame size: 1 below a 480 px short side, else 0."""
    return 1 if min(shape_hw[:2]) < _UPSAMPLE_BELOW else 0


def _as_dlib_image(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB frame (H,W,3), got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def detect_faces(frame: np.ndarray, upsample: int | None = None) -> list[FaceBox]:
    """Frontal faces found by dlib's HOG detector, best score first.

    ``upsample=None`` chooses the number of upsampling steps from the frame size
    (:func:`auto_upsample`). Boxes are clipped to the frame.
    """
    image = _as_dlib_image(frame)
    steps = auto_upsample(image.shape) if upsample is None else int(upsample)
    rects, scores, _ = dlib_models.hog_detector().run(image, steps, 0.0)
    h, w = image.shape[:2]
    boxes = []
    for rect, score in zip(rects, scores, strict=True):
        x0, y0 = max(rect.left(), 0), max(rect.top(), 0)
        x1, y1 = min(rect.right() + 1, w), min(rect.bottom() + 1, h)
        if x1 > x0 and y1 > y0:
            boxes.append(FaceBox(float(x0), float(y0), float(x1), float(y1), float(score)))
    return sorted(boxes, key=lambda b: -b.score)


def face_landmarks(frame: np.ndarray, box: FaceBox) -> np.ndarray:
    """dlib's 68 landmarks inside ``box``: (68, 2) float32 (x, y) source pixels."""
    import dlib

    image = _as_dlib_image(frame)
    rect = dlib.rectangle(
        int(round(box.x0)), int(round(box.y0)), int(round(box.x1)) - 1, int(round(box.y1)) - 1
    )
    shape = dlib_models.landmark_predictor()(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


# --------------------------------------------------------------------------------------
# One face track per clip
# --------------------------------------------------------------------------------------

LOST, DETECTED, INTERPOLATED, EDITED = 0, 1, 2, 3
STATUS_NAMES = {LOST: "lost", DETECTED: "detected", INTERPOLATED: "interpolated", EDITED: "edited"}

# Frames whose short side reaches this are searched in a window around the previous face
# (full-frame HOG on 1280x720 costs ~80 ms), with a full-frame pass every few frames so
# other faces are still seen.
_WINDOW_FROM = 600
_FULL_EVERY = 10
# A detection belongs to the track when its centre lies within this many face sizes of
# the last tracked box (more after a gap) and its size is within this ratio.
_MAX_SHIFT, _SHIFT_PER_GAP_FRAME, _MAX_SHIFT_CAP = 0.5, 0.15, 2.0
_MAX_SIZE_RATIO = 1.6
# Occlusion check: faces aligned to a small crop are compared with the local median face;
# the largest coherent changed area (a hand), as a fraction of the face, marks the frame
# occluded above _OCC_HIGH, and next to such frames above _OCC_LOW (hysteresis). Measured
# on the real clips: clean frames <= 0.025, blinks of a 50 px face 0.066, hand over face
# 0.058-0.21 (0.084 and up where the hand enters).
_OCC_CROP = 96
_OCC_DIFF = 15.0  # Lab colour distance
_OCC_HIGH, _OCC_LOW = 0.075, 0.035
_OCC_WINDOW = 30  # frames each side for the median face
# ArcFace's published 5-point template (eye centres, nose tip, mouth corners) in 112 px.
_TEMPLATE5 = (
    np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]])
    / 112.0
)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners (5, 2) (x, y) from 68 landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]], axis=0)


@dataclass
class FaceTrack:
    """The signer's face over a clip, one entry per frame.

    ``boxes`` (T, 4) float32 ``[x0, y0, x1, y1]`` and ``landmarks`` (T, 68, 2) float32
    (x, y) are NaN where the face is LOST; ``status`` (T,) uint8 holds LOST / DETECTED /
    INTERPOLATED / EDITED; ``scores`` (T,) float32 the HOG score (NaN when not detected);
    ``occluded`` (T,) bool marks LOST frames where the face was found but something (a
    hand) covers it, so later stages keep the original pixels there.
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    status: np.ndarray
    scores: np.ndarray
    occluded: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.occluded is None:
            self.occluded = np.zeros(len(self.status), dtype=bool)

    def __len__(self) -> int:
        return len(self.status)

    def _frames_with(self, code: int) -> list[int]:
        return [int(t) for t in np.flatnonzero(self.status == code)]

    @property
    def face_frames(self) -> list[int]:
        """Frames with a usable face (every status but LOST)."""
        return [int(t) for t in np.flatnonzero(self.status != LOST)]

    @property
    def lost_frames(self) -> list[int]:
        return self._frames_with(LOST)

    @property
    def interpolated_frames(self) -> list[int]:
        return self._frames_with(INTERPOLATED)

    @property
    def edited_frames(self) -> list[int]:
        return self._frames_with(EDITED)

    def box(self, t: int) -> FaceBox | None:
        """The box of frame ``t``, or None when lost."""
        if self.status[t] == LOST:
            return None
        x0, y0, x1, y1 = (float(v) for v in self.boxes[t])
        score = float(self.scores[t])
        return FaceBox(x0, y0, x1, y1, 0.0 if np.isnan(score) else score)

    def copy(self) -> FaceTrack:
        return FaceTrack.from_arrays(self.to_arrays())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for the run-folder cache (``RunFolder.save_cache``)."""
        return {
            "boxes": np.asarray(self.boxes, dtype=np.float32),
            "landmarks": np.asarray(self.landmarks, dtype=np.float32),
            "status": np.asarray(self.status, dtype=np.uint8),
            "scores": np.asarray(self.scores, dtype=np.float32),
            "occluded": np.asarray(self.occluded, dtype=bool),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FaceTrack:
        occluded = arrays.get("occluded")
        return cls(
            boxes=np.array(arrays["boxes"], dtype=np.float32),
            landmarks=np.array(arrays["landmarks"], dtype=np.float32),
            status=np.array(arrays["status"], dtype=np.uint8),
            scores=np.array(arrays["scores"], dtype=np.float32),
            occluded=None if occluded is None else np.array(occluded, dtype=bool),
        )

    @classmethod
    def empty(cls, count: int) -> FaceTrack:
        return cls(
            boxes=np.full((count, 4), np.nan, np.float32),
            landmarks=np.full((count, 68, 2), np.nan, np.float32),
            status=np.zeros(count, np.uint8),
            scores=np.full(count, np.nan, np.float32),
        )


FrameSource = Sequence[np.ndarray] | tuple[Callable[[int], np.ndarray], int]


def frame_getter(frames: FrameSource) -> tuple[Callable[[int], np.ndarray], int]:
    """``(get(i), count)`` for a frame sequence / (T,H,W,3) array or a ``(get, count)`` pair."""
    if isinstance(frames, tuple) and len(frames) == 2 and callable(frames[0]):
        return frames[0], int(frames[1])
    return (lambda i: frames[i]), len(frames)


@dataclass
class _Candidate:
    box: FaceBox
    landmarks: np.ndarray


def _occlusion_crop(frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    size = _OCC_CROP
    M, _ = cv2.estimateAffinePartial2D(five_points(landmarks), _TEMPLATE5 * size)
    if M is None:
        M = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    crop = cv2.warpAffine(frame, M, (size, size), flags=cv2.INTER_AREA)
    outline = np.asarray(landmarks[:27], np.float64) @ M[:, :2].T + M[:, 2]
    hull = cv2.convexHull(np.round(outline).astype(np.int32)).reshape(-1, 2)
    return crop, hull


def _detect_near(frame: np.ndarray, near: FaceBox | None, upsample: int | None) -> list[FaceBox]:
    """Detections in a window around ``near`` (big frames), else in the whole frame."""
    h, w = frame.shape[:2]
    if near is None:
        return detect_faces(frame, upsample)
    size = max(near.width, near.height)
    x0, y0 = int(max(near.x0 - size, 0)), int(max(near.y0 - size, 0))
    x1, y1 = int(min(near.x1 + size, w)), int(min(near.y1 + size, h))
    steps = (1 if size < 100 else 0) if upsample is None else upsample
    found = detect_faces(frame[y0:y1, x0:x1], steps)
    return [FaceBox(b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, b.score) for b in found]


def _compatible(box: FaceBox, ref: FaceBox, gap: int = 0) -> float | None:
    """Centre distance in face sizes when ``box`` can continue a track at ``ref``, else None."""
    size = max(ref.width, ref.height)
    ratio = max(box.width, box.height) / size
    if not 1 / _MAX_SIZE_RATIO <= ratio <= _MAX_SIZE_RATIO:
        return None
    dist = float(np.hypot(box.center[0] - ref.center[0], box.center[1] - ref.center[1])) / size
    tolerance = min(_MAX_SHIFT + _SHIFT_PER_GAP_FRAME * gap, _MAX_SHIFT_CAP)
    return dist if dist <= tolerance else None


def _closest(boxes: list[FaceBox], ref: FaceBox | None, gap: int = 0) -> FaceBox | None:
    """The box that continues a track at ``ref`` best, or None."""
    if ref is None:
        return None
    scored = [(d, b) for b in boxes if (d := _compatible(b, ref, gap)) is not None]
    return min(scored, key=lambda m: m[0])[1] if scored else None


def _pick_signer(cands: list[list[_Candidate]], shape_hw: tuple[int, int]) -> tuple[int, int]:
    """(frame, index) of the seed detection: persistent, large and central."""
    h, w = shape_hw
    sample = np.unique(np.linspace(0, len(cands) - 1, min(len(cands), 100)).round().astype(int))
    best, best_score = (-1, -1), -1.0
    for t in sample:
        for i, c in enumerate(cands[t]):
            support = sum(_closest([o.box for o in cands[s]], c.box) is not None for s in sample)
            cx, cy = c.box.center
            off_centre = np.hypot((cx - w / 2) / w, (cy - h / 2) / h)
            score = support * c.box.area * (1.0 - off_centre)
            if score > best_score:
                best, best_score = (t, i), score
    return best


def _follow(cands: list[list[_Candidate]], seed: tuple[int, int]) -> list[_Candidate | None]:
    """Walk forward and backward from the seed, keeping the detections that continue it."""
    chosen: list[_Candidate | None] = [None] * len(cands)
    t0, i0 = seed
    chosen[t0] = cands[t0][i0]
    for step in (1, -1):
        ref, last = chosen[t0].box, t0
        t = t0 + step
        while 0 <= t < len(cands):
            box = _closest([c.box for c in cands[t]], ref, abs(t - last) - 1)
            if box is not None:
                chosen[t] = next(c for c in cands[t] if c.box is box)
                ref, last = box, t
            t += step
    return chosen


def _occlusion_scores(chosen: list[_Candidate | None], get) -> np.ndarray:
    """Per frame, the largest coherent area (fraction of the face) where the aligned face
    differs from the local median face: a hand in front of the face is one big blob, a blink
    or a smile are small or split ones. NaN where untracked.

    The aligned crops are made again from the frames (``get``), read once each in order
    and kept only for the +-``_OCC_WINDOW`` frames compared, so memory does not grow with
    clip length (kept for the whole clip they took ~140 KB a frame: 1.4 GB at 10,000).
    """
    from bisect import bisect_left, bisect_right
    from collections import deque

    import cv2

    scores = np.full(len(chosen), np.nan)
    tracked = [t for t, c in enumerate(chosen) if c is not None]
    if len(tracked) < 5:
        return scores
    unread = deque(tracked)
    window: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (Lab crop, face hull)
    opening = np.ones((5, 5), np.uint8)
    for t in tracked:
        while unread and unread[0] <= t + _OCC_WINDOW:
            s = unread.popleft()
            crop, hull = _occlusion_crop(np.asarray(get(s)), chosen[s].landmarks)
            lab = cv2.cvtColor(
                cv2.GaussianBlur(crop, (0, 0), 2.0).astype(np.float32) / 255, cv2.COLOR_RGB2Lab
            )
            window[s] = (lab, hull)
        for old in [s for s in window if s < t - _OCC_WINDOW]:
            del window[old]
        near = tracked[
            bisect_left(tracked, t - _OCC_WINDOW) : bisect_right(tracked, t + _OCC_WINDOW)
        ][::2]
        if len(near) < 5:
            continue
        median = np.median(np.stack([window[s][0] for s in near]), axis=0)
        face = np.zeros((_OCC_CROP, _OCC_CROP), np.uint8)
        cv2.fillConvexPoly(face, window[t][1], 1)
        face = cv2.erode(face, opening)
        changed = (np.linalg.norm(window[t][0] - median, axis=2) > _OCC_DIFF).astype(np.uint8)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, opening) & face
        n, _, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
        largest = stats[1:, cv2.CC_STAT_AREA].max() if n > 1 else 0
        scores[t] = largest / max(int(face.sum()), 1)
    return scores


def _hysteresis(scores: np.ndarray, high: float, low: float) -> np.ndarray:
    """Frames above ``high``, grown through neighbouring frames above ``low``."""
    above_low = np.nan_to_num(scores, nan=0.0) > low
    flags = np.nan_to_num(scores, nan=0.0) > high
    for order in (range(1, len(scores)), range(len(scores) - 2, -1, -1)):
        for t in order:
            neighbour = t - 1 if order.step == 1 else t + 1
            flags[t] |= above_low[t] and flags[neighbour]
    return flags


def fill_gaps(track: FaceTrack, max_gap: int) -> FaceTrack:
    """Interpolate box and landmarks over runs of at most ``max_gap`` LOST frames between
    two face frames (status INTERPOLATED); occluded frames and longer runs stay LOST."""
    out = track.copy()
    known = np.flatnonzero(out.status != LOST)
    for a, b in zip(known[:-1], known[1:], strict=True):
        gap = b - a - 1
        if gap == 0 or gap > max_gap or out.occluded[a + 1 : b].any():
            continue
        for t in range(a + 1, b):
            f = (t - a) / (b - a)
            out.boxes[t] = (1 - f) * out.boxes[a] + f * out.boxes[b]
            out.landmarks[t] = (1 - f) * out.landmarks[a] + f * out.landmarks[b]
            out.status[t] = INTERPOLATED
    return out


def track_faces(
    frames: FrameSource,
    *,
    max_gap: int = 6,
    upsample: int | None = None,
    detect_occlusion: bool = True,
) -> ProgressGenerator[FaceTrack]:
    """Track the signer's face through a clip (one track per clip).

    Every frame is searched (big frames in a window around the last face); the seed is the
    detection that is most persistent, large and central; the track follows detections
    that stay close to it in position and size, so a small or distant false positive (a
    logo on a shirt, a face in the background) is ignored. Frames where the aligned face
    differs from the local median face over a large area (a hand in front of it) are
    LOST with ``occluded`` set. Runs of up to ``max_gap`` missed frames between two found
    faces are interpolated; longer ones stay LOST. Yields ``Progress("faces", i, T)``.
    """
    get, count = frame_getter(frames)
    cands: list[list[_Candidate]] = []
    shape_hw = (0, 0)
    previous: FaceBox | None = None
    for t in range(count):
        start = time.perf_counter()
        frame = np.asarray(get(t))
        shape_hw = frame.shape[:2]
        windowed = min(shape_hw) >= _WINDOW_FROM and t % _FULL_EVERY != 0
        boxes = _detect_near(frame, previous if windowed else None, upsample)
        if windowed and not boxes:
            boxes = detect_faces(frame, upsample)
        frame_cands = []
        for box in boxes:
            frame_cands.append(_Candidate(box, face_landmarks(frame, box)))
        cands.append(frame_cands)
        if boxes:
            previous = _closest(boxes, previous) or boxes[0]
        yield Progress("faces", t + 1, count, time.perf_counter() - start)

    track = FaceTrack.empty(count)
    if not any(cands):
        return track
    chosen = _follow(cands, _pick_signer(cands, shape_hw))
    occluded = np.zeros(count, bool)
    if detect_occlusion:
        occluded = _hysteresis(_occlusion_scores(chosen, get), _OCC_HIGH, _OCC_LOW)
    for t, c in enumerate(chosen):
        if c is None:
            continue
        if occluded[t]:
            track.occluded[t] = True
            continue
        track.boxes[t] = c.box.as_array()
        track.landmarks[t] = c.landmarks
        track.status[t] = DETECTED
        track.scores[t] = c.box.score
    return fill_gaps(track, max_gap)


def _box_to_box(landmarks: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Move landmarks from one box to another by the scale and shift between the boxes."""
    scale = (new[2:] - new[:2]) / np.maximum(old[2:] - old[:2], 1e-6)
    return ((landmarks - old[:2]) * scale + new[:2]).astype(np.float32)


def apply_edits(track: FaceTrack, edits: dict, frames: FrameSource | None = None) -> FaceTrack:
    """A copy of ``track`` with manual corrections applied (the GUI's ``edits.json`` data).

    Format (JSON-friendly; frame indices are strings, ints are accepted too)::

        {"boxes":  {"12": [x0, y0, x1, y1], ...},          # source pixels, (x, y)
         "status": {"13": "lost" | "occluded" | "face", ...}}

    An edited box sets status EDITED; its landmarks are re-estimated inside it when
    ``frames`` (a sequence or ``(get, count)``) is given, else moved with the box (NaN if
    the frame had none). ``"lost"`` / ``"occluded"`` make the frame LOST (NaN box and
    landmarks; ``occluded`` is set for the latter). ``"face"`` confirms a frame that has a
    box (status EDITED, ``occluded`` cleared); a frame without one needs a box edit.
    Status entries win over box entries of the same frame when they say lost/occluded.
    """
    from ..errors import SettingsError

    out = track.copy()
    get = frame_getter(frames)[0] if frames is not None else None
    for key, value in (edits.get("boxes") or {}).items():
        t = int(key)
        if not 0 <= t < len(out):
            raise SettingsError(f"face edit for frame {t}: the clip has {len(out)} frames")
        new = np.asarray(value, dtype=np.float32).reshape(4)
        if get is not None:
            landmarks = face_landmarks(np.asarray(get(t)), FaceBox(*map(float, new)))
        elif out.status[t] != LOST:
            landmarks = _box_to_box(out.landmarks[t], out.boxes[t], new)
        else:
            landmarks = np.full((68, 2), np.nan, np.float32)
        out.boxes[t], out.landmarks[t] = new, landmarks
        out.status[t], out.occluded[t] = EDITED, False
    for key, value in (edits.get("status") or {}).items():
        t = int(key)
        if not 0 <= t < len(out):
            raise SettingsError(f"face edit for frame {t}: the clip has {len(out)} frames")
        if value in ("lost", "occluded"):
            out.boxes[t], out.landmarks[t] = np.nan, np.nan
            out.status[t], out.scores[t] = LOST, np.nan
            out.occluded[t] = value == "occluded"
        elif value == "face":
            if np.isnan(out.boxes[t]).any():
                raise SettingsError(f"frame {t} is marked as a face but has no box: draw one")
            out.status[t], out.occluded[t] = EDITED, False
        else:
            raise SettingsError(
                f"face edit for frame {t}: unknown status {value!r} (use lost, occluded or face)"
            )
    return out
