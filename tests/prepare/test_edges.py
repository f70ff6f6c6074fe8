"""Soft edges on real sign clips, the "safe" quantisation, caching and speed."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from napari_diffslva.errors import SettingsError
from napari_diffslva.prepare.edges import (
    edges_from_uint8,
    edges_to_uint8,
    get_edge_detector,
    safe_quantize,
    soft_edges,
)
from napari_diffslva.video import read_frames


@pytest.fixture(scope="module")
def house(real_clip) -> np.ndarray:
    return read_frames(real_clip("asl_house.gif"))


def _blurred_grey(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f.mean(axis=-1), (0, 0), 2) for f in frames.astype(float)])


def test_soft_edges_bright_on_moving_hands_dark_on_static_background(house):
    grey = _blurred_grey(house)
    static = np.abs(np.diff(grey, axis=0)).max(axis=0) < 6  # never moves in the clip
    assert static.mean() > 0.3
    for i in (20, 30, 50):
        moving = np.abs(grey[i] - grey[i - 2]) > 15  # the signing hands/arms, found by motion
        assert moving.mean() > 0.02
        edges = soft_edges(house[i])
        assert edges.shape == house.shape[1:3] and edges.dtype == np.float32
        assert edges.min() >= 0 and edges.max() <= 1
        assert edges[moving].mean() > 4 * edges[static].mean()
        assert (edges[moving] > 0.5).mean() > 0.2  # lines on the hands, not a faint haze
        assert (edges[static] > 0.5).mean() < 0.05  # textured backdrop stays dark
        assert np.median(edges) < 0.05 and np.percentile(edges, 99.5) > 0.9  # HED-like


def test_soft_edges_normalise_robustly(house):
    frame = house[30].copy()
    edges = soft_edges(frame)
    frame[8:14, 8:14] = 0  # one extreme, tiny black/white feature in a corner
    frame[8:14, 14:20] = 255
    spotted = soft_edges(frame)
    away = np.ones(edges.shape, bool)
    away[:40, :50] = False
    assert np.abs(spotted - edges)[away].max() < 0.05  # a max-normalised map would dim
    flat = np.random.default_rng(0).normal(128, 2, frame.shape)
    assert soft_edges(np.clip(flat, 0, 255).astype(np.uint8)).max() < 0.3  # noise stays dark


def test_safe_quantize_removes_faint_greyscale_copy(house, real_dir):
    face = cv2.imread(str(real_dir / "faces/obama_1.jpg"), cv2.IMREAD_GRAYSCALE)
    face = cv2.resize(face, house.shape[2:0:-1]).astype(np.float32) / 255
    edges = soft_edges(house[30])
    leaky = np.clip(edges + 0.2 * face, 0, 1)  # raw HED maps hide a copy this faint

    def corr(a):
        return float(np.corrcoef(a.ravel(), face.ravel())[0, 1])

    leak_before = corr(leaky) - corr(edges)
    leak_after = corr(safe_quantize(leaky)) - corr(safe_quantize(edges))
    assert leak_before > 0.1
    assert abs(leak_after) < 0.4 * leak_before  # measured: about 0.3 (it survives near lines)
    background = leaky < 1 / 3
    assert background.mean() > 0.5 and np.all(safe_quantize(leaky)[background] == 0)
    assert set(np.unique(safe_quantize(leaky))) <= {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(
        safe_quantize(np.float32([0.0, 0.3, 0.34, 0.66, 0.7, 1.0])),
        np.float32([0, 0, 0.5, 0.5, 1, 1]),
    )


def test_uint8_cache_round_trip(house):
    edges = soft_edges(house[12])
    cached = edges_to_uint8(edges)
    assert cached.dtype == np.uint8 and cached.shape == edges.shape
    np.testing.assert_allclose(edges_from_uint8(cached), edges, atol=0.5 / 255)
    safe = edges_to_uint8(get_edge_detector("soft", safe=True)(house[12]))
    assert set(np.unique(safe)) <= {0, 128, 255}


def test_unknown_detector_is_a_settings_error():
    with pytest.raises(SettingsError, match="soft, hed"):
        get_edge_detector("canny")


def test_soft_edges_speed_at_working_size(house):
    frame = cv2.resize(house[30], (512, 512))
    soft_edges(frame)
    start = time.perf_counter()
    for _ in range(5):
        soft_edges(frame)
    per_frame = (time.perf_counter() - start) / 5
    assert per_frame < 0.25, per_frame  # about 45 ms measured on 2 cores
