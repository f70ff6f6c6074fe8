"""BiSeNet face parser: exact checkpoint layout and strict loading (random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_diffslva.errors import WeightsError
from napari_diffslva.nets.bisenet import BiSeNet
from napari_diffslva.prepare.face_mask import load_face_parser

TSV = Path(__file__).parents[1] / "data" / "checkpoints" / "bisenet_face_parsing.tsv"


def _expected() -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.rstrip("\n").split("\t") for line in TSV.read_text().splitlines()[1:]]
    return [(key, tuple(int(v) for v in shape.split(",")) if shape else ()) for key, shape in rows]


def test_state_dict_matches_published_layout():
    net = BiSeNet(n_classes=19)
    state = net.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == _expected()
    assert len(state) == 191
    assert sum(p.numel() for p in net.parameters()) == 13_300_416
    assert sum(k.endswith("num_batches_tracked") for k in state) == 31


def test_forward_shapes():
    net = BiSeNet().eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 96, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 19, 96, 64)] * 3


def test_strict_load_through_resolver(tmp_path, monkeypatch):
    monkeypatch.delenv("NAPARI_DIFFSLVA_WEIGHTS", raising=False)
    torch.manual_seed(1)
    net = BiSeNet().eval()
    path = tmp_path / "79999_iter.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # DDP prefix
    parser = load_face_parser(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(parser.net(x)[0], net(x)[0])
    bad = tmp_path / "bad.pth"
    state = net.state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, bad)
    with pytest.raises(WeightsError, match="bad.pth"):
        load_face_parser(bad)
    with pytest.raises(WeightsError, match="79999_iter.pth"):
        load_face_parser(offline=True)  # not in any search folder (isolated cache)
