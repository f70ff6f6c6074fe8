"""The reader through a real napari viewer (Xvfb): a lazy layer with timing metadata."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_viewer_open_gives_lazy_layer(make_napari_viewer, real_clip):
    viewer = make_napari_viewer()
    layers = viewer.open(str(real_clip("face_talking.mp4")), plugin="napari-diffslva")
    layer = layers[0]
    assert isinstance(layer.data, da.Array)
    assert layer.data.shape == (169, 412, 410, 3) and layer.rgb
    meta = layer.metadata["diffslva"]
    assert meta["source"]["rate"] == "25/1" and meta["source"]["frames"] == 169
    assert meta["source"]["timestamps"][:3] == [0.0, 0.04, 0.08]
    assert len(meta["timing"]["pts"]) == 169
    assert "face_talking" not in str(meta)  # content hash, not the name
    viewer.dims.set_current_step(0, 120)
    shown = np.asarray(layer._slice.image.raw)
    assert shown.shape == (412, 410, 3)
    assert np.array_equal(shown, layer.data[120].compute())


def test_sample_data_and_writer(make_napari_viewer, tmp_path):
    from napari_diffslva.video import probe

    viewer = make_napari_viewer()
    viewer.open_sample("napari-diffslva", "asl_house")
    layer = viewer.layers[0]
    assert layer.data.shape[0] == 73
    out = tmp_path / "saved.mp4"
    layer.save(str(out), plugin="napari-diffslva")
    info = probe(out)
    assert info.frames == 73 and info.fps == 25.0
