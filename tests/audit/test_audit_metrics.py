"""The audit on a real clip against simple baselines, the hands/temporal metrics and the report.

Baselines: the unchanged clip keeps everything; a heavy blur of the face removes identity
and the expression with it; a horizontal flip keeps identity (and breaks the body layout).
"""

from __future__ import annotations

import base64
import json
import re

import cv2
import numpy as np
import pytest

from napari_diffslva.audit import hands as H
from napari_diffslva.audit.report import PLOTS, write_report
from napari_diffslva.audit.run import audit_clips, sample_frames
from napari_diffslva.audit.temporal import warp_errors
from napari_diffslva.errors import SettingsError, VideoError
from napari_diffslva.prepare.edges import soft_edges
from napari_diffslva.prepare.faces import detect_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames

AUDITED = 8


def blur_faces(frames: np.ndarray, grow: float = 0.3) -> np.ndarray:
    """The face of every frame (HOG box widened by ``grow``) under a heavy Gaussian blur."""
    out = frames.copy()
    for frame in out:
        for box in detect_faces(frame)[:1]:
            gx, gy = grow * box.width, grow * box.height
            x0, y0 = int(max(box.x0 - gx, 0)), int(max(box.y0 - gy, 0))
            x1, y1 = int(box.x1 + gx), int(box.y1 + gy)
            frame[y0:y1, x0:x1] = cv2.GaussianBlur(frame[y0:y1, x0:x1], (0, 0), box.width / 4)
    return out


@pytest.fixture(scope="module")
def soup(real_clip):
    return read_frames(real_clip("sl_soup.mp4"))


@pytest.fixture(scope="module")
def audits(soup):
    variants = {
        "unchanged": soup,
        "blur": blur_faces(soup),
        "flip": np.ascontiguousarray(soup[:, :, ::-1]),
    }
    return {
        name: run_to_end(audit_clips(soup, anon, max_frames=AUDITED))
        for name, anon in variants.items()
    }


def test_unchanged_clip_keeps_everything(audits):
    r = audits["unchanged"]
    assert r.identity.leak_frames == r.identity.original_face_frames
    assert len(r.identity.leak_frames) == AUDITED
    assert min(r.expression.correlation.values()) > 0.99
    assert max(r.expression.error.values()) < 1e-6
    assert np.allclose(r.hands.edge_f, 1.0) and np.allclose(r.hands.ssim, 1.0)
    assert r.temporal.warp_error_output == pytest.approx(r.temporal.warp_error_input)
    assert r.notes == []


def test_heavy_face_blur_removes_identity_and_expression_but_keeps_the_body(audits):
    r = audits["blur"]
    assert r.identity.leak_frames == []
    assert r.identity.no_face_frames == r.identity.original_face_frames
    assert np.isnan(r.identity.distance).all()
    # Fitted where the face was, the blurred face is still not the signer's.
    assert (r.identity.fitted_distance > r.identity.threshold).all()
    assert r.expression.fitted_without_detection_frames == r.frame_indices
    assert r.expression.summary()["mean_correlation"] < 0.5
    assert np.nanmean(r.hands.edge_f) > 0.9  # the face is outside the edge comparison
    assert 0.8 < np.nanmean(r.hands.ssim) < 0.99
    assert any("no detectable face" in n for n in r.notes)


def test_flip_keeps_identity_and_breaks_the_layout(audits):
    r = audits["flip"]
    assert r.identity.no_face_frames == []
    assert len(r.identity.leak_frames) == AUDITED
    assert np.nanmean(r.hands.edge_f) < 0.8 < np.nanmean(audits["blur"].hands.edge_f)
    corr = r.expression.correlation
    assert corr["head_yaw"] < 0.3  # mirrored head turns
    assert r.temporal.warp_error_output > 1.5 * r.temporal.warp_error_input


def test_json_shape(audits):
    j = json.loads(json.dumps(audits["blur"].to_json()))
    assert j["frames"] == 41 and len(j["frame_indices"]) == AUDITED
    assert len(j["identity"]["distance"]) == AUDITED
    assert all(d is None for d in j["identity"]["distance"])  # NaN -> null
    assert j["identity"]["threshold"] == 0.6
    for key in ("leak_frames", "no_face_frames"):
        assert all(isinstance(i, int) for i in j["identity"][key])
    assert set(j["expression"]["correlation"]) == set(j["expression"]["features"])
    assert isinstance(j["temporal"]["warp_error_input"], float)
    assert isinstance(j["temporal"]["warp_error_output"], float)


def test_temporal_error_grows_when_the_output_flickers(soup):
    frames = soup[10:16]
    flicker = frames.astype(np.int16)
    flicker[1::2] += 25  # brightness jumps every other frame
    flicker = np.clip(flicker, 0, 255).astype(np.uint8)
    for i in range(1, len(frames)):
        e_in, e_same = warp_errors(frames[i - 1], frames[i], frames[i - 1], frames[i])
        assert e_in == pytest.approx(e_same)
        e_in, e_out = warp_errors(frames[i - 1], frames[i], flicker[i - 1], flicker[i])
        assert e_out > e_in + 15


def test_hand_region_ssim_and_edge_exclusion(soup):
    frame = soup[20]
    hand = np.array([[90.0, 140.0, 170.0, 200.0], [np.nan] * 4])
    assert H.region_ssim(frame, frame, hand) == pytest.approx(1.0)
    smeared = frame.copy()
    smeared[140:200, 90:170] = cv2.GaussianBlur(smeared[140:200, 90:170], (0, 0), 4)
    assert H.region_ssim(frame, smeared, hand) < 0.8
    assert H.frame_ssim(frame, smeared) > H.region_ssim(frame, smeared, hand)
    assert np.isnan(H.region_ssim(frame, frame, np.array([[0, 0, 3, 3]])))  # too small
    # A change confined to the excluded region does not lower the edge F-score.
    (face, *_) = detect_faces(frame)
    mask = H.box_mask(frame.shape[:2], face.as_array())
    changed = frame.copy()
    changed[mask] = 128
    a, b = soft_edges(frame), soft_edges(changed)
    assert H.edge_fscore(a, b) < 0.95
    assert H.edge_fscore(a, b, exclude=mask | (b != a)) == pytest.approx(1.0)


def test_bad_input_gives_clear_errors_or_notes(soup):
    with pytest.raises(VideoError, match="differ in length"):
        run_to_end(audit_clips(soup, soup[:-1]))
    with pytest.raises(VideoError, match="differ in shape"):
        run_to_end(audit_clips(soup[:2], np.ascontiguousarray(soup[:2, :, :200])))
    with pytest.raises(SettingsError, match="hand boxes"):
        run_to_end(audit_clips(soup[:2], soup[:2], hand_boxes=[None]))
    with pytest.raises(SettingsError, match="stride"):
        sample_frames(10, stride=0)
    # No face anywhere in the original (only the signer's hands): measured what can be.
    hands_only = np.ascontiguousarray(soup[:3, 120:, :])
    r = run_to_end(audit_clips(hands_only, hands_only))
    assert not r.identity.measured and r.identity.leak_frames == []
    assert any("no face was found" in n for n in r.notes)
    assert np.allclose(r.hands.ssim, 1.0) and np.isfinite(r.temporal.warp_error_input)


def test_subsampling_and_resized_output(soup):
    picked = sample_frames(41, 1, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 40
    assert set(np.diff(picked)) <= {5, 6}  # evenly spread
    assert sample_frames(41, 10) == [0, 10, 20, 30, 40]
    half = np.stack([cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in soup[:2]])
    r = run_to_end(audit_clips(soup[:2], half, hand_boxes=[np.zeros((0, 4))] * 2))
    assert any("resized" in n for n in r.notes)
    assert any("no usable hand box" in n for n in r.notes)
    assert r.temporal.pairs == [(0, 1)]


def test_report_is_self_contained(audits, tmp_path):
    written = write_report(audits["blur"], tmp_path / "report")
    folder = tmp_path / "report"
    assert json.loads((folder / "audit.json").read_text())["frames"] == 41
    for name in PLOTS:
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = written["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(PLOTS)
    assert base64.b64decode(images[0])[:4] == b"\x89PNG"
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the page
    assert "no face" in page and "0.6" in page


def test_audit_run_reads_a_run_folder_and_flags_what_a_person_should_check(clip_head, tmp_path):
    """A run folder whose finished frames are the original ones (a total leak, with two
    frames whose face is blurred away): every frame is flagged, each with its reason."""
    from napari_diffslva.audit.run import audit_run
    from napari_diffslva.pipeline import FINAL
    from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip

    clip = clip_head("asl_house.gif", 6)
    prepared = run_to_end(
        prepare_clip(clip, tmp_path / "run", PrepareSettings(short_side=64), ("faces",))
    )
    frames = read_frames(clip)
    with pytest.raises(SettingsError, match="6 of 6 frames are not anonymized yet"):
        run_to_end(audit_run(prepared))
    blurred = blur_faces(frames[4:], grow=0.6)
    for i, frame in enumerate([*frames[:4], *blurred]):
        prepared.run.write_frame(FINAL, i, frame)
    result = run_to_end(audit_run(prepared))
    flags = result.flagged_frames()
    assert [t for t, _ in flags] == sorted(t for t, _ in flags)
    assert {t for t, why in flags if why.startswith("identity leak")} == {0, 1, 2, 3}
    assert {t for t, _ in flags} == set(range(6))
    assert result.to_json()["flagged_frames"][0] == {"frame": flags[0][0], "why": flags[0][1]}
