"""Face expression enhancement (DiffSLVA steps 6-7) and stand-alone face reenactment.

Diffusion keeps the hands but flattens the face into one expression. Here one source face
(the generated anchor frame's, or any photo) is re-rendered with the expression of the
original signer's face in every frame and blended back on the frames where the signer's
face is tracked.

What the module takes from the original signer is measurements only: the face track's
landmarks (relative motion since a neutral frame, head pose through the alignment), one
"teeth visible" bit per frame (:func:`driver_teeth`), and, for the TPSMM backend, the
keypoints it measures on the aligned driving crops. No pixel of the original reaches the
output through this module:

- pipeline (:func:`enhance_faces`): the background is the generated frame; frames whose
  face is lost (not found, or covered by a hand) keep the generated frame unchanged;
- :func:`reenact_video`: the background is the driving video itself, so the driver's face
  is covered fully (exact mask, no colour taken from it), and on frames where the face is
  lost or occluded the new face is pasted at the last known pose (interpolated between
  the tracked frames around the gap, held at the clip ends) over a heavily blurred face
  region, never the original pixels.

Points are (x, y) pixels; frames are uint8 RGB.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat

import numpy as np

from ..errors import DiffslvaError
from ..prepare.align import alignment_transforms, crop_face, transform_points
from ..prepare.face_mask import landmark_face_mask
from ..prepare.faces import (
    DETECTED,
    LOST,
    FaceBox,
    FaceTrack,
    FrameSource,
    apply_edits,
    detect_faces,
    face_landmarks,
    frame_getter,
    track_faces,
)
from ..progress import Progress, ProgressGenerator
from .backends import ReenactBackend
from .blend import blend_face, blend_mask, skin_region
from .landmark_warp import face_size, neutral_frame, target_landmarks
from .mouth import teeth_visible

CROP_SIZE = 256
# Lost frames in reenact: the face region (grown by this factor about its centre) is
# blurred with a Gaussian of this fraction of the face size before the held face goes on.
LOST_REGION_GROWTH = 1.5
LOST_BLUR = 0.12


@dataclass
class FaceReport:
    """What the face module did to a clip (JSON-friendly via :meth:`to_dict`)."""

    backend: str
    frames: int
    enhanced_frames: list[int] = field(default_factory=list)
    lost_frames: list[int] = field(default_factory=list)
    occluded_frames: list[int] = field(default_factory=list)
    held_frames: list[int] = field(default_factory=list)
    teeth_frames: list[int] = field(default_factory=list)
    source_frame_index: int | None = None
    neutral_frame_index: int | None = None
    seconds_per_frame: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SourceFace:
    """The face whose identity is kept: aligned crop and its landmarks (crop pixels)."""

    crop: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def from_frame(cls, frame: np.ndarray, box: FaceBox) -> SourceFace:
        """Landmarks inside ``box``, aligned the same way as the driving faces."""
        landmarks = face_landmarks(frame, box)
        single = FaceTrack.empty(1)
        single.boxes[0], single.landmarks[0] = box.as_array(), landmarks
        single.status[0] = DETECTED
        transform = alignment_transforms(single, CROP_SIZE, smooth=0)[0]
        return cls(crop_face(frame, transform, CROP_SIZE), transform_points(landmarks, transform))


def _largest_face(image: np.ndarray, what: str) -> FaceBox:
    boxes = detect_faces(image)
    if not boxes:
        raise DiffslvaError(f"{what}: no face found; use a frontal, well lit face photo")
    return max(boxes, key=lambda b: b.area)


def driver_teeth(track: FaceTrack, frames_getter: Callable[[int], np.ndarray]) -> np.ndarray:
    """(T,) bool: does the original show teeth in frame t (False where the face is lost)?
    The one thing the face module measures on the original's pixels besides TPSMM's
    keypoints (:func:`~napari_diffslva.face.mouth.teeth_visible` on the aligned crop)."""
    transforms = alignment_transforms(track, CROP_SIZE)
    teeth = np.zeros(len(track), bool)
    for t in track.face_frames:
        if np.isfinite(transforms[t]).all():
            crop = crop_face(frames_getter(t), transforms[t], CROP_SIZE)
            teeth[t] = teeth_visible(crop, transform_points(track.landmarks[t], transforms[t]))
    return teeth


class _RenderedFaces:
    """The driver's tracked faces reenacted on ``source``, rendered in frame order on
    demand, with what blending needs per frame (alignment, moved landmarks)."""

    def __init__(
        self,
        driving_get: Callable[[int], np.ndarray],
        track: FaceTrack,
        source: SourceFace,
        neutral_index: int,
        backend: ReenactBackend,
        teeth: Sequence[bool] | None,
        report: FaceReport,
    ) -> None:
        self.driving_get, self.source = driving_get, source
        self.transforms = alignment_transforms(track, CROP_SIZE)
        self.face_frames = [t for t in track.face_frames if np.isfinite(self.transforms[t]).all()]
        self._landmarks = track.landmarks
        self.neutral_lm = self.driver_landmarks(neutral_index)
        reads = backend.reads_driving_crops
        crops = (self.driving_crop(t) for t in self.face_frames) if reads else repeat(None)
        self._rendered = zip(
            self.face_frames,
            backend.reenact(
                source.crop,
                source.landmarks,
                crops,
                (self.driver_landmarks(t) for t in self.face_frames),
                self.driving_crop(neutral_index) if reads else None,
                self.neutral_lm,
                self._teeth_bits(teeth, report),
            ),
            strict=True,
        )
        self._latest: tuple[int, np.ndarray] | None = None

    def driving_crop(self, t: int) -> np.ndarray:
        return crop_face(self.driving_get(t), self.transforms[t], CROP_SIZE)

    def _teeth_bits(self, teeth: Sequence[bool] | None, report: FaceReport) -> Iterator[bool]:
        for t in self.face_frames:
            if teeth is not None:
                bit = bool(teeth[t])
            else:
                bit = teeth_visible(self.driving_crop(t), self.driver_landmarks(t))
            if bit:
                report.teeth_frames.append(t)
            yield bit

    def crop(self, face_t: int) -> np.ndarray:
        """The rendered crop of face frame ``face_t`` (rendering ahead when needed)."""
        while self._latest is None or self._latest[0] < face_t:
            self._latest = next(self._rendered)
        return self._latest[1]

    def driver_landmarks(self, t: int) -> np.ndarray:
        """Frame ``t``'s driving landmarks in crop space."""
        return transform_points(self._landmarks[t], self.transforms[t])

    def moved_landmarks(self, t: int) -> np.ndarray:
        """The source's landmarks moved by frame ``t``'s expression (crop space)."""
        return target_landmarks(self.source.landmarks, self.driver_landmarks(t), self.neutral_lm)


def _paste_faces(
    target: tuple[Callable[[int], np.ndarray], int],
    driving_get: Callable[[int], np.ndarray],
    track: FaceTrack,
    source: SourceFace,
    neutral_index: int,
    backend: ReenactBackend,
    report: FaceReport,
    masks: MaskSource | None = None,
    keep_frames: bool = True,
    *,
    target_is_driver: bool = False,
    teeth: Sequence[bool] | None = None,
) -> ProgressGenerator[np.ndarray | None]:
    """Reenact ``source`` with the driver's faces (``track`` on ``driving_get``'s frames)
    and blend it into the ``target`` frames.

    ``target_is_driver`` says the target frames are the driving frames themselves
    (``reenact``): the driver's face is then covered fully, no colour is matched to it, and
    lost frames get the held face over a blurred face region. Otherwise (the pipeline: the
    target is the generated clip) the mask covers the new face only, colours are matched
    to the generated frame, and lost frames are left as generated.
    ``teeth`` (T,) is the per-frame teeth bit (measured here with :func:`driver_teeth`'s
    rule when None). ``masks(t)`` may give a driving-frame-size mask for frame ``t`` (see
    :data:`MaskSource`). With ``keep_frames=False`` frames are only streamed.
    """
    get_target, count = target
    faces = _RenderedFaces(driving_get, track, source, neutral_index, backend, teeth, report)
    face_set = set(faces.face_frames)
    report.enhanced_frames = faces.face_frames
    report.lost_frames = [t for t in range(count) if t not in face_set]
    report.occluded_frames = [int(t) for t in np.flatnonzero(track.occluded)]
    report.neutral_frame_index = neutral_index
    report.held_frames = list(report.lost_frames) if target_is_driver else []

    first = np.asarray(get_target(0))
    out = np.empty((count, *first.shape), np.uint8) if keep_frames else None
    # the target frames may be at another size than the driving ones (working resolution)
    to_target = _scale_transform(driving_get(faces.face_frames[0]).shape, first.shape)
    total_seconds = 0.0
    for t in range(count):
        start = time.perf_counter()
        frame = np.asarray(first if t == 0 else get_target(t))
        if t in face_set:
            frame = _paste_one(frame, t, faces, masks, to_target, target_is_driver)
            total_seconds += time.perf_counter() - start
        elif target_is_driver:
            frame = _hold_one(frame, t, faces, to_target)
        if out is not None:
            out[t] = frame
        yield Progress("face", t + 1, count, time.perf_counter() - start, (t, frame))
    report.seconds_per_frame = total_seconds / max(len(faces.face_frames), 1)
    return out


def _paste_one(
    frame: np.ndarray,
    t: int,
    faces: _RenderedFaces,
    masks: MaskSource | None,
    to_target: np.ndarray,
    target_is_driver: bool,
) -> np.ndarray:
    """A tracked frame: its rendered face blended in (over the driver's face, or the new)."""
    crop, moved = faces.crop(t), faces.moved_landmarks(t)
    replaced = faces.driver_landmarks(t) if target_is_driver else moved
    transform = faces.transforms[t]
    mask = _mask_in_crop(masks, t, transform, replaced, moved, crop.shape[:2])
    skin = None if target_is_driver else skin_region([moved], crop.shape[:2])
    return blend_face(frame, crop, _compose(transform, to_target), mask, skin)


def _hold_one(
    frame: np.ndarray, t: int, faces: _RenderedFaces, to_target: np.ndarray
) -> np.ndarray:
    """A lost driving frame: the last rendered face at the interpolated pose, over a
    blurred face region (the driver's face is never shown)."""
    held = _held_frame(faces.face_frames, t)
    crop, moved = faces.crop(held), faces.moved_landmarks(held)
    pose = _compose(_lost_pose(faces.transforms, faces.face_frames, t), to_target)
    frame = _blur_face_region(frame, pose, moved, crop.shape[:2])
    return blend_face(frame, crop, pose, blend_mask(moved, moved, crop.shape[:2]))


def _held_frame(face_frames: list[int], t: int) -> int:
    """The face frame whose rendered face a lost frame ``t`` shows: the last one before it,
    or the first one for lost frames at the clip's start."""
    i = bisect.bisect_left(face_frames, t)
    return face_frames[max(i - 1, 0)]


def _lost_pose(transforms: np.ndarray, face_frames: list[int], t: int) -> np.ndarray:
    """Frame -> crop transform of a lost frame: linear between the tracked frames around
    it (similarity matrices stay similarities), held at the clip's ends."""
    i = bisect.bisect_left(face_frames, t)
    if i == 0:
        return transforms[face_frames[0]]
    if i == len(face_frames):
        return transforms[face_frames[-1]]
    a, b = face_frames[i - 1], face_frames[i]
    w = (t - a) / (b - a)
    return (1 - w) * transforms[a] + w * transforms[b]


def _blur_face_region(
    frame: np.ndarray, transform: np.ndarray, landmarks: np.ndarray, crop_hw: tuple[int, int]
) -> np.ndarray:
    """``frame`` with the face region around crop-space ``landmarks`` (grown by
    :data:`LOST_REGION_GROWTH`) replaced by a heavy blur of itself, so whatever of a real
    face is there (moved, turned, behind a hand) is not recognisable."""
    import cv2

    lm = np.asarray(landmarks, np.float64)
    centre = lm.mean(axis=0)
    region = landmark_face_mask(centre + (lm - centre) * LOST_REGION_GROWTH, crop_hw)
    h, w = frame.shape[:2]
    alpha = cv2.warpAffine(
        region, transform, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0
    )[..., None]
    scale = np.sqrt(abs(np.linalg.det(transform[:, :2])))  # crop pixels per frame pixel
    sigma = max(LOST_BLUR * face_size(lm) / max(scale, 1e-6), 2.0)
    blurred = cv2.GaussianBlur(frame, (0, 0), sigma)
    mixed = frame.astype(np.float32) * (1 - alpha) + blurred.astype(np.float32) * alpha
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


# A source of per-frame masks in driving-frame pixels: ``masks(t) -> (mask, exact)`` or
# None. ``exact=True`` (a mask the user painted) replaces the landmark blend region;
# ``exact=False`` (a face parser's mask) only trims it.
MaskSource = Callable[[int], "tuple[np.ndarray, bool] | None"]


def _mask_in_crop(
    masks: MaskSource | None,
    t: int,
    transform: np.ndarray,
    drv: np.ndarray,
    moved: np.ndarray,
    crop_hw: tuple[int, int],
) -> np.ndarray:
    """The blend mask of frame ``t`` in crop space, honouring painted or parsed masks."""
    import cv2

    given = masks(t) if masks is not None else None
    if given is None:
        return blend_mask(drv, moved, crop_hw)
    mask, exact = given
    in_crop = cv2.warpAffine(
        np.asarray(mask, np.float32), transform, (crop_hw[1], crop_hw[0]), flags=cv2.INTER_LINEAR
    )
    if not exact:
        return blend_mask(drv, moved, crop_hw, parser_mask=in_crop)
    return np.clip(cv2.GaussianBlur(in_crop, (0, 0), 0.02 * crop_hw[1]), 0.0, 1.0)


def _scale_transform(from_shape: tuple, to_shape: tuple) -> np.ndarray:
    """(2, 3) map from pixels of a frame of ``from_shape`` to one of ``to_shape``
    (pixel centres kept: ``x' = (x + 0.5) * s - 0.5``)."""
    sx, sy = to_shape[1] / from_shape[1], to_shape[0] / from_shape[0]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])


def _compose(frame_to_crop: np.ndarray, frame_to_target: np.ndarray) -> np.ndarray:
    """The target-frame -> crop transform, given frame -> crop and frame -> target."""

    def full(m: np.ndarray) -> np.ndarray:
        return np.vstack([m, [0.0, 0.0, 1.0]])

    return (full(frame_to_crop) @ np.linalg.inv(full(frame_to_target)))[:2]


def _stream_unchanged(
    target: tuple[Callable[[int], np.ndarray], int], keep_frames: bool
) -> ProgressGenerator[np.ndarray | None]:
    """The generated frames as they are, streamed like enhanced ones (no face to enhance)."""
    kept = []
    for t in range(target[1]):
        frame = np.asarray(target[0](t))
        if keep_frames:
            kept.append(frame)
        yield Progress("face", t + 1, target[1], 0.0, (t, frame))
    return np.stack(kept) if keep_frames else None


def enhance_faces(
    generated_frames: FrameSource,
    original_track: FaceTrack,
    original_frames_getter: Callable[[int], np.ndarray],
    *,
    backend: ReenactBackend,
    source_frame_index: int,
    edits: dict | None = None,
    masks: MaskSource | None = None,
    keep_frames: bool = True,
    teeth: Sequence[bool] | None = None,
) -> ProgressGenerator[tuple[np.ndarray | None, FaceReport]]:
    """Give the generated clip the original signer's facial expressions (DiffSLVA step 6-7).

    The source face is the generated frame ``source_frame_index``'s (the anchor frame: its
    identity is kept); the driving faces are the original signer's, aligned with
    ``original_track`` (after the manual ``edits``, see
    :func:`~napari_diffslva.prepare.faces.apply_edits`). Motion is measured from the
    original's own face at the anchor frame, whose expression the generated face already
    shows. Only measurements of the original are used (see the module docstring; ``teeth``
    overrides the per-frame teeth bit, else measured); frames whose face is lost keep the
    generated frame. Returns the (T, H, W, 3) frames and a :class:`FaceReport`; each
    finished frame is streamed as ``Progress.payload = (t, frame)``.
    """
    target = frame_getter(generated_frames)
    track = original_track
    if edits:
        track = apply_edits(track, edits, (original_frames_getter, len(track)))
    if target[1] != len(track):
        raise DiffslvaError(
            f"generated clip has {target[1]} frames but the face track has {len(track)}"
        )
    report = FaceReport(backend=backend.name, frames=len(track))
    faces = track.face_frames
    if not faces:  # nothing to enhance: stream the frames through unchanged
        report.lost_frames = list(range(len(track)))
        return (yield from _stream_unchanged(target, keep_frames)), report
    # The anchor must show a tracked face: else use the nearest frame that does.
    anchor = min(faces, key=lambda t: abs(t - source_frame_index))
    report.source_frame_index = anchor
    anchor_frame = np.asarray(target[0](anchor))
    to_target = _scale_transform(
        np.asarray(original_frames_getter(anchor)).shape, anchor_frame.shape
    )
    x0, y0, x1, y1 = transform_points(track.boxes[anchor].reshape(2, 2), to_target).ravel()
    source = SourceFace.from_frame(anchor_frame, FaceBox(x0, y0, x1, y1))
    frames = yield from _paste_faces(
        target,
        original_frames_getter,
        track,
        source,
        anchor,
        backend,
        report,
        masks,
        keep_frames,
        teeth=teeth,
    )
    return frames, report


def reenact_video(
    source_image: np.ndarray,
    driving_frames: FrameSource,
    *,
    backend: ReenactBackend,
    track: FaceTrack | None = None,
    edits: dict | None = None,
    teeth: Sequence[bool] | None = None,
) -> ProgressGenerator[tuple[np.ndarray, FaceReport]]:
    """Put the face of ``source_image`` into the driving clip, with the driver's
    expressions, on the driver's face track (tracked here unless ``track`` is given).

    The motion is measured from the driving frame whose expression is closest to the
    source photo's. The driver's face never shows: it is covered fully where tracked, and
    on lost or occluded frames (``report.held_frames``) the new face is pasted at the
    interpolated or held pose over a blurred face region. The rest of the frame (hair,
    body, hands, background) is the driving video's: this is face replacement, not full
    anonymization. ``teeth`` overrides the per-frame teeth bit (else measured). Returns
    the frames and a :class:`FaceReport`.
    """
    get, count = frame_getter(driving_frames)
    if track is None:
        track = yield from track_faces((get, count))
    if edits:
        track = apply_edits(track, edits, (get, count))
    source = SourceFace.from_frame(source_image, _largest_face(source_image, "source image"))
    report = FaceReport(backend=backend.name, frames=count)
    if not track.face_frames:
        raise DiffslvaError("driving video: no face found in any frame; nothing to reenact")
    candidates = [None if track.status[t] == LOST else track.landmarks[t] for t in range(count)]
    neutral = neutral_frame(candidates, like=source.landmarks)  # scale-free comparison
    frames = yield from _paste_faces(
        (get, count),
        get,
        track,
        source,
        neutral,
        backend,
        report,
        target_is_driver=True,
        teeth=teeth,
    )
    return frames, report
