"""TPSMM: the vox-256 key layout, parameter counts, forward shapes and the TPS maths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_diffslva.nets import tpsmm

TSV_DIR = Path(__file__).parents[1] / "data" / "checkpoints"

# Parameter counts per sub-network (docs/checkpoints/README.md section 1).
PARAMS = {
    "kp_detector": 11_227_812,
    "dense_motion_network": 37_941_397,
    "inpainting_network": 24_737_283,
    "bg_predictor": 11_188_998,
    "avd_network": 2_583_652,
}


def read_tsv(name: str) -> list[tuple[str, tuple[int, ...]]]:
    lines = (TSV_DIR / f"tpsmm_vox256_{name}.tsv").read_text().splitlines()
    assert lines[0] == "key\tshape"
    rows = []
    for line in lines[1:]:
        key, shape = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return rows


@pytest.fixture(scope="module")
def model() -> tpsmm.TPSMM:
    torch.manual_seed(0)
    return tpsmm.TPSMM().eval()


@pytest.mark.parametrize("name", tpsmm.SUBNETWORKS)
def test_state_dict_matches_checkpoint_layout(model, name):
    net = getattr(model, name)
    got = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert got == read_tsv(name)
    assert sum(p.numel() for p in net.parameters()) == PARAMS[name]
    for key, value in net.state_dict().items():
        want = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        assert value.dtype == want, key


def test_total_parameters(model):
    assert sum(p.numel() for p in model.parameters()) == 87_679_142


def test_checkpoint_file_loads_strictly(model, tmp_path):
    """A vox.pth.tar-shaped file (dict of sub-network state dicts + extras) loads strictly
    and the backend built from it renders through the common interface."""
    import numpy as np

    from napari_diffslva.face.backends import make_backend
    from napari_diffslva.face.tpsmm_backend import load_tpsmm

    state = {name: getattr(model, name).state_dict() for name in tpsmm.SUBNETWORKS}
    state["epoch"] = 99
    path = tmp_path / "vox.pth.tar"
    torch.save(state, path)
    backend = make_backend("reenact", path)
    ref = model.kp_detector.fg_encoder.fc.bias
    assert torch.equal(backend.model.kp_detector.fg_encoder.fc.bias, ref)
    crop = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    lm = np.zeros((68, 2))
    out = list(backend.reenact(crop, lm, [crop], [lm], crop, lm))
    assert len(out) == 1 and out[0].shape == (256, 256, 3) and out[0].dtype == np.uint8

    del state["kp_detector"]["fg_encoder.fc.bias"]
    torch.save(state, path)
    from napari_diffslva.errors import WeightsError

    with pytest.raises(WeightsError, match="fg_encoder.fc.bias"):
        load_tpsmm(path)


def test_forward_shapes(model):
    torch.manual_seed(1)
    source, driving = torch.rand(2, 1, 3, 256, 256)
    with torch.no_grad():
        kp_s, kp_d = model.kp_detector(source), model.kp_detector(driving)
        kp = tpsmm.relative_keypoints(kp_s, kp_d, kp_d)
        prediction, motion = model.animate(source, kp_s, kp)
        bg = model.bg_predictor(source, driving)
        avd = model.avd_network(kp_s, kp_d)
    assert kp_s.shape == (1, 50, 2) and kp_s.abs().max() <= 1
    assert torch.equal(kp, kp_s)  # driver at its neutral frame: the source keeps its pose
    assert prediction.shape == (1, 3, 256, 256)
    assert prediction.min() >= 0 and prediction.max() <= 1
    assert [m.shape[-1] for m in motion.occlusion_maps] == [32, 64, 128, 256]
    assert motion.deformation.shape == (1, 64, 64, 2)
    assert motion.contribution_maps.shape == (1, 11, 64, 64)
    torch.testing.assert_close(motion.contribution_maps.sum(1), torch.ones(1, 64, 64))
    torch.testing.assert_close(bg, torch.eye(3)[None])  # initial bg motion: identity
    assert avd.shape == (1, 50, 2)


def test_relative_keypoints_scale_motion_by_hull_size():
    square = torch.tensor([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]])
    driver_start = square * 0.5  # driver's face is half the size of the source's
    driver_now = driver_start + torch.tensor([0.1, 0.0])
    out = tpsmm.relative_keypoints(square, driver_now, driver_start)
    torch.testing.assert_close(out, square + torch.tensor([0.2, 0.0]))


def test_tps_spline_interpolates_with_ridge():
    """The trained model's TPS has a 0.01 ridge: at the control points f(p_i) = q_i - 0.01 w_i,
    which is close to, but not exactly, q_i."""
    torch.manual_seed(2)
    nodes = [0, 4, 12, 20, 24]  # corners and centre of a 5x5 pixel lattice
    drv = tpsmm.coordinate_grid(5, 5).view(25, 2)[nodes].expand(1, 3, 5, 2)
    src = drv + 0.1 * torch.randn(1, 3, 5, 2)
    at_nodes = tpsmm.tps_warp_grids(drv, src, 5, 5).view(1, 3, 25, 2)[:, :, nodes]

    sq = ((drv[:, :, :, None] - drv[:, :, None]) ** 2).sum(-1)
    basis = torch.cat([drv, torch.ones(1, 3, 5, 1)], -1)
    system = torch.zeros(1, 3, 8, 8)
    system[..., :5, :5] = sq * torch.log(sq + 1e-9)
    system[..., :5, 5:], system[..., 5:, :5] = basis, basis.mT
    rhs = torch.cat([src, torch.zeros(1, 3, 3, 2)], 2)
    weights = torch.linalg.solve(system + 0.01 * torch.eye(8), rhs)[..., :5, :]
    torch.testing.assert_close(at_nodes, src - 0.01 * weights, atol=1e-4, rtol=1e-4)
    assert 0 < (at_nodes - src).abs().max() < 0.05
