"""The control map ControlNet sees: the edge map outside the face region, a sketch inside.

An edge map of the signer's face holds every contour of their eyes, brows, nose, lips,
jaw and ears, and the generated face inherits that geometry. So inside the face region
the edges are replaced by a sketch of a template face that carries the signer's
expression and head pose (:mod:`.face_sketch`); outside it (hands, body, background) the
edges are kept as they are, since handshapes are the language.

The face region is an egg placed with the head (position, scale, roll): two half
ellipses, wide above for the forehead and ears, tighter below around the chin, so the
body and the hands under the chin keep their edges. Not the face's outline: its boundary
carries two sizes per clip and no contour. It is as large as it must be to cover, on
every tracked frame, the signer's landmarks, the forehead up to the hairline, the ears
beside the jaw and the sketch itself, then grown by the edge detector's support
(:data:`SUPPORT_PX`): inside it the control map depends on the face track alone. Its
edge fades into the edge map over :data:`FEATHER_PX`.

Frames without a tracked face, in a clip that has one: the landmarks are interpolated
between the face frames around them (held at the clip's ends), the region grows with the
distance to the nearest face frame (:data:`HELD_GROWTH`), and the sketch is drawn there:
a face that a hand covers or the tracker lost is still replaced. A clip in which no face
is found at all keeps its edge map; :meth:`FaceControl.summary` says so.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from ..geometry import WorkingGeometry
from ..progress import Progress, ProgressGenerator
from ..project import FrameStore, settings_key
from .face_sketch import Retargeting, draw_sketch, filled_landmarks
from .face_template import hairline_arc, template_shape
from .faces import LOST, FaceTrack

FACE_CONTROLS = ("sketch", "edges")
FACE_STARTS = ("blur", "original")  # what SDEdit starts from inside the face region
# Blur of the face region, in Gaussian sigma per face width. Measured with the audit's dlib
# embeddings on face_talking, sl_soup and asl_selfie_webcam frames: at 0.05 the blurred
# face is still the signer on some frames (0.58-0.65), from 0.08 on it no longer is
# (0.68-0.82), at 0.12 0.74-0.84 and no detector finds a face (same person below 0.6).
FACE_BLUR = 0.12
# sqrt(region area) / dlib box width at working size: 1.36-1.56 on four real clips; the
# lower end, so a small-faced clip is blurred a little more, not less.
REGION_PER_FACE_WIDTH = 1.4
SKETCH_VERSION = 2  # bump when the sketch or region drawing changes (cache keys)
# The region in canonical face coordinates (face size 1): centre, half width, half height.
REGION_CENTRE = (0.0, 0.0)
REGION_AXES = (0.68, 0.87)
FOREHEAD = 0.55  # the hairline above the brows, in brow-to-chin heights
EAR = 0.12  # how far the ears reach out beside the jaw's upper half, canonical units
SUPPORT_PX = 16  # working pixels over which an edge detector answers a contour
FEATHER_PX = 8  # the region's edge fades into the edge map over this many pixels
HELD_GROWTH, HELD_MAX = 0.05, 0.5  # region growth per frame from a face frame, and cap


def coverage_points(signer: np.ndarray) -> np.ndarray:
    """The points the region must cover for one face (canonical coordinates): its 68
    landmarks, the brows lifted to the hairline, and the ears beside the jaw."""
    lm = np.asarray(signer, np.float64)
    brows, chin = lm[17:27], lm[8]
    forehead = brows + FOREHEAD * (brows.mean(0) - chin)
    upper_jaw = np.vstack([lm[0:5], lm[12:17]])
    side = np.sign(upper_jaw[:, :1] - lm[27, 0])
    ears = upper_jaw + side * np.array([EAR, 0.0])
    ear_tops = np.array([[lm[0, 0] - EAR, brows[:, 1].min()], [lm[16, 0] + EAR, brows[:, 1].min()]])
    return np.vstack([lm, forehead, ears, ear_tops])


def region_reach(points: np.ndarray) -> tuple[float, float]:
    """``(upper, lower)``: how many times the region's upper half ellipse (width and
    height) and its lower half's height must be scaled to hold ``points``."""
    d = (np.asarray(points, np.float64) - REGION_CENTRE) / np.asarray(REGION_AXES)
    above, below = d[d[:, 1] <= 0], d[d[:, 1] > 0]
    upper = max(1.0, float(np.hypot(*above.T).max()) if len(above) else 1.0)
    if len(below):  # the lower half shares the width; it must reach past every point
        upper = max(upper, 1.01 * float(np.abs(below[:, 0]).max()))
        lower = float((below[:, 1] / np.sqrt(1 - (below[:, 0] / upper) ** 2)).max())
    else:
        lower = 0.0
    return upper, max(lower, 0.5)


def track_digest(track: FaceTrack) -> str:
    """A short hash of what the sketch depends on in a track (landmarks and status)."""
    h = hashlib.sha256(np.ascontiguousarray(track.landmarks, np.float32).tobytes())
    h.update(np.ascontiguousarray(track.status, np.uint8).tobytes())
    return h.hexdigest()[:16]


class FaceControl:
    """Per-frame face sketch, region and control map of one clip at working size."""

    def __init__(self, track: FaceTrack, geometry: WorkingGeometry, shape_seed: int = 0):
        sy, sx = geometry.scale_yx
        self.hw = geometry.work_hw
        self.track = track
        self.retargeting = Retargeting.from_track(track, template_shape(shape_seed), (sx, sy))
        if self.retargeting is not None:
            self.gap = filled_landmarks(track)[1]
            self.reach = self._clip_reach()

    @property
    def has_face(self) -> bool:
        return self.retargeting is not None

    def _clip_reach(self) -> tuple[float, float]:
        """The region's two scales for the clip: the largest over its face frames of
        what the signer's face and the sketch need."""
        r = self.retargeting
        upper, lower = 1.0, 0.5
        for t in np.flatnonzero(self.track.status != LOST):
            shape = r.canonical(t)
            needed = np.vstack([coverage_points(r.signer_canonical(t)), shape, hairline_arc(shape)])
            up, down = region_reach(needed)
            upper, lower = max(upper, up), max(lower, down)
        return upper, lower

    def region(self, t: int) -> np.ndarray:
        """float32 ``(H, W)`` weight of the sketch: 1 over the face region, fading out."""
        import cv2

        place = self.retargeting.placement(t)
        grow = (1.0 + min(HELD_GROWTH * self.gap[t], HELD_MAX)) * place.scale
        (upper, lower), (width, height) = self.reach, REGION_AXES
        shift = 4  # sub-pixel precision of the drawing

        def fixed(values) -> tuple[int, ...]:
            return tuple(int(round(v * (1 << shift))) for v in values)

        centre = fixed(place(np.array([REGION_CENTRE]))[0])
        inside = np.zeros(self.hw, np.uint8)
        for half, start in ((upper, 180), (lower, 0)):  # image y down: 180..360 is above
            axes = fixed((upper * width * grow + SUPPORT_PX, half * height * grow + SUPPORT_PX))
            angle = np.degrees(place.angle)
            cv2.ellipse(inside, centre, axes, angle, start, start + 180, 1, -1, cv2.LINE_8, shift)
        distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
        return np.clip(1.0 - distance / FEATHER_PX, 0.0, 1.0).astype(np.float32)

    def sketch(self, t: int) -> np.ndarray:
        """float32 ``(H, W)`` soft lines of the template face with frame ``t``'s expression."""
        landmarks, hairline = self.retargeting.sketch_points(t)
        return draw_sketch(landmarks, hairline, self.hw)

    def maps(
        self, t: int, edges: np.ndarray, safe: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(control, sketch, region)`` of frame ``t`` from its edge map (float32 [0, 1]);
        ``safe`` quantises the result like the edges (one look for the whole map)."""
        from .edges import safe_quantize

        if not self.has_face:
            zeros = np.zeros(self.hw, np.float32)
            return np.asarray(edges, np.float32), zeros, zeros
        sketch, region = self.sketch(t), self.region(t)
        control = edges * (1.0 - region) + sketch * region
        return (safe_quantize(control) if safe else control.astype(np.float32)), sketch, region

    def summary(self) -> dict:
        """Which frames got which treatment (for the prepare summary and the docs)."""
        if not self.has_face:
            return {
                "face_control": "none",
                "note": "no face was found in any frame, so the control map is the edge map "
                "everywhere; mark the face by hand if the clip shows one",
            }
        lost = np.flatnonzero(self.track.status == LOST)
        return {
            "face_control": "sketch",
            "held_frames": [int(t) for t in lost],
            "region_reach": [round(v, 3) for v in self.reach],
        }


def control_key(edges_key: str, track: FaceTrack, face_control: str, face_shape: int) -> str:
    """The cache key of a clip's control maps: the edge maps they start from, the track
    (with its edits), the treatment and the drawing's version."""
    return settings_key(
        "control", edges_key, face_control, face_shape, track_digest(track), SKETCH_VERSION
    )


def write_control_maps(
    store: FrameStore, edges: FrameStore, face: FaceControl, safe: bool
) -> ProgressGenerator[None]:
    """Compose and cache the control map (arrays ``control``, ``sketch``, ``region``,
    uint8) of every frame that has cached edges and no control map yet."""
    from .edges import edges_from_uint8, edges_to_uint8

    todo = [i for i in store.missing() if edges.has(i)]
    for n, i in enumerate(todo):
        start = time.perf_counter()
        control, sketch, region = face.maps(i, edges_from_uint8(edges.read(i)["edges"]), safe)
        store.write(
            i,
            control=edges_to_uint8(control),
            sketch=edges_to_uint8(sketch),
            region=edges_to_uint8(region),
        )
        yield Progress("face control", n + 1, len(todo), time.perf_counter() - start)
    if todo and not store.missing():
        store.mark_complete()


def blur_face_region(frame: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``frame`` with the face ``region`` (float weights in [0, 1]) replaced by a blur of
    :data:`FACE_BLUR` face widths, so SDEdit starts from light and skin tone there, not
    from the signer's features. The face width is estimated from the region's area."""
    import cv2

    inside = float((region > 0.5).sum())
    if inside == 0:
        return frame
    sigma = FACE_BLUR * np.sqrt(inside) / REGION_PER_FACE_WIDTH
    blurred = cv2.GaussianBlur(frame, (0, 0), sigma)
    w = region[..., None]
    mixed = frame.astype(np.float32) * (1 - w) + blurred.astype(np.float32) * w
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
