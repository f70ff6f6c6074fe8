"""The face-region control map on real clips (issue 12): no pixel and no contour of the
signer's face reaches ControlNet, the expression does.

- Pixel independence: a copy of a real clip whose mouth, or whole face, holds another real
  person's aligned face or noise, with the same face track, gives the same control map
  inside the face region on every frame (the edges there differ a lot).
- Geometry independence: two real people driven by one landmark motion give the same
  sketch; two expressions of one person give different sketches.
- Frames without a face, clips without a face, the leaky ``face_control=edges`` and the
  prepare stage's cache.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FACE_CLIPS, face_clip_frames
from napari_diffslva.geometry import working_geometry
from napari_diffslva.prepare.edges import get_edge_detector
from napari_diffslva.prepare.face_control import FaceControl
from napari_diffslva.prepare.face_sketch import head_placement
from napari_diffslva.prepare.faces import (
    DETECTED,
    LOST,
    FaceTrack,
    track_faces,
)
from napari_diffslva.progress import run_to_end
from napari_diffslva.testing.face_swap import face_part_mask, replace_face_part


@pytest.fixture(scope="module")
def photos(face_photos):
    """``name -> (image, landmarks)`` of three real face photos."""
    return {name: (image, lm.astype(np.float64)) for name, (image, _, lm) in face_photos.items()}


@pytest.fixture(scope="module", params=list(FACE_CLIPS))
def clip(request, real_clip):
    """(name, frames, face track) of a real clip."""
    frames = face_clip_frames(real_clip, request.param)
    return request.param, frames, run_to_end(track_faces(frames))


def _work_mask(mask: np.ndarray, geo) -> np.ndarray:
    """A source-size boolean mask at working size (every working pixel it touches)."""
    import cv2

    grown = cv2.resize(mask.astype(np.uint8), geo.work_hw[::-1], interpolation=cv2.INTER_AREA)
    return grown > 0


@pytest.mark.parametrize("part", ["mouth", "face"])
@pytest.mark.parametrize("fill", ["face", "noise"])
def test_control_map_independent_of_face_pixels(clip, photos, part, fill):
    name, frames, track = clip
    other = replace_face_part(frames, track, part, photos["biden_1"] if fill == "face" else None)
    geo = working_geometry(frames.shape[1:3])
    face = FaceControl(track, geo)
    detect = get_edge_detector("soft", safe=True)
    edges_differ = 0
    for t in range(len(frames)):
        edges_a, edges_b = detect(geo.to_work(frames[t])), detect(geo.to_work(other[t]))
        control_a, _, region = face.maps(t, edges_a, safe=True)
        control_b, _, region_b = face.maps(t, edges_b, safe=True)
        inside = region == 1.0
        assert np.array_equal(region, region_b)
        assert np.array_equal(control_a[inside], control_b[inside]), f"{name} frame {t}"
        if t in track.face_frames:  # every replaced pixel lies where the map is the sketch
            replaced = _work_mask(face_part_mask(track.landmarks[t], frames.shape[1:3], part), geo)
            assert inside[replaced].all(), f"{name} frame {t}: the region misses the {part}"
        edges_differ += int((edges_a != edges_b)[inside].sum())
    # not vacuous: the edges themselves (face_control=edges) do see the replacement
    assert edges_differ > 50 * len(frames), name


def _driven(neutral: np.ndarray, motion: FaceControl, photo: np.ndarray) -> FaceTrack:
    """A track of ``photo``'s face making ``motion``'s expressions at its head poses: the
    photo's landmarks placed like the signer's neutral face (position, size, roll), plus
    the signer's landmark displacement since that neutral face at each frame's pose."""
    r = motion.retargeting
    placed = head_placement(neutral).after(head_placement(photo).inverse())(photo)
    track = FaceTrack.empty(len(r.landmarks))
    for t in range(len(r.landmarks)):
        pose = r.pose(t)
        track.landmarks[t] = pose(placed + pose.inverse()(r.landmarks[t]) - neutral)
    track.status[:] = DETECTED
    return track


@pytest.fixture(scope="module")
def talking(real_clip):
    """The talking-head clip's face control (it opens and closes the mouth a lot)."""
    frames = face_clip_frames(real_clip, "face_talking.mp4")
    geo = working_geometry(frames.shape[1:3])
    return geo, FaceControl(run_to_end(track_faces(frames)), geo)


def test_two_people_with_one_motion_give_one_sketch(talking, photos):
    geo, motion = talking
    neutral = motion.retargeting.neutral
    people = {
        name: FaceControl(_driven(neutral, motion, photos[name][1]), geo)
        for name in ("obama_1", "biden_1")
    }
    a, b = people["obama_1"].retargeting, people["biden_1"].retargeting
    gap = [np.linalg.norm(lm[62] - lm[66]) for lm in motion.retargeting.landmarks]
    closed, opened = int(np.argmin(gap)), int(np.argmax(gap))
    expression = np.abs(a.sketch_points(closed)[0] - a.sketch_points(opened)[0]).max()
    same_image_gap = people["obama_1"].sketch(closed) - people["obama_1"].sketch(opened)
    for t in range(len(gap)):
        drivers = np.abs(a.landmarks[t] - b.landmarks[t]).max()
        sketches = np.abs(a.sketch_points(t)[0] - b.sketch_points(t)[0]).max()
        assert drivers > 15  # two different faces (pixels at working size)
        assert sketches < 0.1 * drivers and sketches < 0.05 * expression, (t, sketches)
        images = np.abs(people["obama_1"].sketch(t) - people["biden_1"].sketch(t)).mean()
        assert images < 0.05 * np.abs(same_image_gap).mean(), t


def test_the_sketch_carries_expression_and_not_the_face(talking, photos):
    geo, motion = talking
    r = motion.retargeting
    gap = [np.linalg.norm(lm[62] - lm[66]) for lm in r.landmarks]
    closed, opened = int(np.argmin(gap)), int(np.argmax(gap))
    shut, wide = r.sketch_points(closed)[0], r.sketch_points(opened)[0]
    # the mouth opens in the sketch as much as the signer's does (same pixels, same pose)
    sketch_gap = np.linalg.norm(wide[62] - wide[66]) - np.linalg.norm(shut[62] - shut[66])
    assert sketch_gap == pytest.approx(gap[opened] - gap[closed], rel=0.1)
    # ... but the sketch's face is not the signer's: at the neutral face the sketch is the
    # template, which differs from the signer's landmarks far more than dlib's jitter
    assert np.abs(shut - r.landmarks[closed]).max() > 10
    # another template seed gives another face with the same expression
    other = FaceControl(motion.track, geo, shape_seed=3).retargeting
    assert np.abs(other.sketch_points(opened)[0] - wide).max() > 5


def test_frames_without_a_face_keep_the_region(clip):
    """Frames the tracker lost (or a hand covers) still get the sketch and a region that
    covers the face where it really is."""
    name, frames, track = clip
    geo = working_geometry(frames.shape[1:3])
    lost = track.copy()
    hidden = list(range(len(track)))[len(track) // 3 : len(track) // 3 + 4] + [len(track) - 1]
    lost.status[hidden], lost.landmarks[hidden], lost.boxes[hidden] = LOST, np.nan, np.nan
    face = FaceControl(lost, geo)
    assert face.summary()["held_frames"] == hidden
    for t in hidden:
        _, sketch, region = face.maps(t, np.zeros(geo.work_hw, np.float32), safe=True)
        real_face = _work_mask(face_part_mask(track.landmarks[t], frames.shape[1:3], "face"), geo)
        assert (region[real_face] == 1.0).all(), (name, t)
        assert sketch[region == 1.0].max() == pytest.approx(1.0, abs=0.01)


def test_a_clip_without_a_face_keeps_its_edges():
    geo = working_geometry((240, 320))
    face = FaceControl(FaceTrack.empty(3), geo)
    edges = np.random.default_rng(0).random(geo.work_hw).astype(np.float32)
    control, sketch, region = face.maps(1, edges, safe=False)
    assert np.array_equal(control, edges) and not sketch.any() and not region.any()
    assert "no face" in face.summary()["note"]


def test_prepare_stage_caches_the_control_map(clip_head, tmp_path):
    """The prepare stage composes the map from its cached edges and the edited track; the
    engine reads it through ``Prepared.control``; the cache key follows the track."""
    from dataclasses import replace

    from napari_diffslva.prepare.edges import edges_from_uint8, edges_to_uint8
    from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip
    from napari_diffslva.project import RunFolder

    clip, run = clip_head("asl_house.gif", 6), tmp_path / "run"
    settings = PrepareSettings(short_side=128)
    assert settings.safe_edges and settings.face_control == "sketch"  # the safe defaults
    stages = ("faces", "edges")
    prepared = run_to_end(prepare_clip(clip, run, settings, stages=stages))
    assert prepared.controls.complete
    face = FaceControl(prepared.track, prepared.geometry)
    for i in range(6):
        edges = edges_from_uint8(prepared.edges.read(i)["edges"])
        expected = edges_from_uint8(edges_to_uint8(face.maps(i, edges, safe=True)[0]))
        assert np.array_equal(prepared.control(i), expected)
        assert set(np.unique(prepared.controls.read(i)["control"])) <= {0, 128, 255}  # safe
        assert not np.array_equal(prepared.control(i), edges)
    assert prepared.summary()["face_control"]["face_control"] == "sketch"
    # the old behaviour, on request only: the edge map itself, from the same edge cache
    leaky = run_to_end(prepare_clip(clip, run, replace(settings, face_control="edges"), stages))
    assert leaky.controls is None and leaky.edges.folder == prepared.edges.folder
    assert np.array_equal(leaky.control(3), edges_from_uint8(prepared.edges.read(3)["edges"]))
    # a face-track edit makes new control maps from the same edge maps
    RunFolder(run).write_edits({"status": {"2": "occluded"}})
    edited = run_to_end(prepare_clip(clip, run, settings, stages))
    assert edited.edges.folder == prepared.edges.folder
    assert edited.controls.folder != prepared.controls.folder and edited.controls.complete
    assert edited.summary()["face_control"]["held_frames"] == [2]
    assert not np.array_equal(edited.control(2), prepared.control(2))


@pytest.mark.parametrize("name", ["face_talking.mp4", "sl_soup.mp4", "asl_selfie_webcam.mp4"])
def test_diffusion_starts_from_a_face_that_is_no_longer_the_signer(clip_head, tmp_path, name):
    """``face_start=blur`` (the default): the frame SDEdit encodes has the face region
    blurred until dlib no longer recognises the signer there; outside the region the
    frame is the source's; ``original`` gives the source frame and another run key."""
    from napari_diffslva.audit.identity import (
        SAME_PERSON_THRESHOLD,
        embedding_distance,
        face_in_box,
        face_in_place,
    )
    from napari_diffslva.prepare.faces import FaceBox
    from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip

    clip = clip_head(name, 4)
    prepared = run_to_end(prepare_clip(clip, tmp_path / "run", PrepareSettings(edges="soft")))
    assert prepared.settings.face_start == "blur"
    for i in (0, 3):
        source, start = prepared.source_frame(i), prepared.frame(i)
        region = prepared.controls.read(i)["region"]
        assert np.array_equal(start[region == 0], source[region == 0])
        sy, sx = prepared.geometry.scale_yx
        x0, y0, x1, y1 = prepared.track.boxes[i]
        box = FaceBox(x0 * sx, y0 * sy, x1 * sx, y1 * sy, 1.0)
        signer = face_in_box(source, box)[1]
        distance = embedding_distance(face_in_place(start, box).embedding, signer)
        assert distance > SAME_PERSON_THRESHOLD, (i, distance)
    original = run_to_end(
        prepare_clip(clip, tmp_path / "run", PrepareSettings(edges="soft", face_start="original"))
    )
    assert np.array_equal(original.frame(2), original.source_frame(2))
    assert original.inputs_key != prepared.inputs_key
