"""Identity part of the audit: dlib embeddings on real faces, leaks on a real clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_diffslva.audit import identity as I
from napari_diffslva.audit.run import audit_clips
from napari_diffslva.prepare.faces import FaceBox, detect_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames


@pytest.fixture(scope="module")
def photo_embeddings(real_clip):
    out = {}
    for name in ("obama_1", "obama_2", "biden_1"):
        frame = read_frames(real_clip(f"faces/{name}.jpg"))[0]
        (box, *_) = detect_faces(frame)
        out[name] = I.face_in_box(frame, box)[1]
    return out


@pytest.fixture(scope="module")
def soup(real_clip):
    return read_frames(real_clip("sl_soup.mp4"))


@pytest.fixture(scope="module")
def soup_self_audit(soup):
    return run_to_end(audit_clips(soup, soup, max_frames=8))


def test_same_person_below_threshold_different_person_above(photo_embeddings):
    e = photo_embeddings
    same = I.embedding_distance(e["obama_1"], e["obama_2"])
    different = [I.embedding_distance(e[a], e["biden_1"]) for a in ("obama_1", "obama_2")]
    assert same < I.SAME_PERSON_THRESHOLD < min(different)
    # dlib embeddings are not zero-centred: the different person's cosine is still high,
    # which is why the audit reports the L2 distance.
    cosine = (
        e["obama_1"] @ e["biden_1"] / np.linalg.norm(e["obama_1"]) / np.linalg.norm(e["biden_1"])
    )
    assert cosine > 0.7


def test_reference_of_one_person_stays_close_to_each_photo(photo_embeddings):
    e = photo_embeddings
    reference = I.signer_reference(np.stack([e["obama_1"], e["obama_2"]]))
    assert I.embedding_distance(reference, e["obama_1"]) < I.embedding_distance(
        e["obama_1"], e["obama_2"]
    )
    assert I.embedding_distance(reference, e["biden_1"]) > I.SAME_PERSON_THRESHOLD


def test_clip_against_itself_is_not_anonymized_on_any_face_frame(soup_self_audit):
    idn = soup_self_audit.identity
    assert idn.measured
    assert len(idn.original_face_frames) == len(soup_self_audit.frame_indices) == 8
    assert idn.leak_frames == idn.original_face_frames
    assert idn.no_face_frames == []
    assert np.nanmax(idn.distance) < I.SAME_PERSON_THRESHOLD
    assert (idn.similarity > 0.5).all()
    summary = idn.summary()
    assert summary["leak_fraction"] == 1.0 and summary["no_leak"] is False


def test_locate_face_near_follows_a_moved_face_and_ignores_far_ones(soup):
    frame = soup[10]
    (box, *_) = detect_faces(frame)
    shifted = np.roll(frame, 12, axis=1)
    found = I.locate_face_near(shifted, box)
    assert found is not None
    assert abs(found.center[0] - (box.center[0] + 12)) < 0.25 * box.width
    assert I.box_iou(found, box) > 0.3
    # Where the face was blurred out there is nothing to find.
    blurred = frame.copy()
    x0, y0, x1, y1 = (int(v) for v in box.as_array())
    blurred[y0:y1, x0:x1] = cv2.GaussianBlur(blurred[y0:y1, x0:x1], (0, 0), box.width / 4)
    assert I.locate_face_near(blurred, box) is None
    # A search box far from the face (bottom-left corner) does not reach it.
    corner = FaceBox(0, frame.shape[0] - 40, 40, frame.shape[0])
    assert I.locate_face_near(frame, corner) is None


def test_box_iou():
    a = FaceBox(0, 0, 10, 10)
    assert I.box_iou(a, a) == 1.0
    assert I.box_iou(a, FaceBox(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert I.box_iou(a, FaceBox(20, 20, 30, 30)) == 0.0
