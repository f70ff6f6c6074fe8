"""Reenactment on real clips: expressions follow the driver, identity stays the source's,
lost faces get the held new face, edits are honoured; the pipeline entry point and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_diffslva.audit.expression import FEATURES, expression_features, pearson
from napari_diffslva.audit.identity import embedding_distance, face_embedding
from napari_diffslva.face.backends import StillBackend, make_backend
from napari_diffslva.face.enhance import enhance_faces, reenact_video
from napari_diffslva.prepare.faces import face_landmarks, track_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames

MOUTH = FEATURES.index("mouth_open")


def output_features(frames, track, frame_list):
    """Expression features of the face in each listed frame (landmarks found in the
    track's box, where the pasted face sits)."""
    hw = frames.shape[1:3]
    return np.stack(
        [expression_features(face_landmarks(frames[t], track.box(t)), hw) for t in frame_list]
    )


@pytest.fixture(scope="module")
def talking(real_clip):
    frames = read_frames(real_clip("face_talking.mp4"), 0, 60)[::3].copy()  # 20 frames
    track = run_to_end(track_faces(frames, upsample=0))  # a big face: HOG at native size
    return frames, track


@pytest.fixture(scope="module")
def obama(real_clip):
    return read_frames(real_clip("faces/obama_1.jpg"))[0]


def test_expressions_follow_driver_identity_stays_source(talking, obama):
    frames, track = talking
    out, report = run_to_end(
        reenact_video(obama, frames, backend=make_backend("warp"), track=track)
    )
    still, _ = run_to_end(reenact_video(obama, frames, backend=StillBackend(), track=track))
    faces = report.enhanced_frames
    assert len(faces) == len(frames) and report.lost_frames == []
    driver = np.stack([expression_features(track.landmarks[t], frames.shape[1:3]) for t in faces])
    on = pearson(driver[:, MOUTH], output_features(out, track, faces)[:, MOUTH])
    off = pearson(driver[:, MOUTH], output_features(still, track, faces)[:, MOUTH])
    assert on > 0.8
    assert np.isnan(off) or on > off + 0.4
    # identity: the output is not the driver (dlib: same person below 0.6)
    far = []
    for t in faces[::3]:
        box = track.box(t)
        lm_out = face_landmarks(out[t], box)
        d = embedding_distance(
            face_embedding(out[t], box, lm_out), face_embedding(frames[t], box, track.landmarks[t])
        )
        far.append(d > 0.6)
    assert np.mean(far) > 0.7


def test_enhance_restores_flattened_expressions(talking):
    """Pipeline entry: a 'generated' clip whose face is frozen at the anchor frame gets the
    original's mouth motion back; manual edits (a frame marked lost) are honoured."""
    frames, track = talking
    anchor = 5
    flat, _ = run_to_end(reenact_video(frames[anchor], frames, backend=StillBackend(), track=track))
    edits = {"status": {"7": "lost"}}
    gen = enhance_faces(
        flat,
        track,
        frames.__getitem__,
        backend=make_backend("warp"),
        source_frame_index=anchor,
        edits=edits,
    )
    out, report = run_to_end(gen)
    assert report.source_frame_index == anchor and report.neutral_frame_index == anchor
    assert 7 in report.lost_frames and 7 not in report.enhanced_frames
    assert np.array_equal(out[7], flat[7])
    faces = report.enhanced_frames
    driver = np.stack([expression_features(track.landmarks[t], frames.shape[1:3]) for t in faces])
    before = pearson(driver[:, MOUTH], output_features(flat, track, faces)[:, MOUTH])
    after = pearson(driver[:, MOUTH], output_features(out, track, faces)[:, MOUTH])
    assert after > 0.8 and (np.isnan(before) or after > before + 0.3)


def test_enhance_at_working_resolution(talking):
    """Generated frames at another size than the original (the 512 px working size in the
    pipeline): faces are pasted at the right place and still follow the driver."""
    import cv2

    from napari_diffslva.prepare.faces import FaceBox

    frames, track = talking
    flat, _ = run_to_end(reenact_video(frames[5], frames, backend=StillBackend(), track=track))
    size = 300
    small = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in flat])
    out, report = run_to_end(
        enhance_faces(
            small, track, frames.__getitem__, backend=make_backend("warp"), source_frame_index=5
        )
    )
    assert out.shape == small.shape
    sx, sy = size / frames.shape[2], size / frames.shape[1]
    mouth_out, mouth_drv = [], []
    for t in report.enhanced_frames:
        x0, y0, x1, y1 = track.boxes[t]
        box = FaceBox(x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        lm = face_landmarks(out[t], box)
        mouth_out.append(expression_features(lm, out.shape[1:3])[MOUTH])
        mouth_drv.append(expression_features(track.landmarks[t], frames.shape[1:3])[MOUTH])
    assert pearson(mouth_drv, mouth_out) > 0.7


def test_lost_and_occluded_frames_never_show_the_real_face(real_clip, obama):
    """asl_selfie_webcam: a hand covers the face in some frames. There the new face is
    pasted at the held/interpolated pose over a blurred face region: inside the driver's
    face polygon of the nearest tracked frame almost no pixel keeps its original value,
    and no face found there is the driver's."""
    import cv2

    from napari_diffslva.audit.identity import SAME_PERSON_THRESHOLD, locate_face_near
    from napari_diffslva.prepare.face_mask import _face_polygon

    frames = read_frames(real_clip("asl_selfie_webcam.mp4"))
    out, report = run_to_end(reenact_video(obama, frames, backend=make_backend("warp")))
    assert report.lost_frames, "the hand covers the face in some frames"
    assert report.held_frames == report.lost_frames
    assert set(report.occluded_frames) <= set(report.lost_frames)
    assert len(report.enhanced_frames) > len(frames) // 2
    track = run_to_end(track_faces(frames))
    faces = np.array(track.face_frames)
    for t in report.lost_frames:
        near = int(faces[np.argmin(np.abs(faces - t))])
        region = np.zeros(frames.shape[1:3], np.uint8)
        hull = cv2.convexHull(np.round(_face_polygon(track.landmarks[near], 0.35)).astype(np.int32))
        cv2.fillConvexPoly(region, hull, 1)
        same = np.abs(out[t].astype(int) - frames[t]).max(-1)[region > 0] <= 2
        assert same.mean() < 0.05, (t, same.mean())
        box = locate_face_near(out[t], track.box(near))
        if box is not None:
            emb = face_embedding(out[t], box, face_landmarks(out[t], box))
            driver = face_embedding(frames[near], track.box(near), track.landmarks[near])
            assert embedding_distance(emb, driver) > SAME_PERSON_THRESHOLD, t
    changed = [np.abs(out[t].astype(int) - frames[t]).mean() for t in report.enhanced_frames]
    assert min(changed) > 0.5


def test_cli_reenact(tmp_path, real_clip, capsys):
    from napari_diffslva.cli import main
    from napari_diffslva.export import write_video
    from napari_diffslva.video import probe

    driving = tmp_path / "drv.mp4"
    write_video(read_frames(real_clip("face_talking.mp4"), 20, 28), driving, rate=25)
    out = tmp_path / "out.mp4"
    argv = ["reenact", str(real_clip("faces/biden_1.jpg")), str(driving), "-o", str(out)]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 8 and len(report["enhanced_frames"]) == 8
    assert probe(out).frames == 8
    assert main([*argv, "--json"]) == 2  # exists: refuses without --overwrite
    assert main([*argv, "--overwrite", "--backend", "reenact"]) == 2
    assert "vox.pth.tar" in capsys.readouterr().err
