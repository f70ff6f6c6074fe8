"""Expression features: head pose geometry, scale invariance, and real landmarks over time."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffslva.audit import expression as E
from napari_diffslva.prepare.faces import detect_faces, face_landmarks
from napari_diffslva.video import read_frames


def _rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def _projected_landmarks(rotation: np.ndarray, hw=(480, 640)) -> np.ndarray:
    """The generic face turned by ``rotation`` and seen by the audit's pinhole camera."""
    h, w = hw
    camera = np.array([[max(h, w), 0, w / 2], [0, max(h, w), h / 2], [0, 0, 1.0]])
    points = E._POSE_MODEL @ rotation.T + np.array([0.0, 0.0, 600.0])
    image = points @ camera.T
    landmarks = np.full((68, 2), np.nan)
    landmarks[list(E._POSE_POINTS)] = image[:, :2] / image[:, 2:]
    return landmarks


@pytest.mark.parametrize(
    ("axis", "index", "sign"),
    [("x", 0, 1), ("y", 1, -1), ("z", 2, 1)],  # chin down, face to image left, clockwise
)
def test_head_pose_recovers_known_rotations(axis, index, sign):
    for degrees in (-20.0, 10.0, 25.0):
        angles = E.head_pose(_projected_landmarks(_rotation(axis, degrees)), (480, 640))
        assert angles[index] == pytest.approx(sign * degrees, abs=0.5)
        others = [a for k, a in enumerate(angles) if k != index]
        assert np.abs(others).max() < 0.5


@pytest.fixture(scope="module")
def talking(real_clip):
    """Landmarks of every 6th frame of the expressive talking head, and the frame size."""
    frames = read_frames(real_clip("face_talking.mp4"))[::6]
    landmarks = []
    for frame in frames:
        boxes = detect_faces(frame)
        landmarks.append(face_landmarks(frame, boxes[0]) if boxes else np.full((68, 2), np.nan))
    return np.stack(landmarks), frames.shape[1:3]


def test_features_ignore_face_size_and_position(talking):
    landmarks, hw = talking
    lm = landmarks[np.isfinite(landmarks).all(axis=(1, 2))][0]
    features = E.expression_features(lm, hw)
    # The same clip at twice the resolution: every feature, head pose included, is the same.
    doubled = E.expression_features(lm * 2.0, (hw[0] * 2, hw[1] * 2))
    np.testing.assert_allclose(doubled, features, rtol=1e-4, atol=1e-3)
    # A smaller face elsewhere in the frame: the shape ratios do not change at all.
    moved = E.expression_features(lm * 0.6 + np.array([15.0, -8.0]), hw)
    np.testing.assert_allclose(moved[:5], features[:5], rtol=1e-6)


def test_real_talking_face_moves_its_mouth_and_the_features_track_it(talking):
    landmarks, hw = talking
    feats = E.clip_features(landmarks, hw)
    valid = np.isfinite(feats).all(axis=1)
    assert valid.mean() > 0.9
    mouth = feats[valid, E.FEATURES.index("mouth_open")]
    assert mouth.max() - mouth.min() > 0.1  # open and closed mouth, in eye distances
    # The same landmarks with a little noise keep every feature's time course...
    rng = np.random.default_rng(0)
    noisy = E.clip_features(landmarks + rng.normal(0, 0.3, landmarks.shape), hw)
    correlation, error = E.compare_features(feats, noisy)
    assert min(correlation.values()) > 0.8
    assert error["mouth_open"] < 0.02
    # ...while the same faces in another order do not.
    shuffled = feats[rng.permutation(len(feats))]
    correlation, _ = E.compare_features(feats, shuffled)
    assert abs(correlation["mouth_open"]) < 0.5


def test_raised_brows_and_open_eyes_raise_their_features(talking):
    landmarks, hw = talking
    lm = landmarks[np.isfinite(landmarks).all(axis=(1, 2))][0].astype(np.float64)
    base = E.expression_features(lm, hw)
    raised = lm.copy()
    raised[17:27, 1] -= 5.0  # brows up (y grows downwards)
    raised[[37, 38, 43, 44], 1] -= 2.0  # upper lids up
    moved = E.expression_features(raised, hw)
    k = E.FEATURES.index
    assert moved[k("brow_raise")] > base[k("brow_raise")]
    assert moved[k("eye_aperture")] > base[k("eye_aperture")]
    assert moved[k("mouth_width")] == pytest.approx(base[k("mouth_width")])


def test_missing_landmarks_and_undefined_correlation_are_nan():
    assert np.isnan(E.expression_features(np.full((68, 2), np.nan), (100, 100))).all()
    assert np.isnan(E.pearson(np.array([1.0, 2.0]), np.array([1.0, 2.0])))  # < 3 frames
    assert np.isnan(E.pearson(np.ones(5), np.arange(5.0)))  # constant series
    assert E.pearson(np.arange(5.0), np.arange(5.0) * 2 + 1) == pytest.approx(1.0)
