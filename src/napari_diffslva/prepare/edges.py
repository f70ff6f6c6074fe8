"""Soft edges of every frame: the ControlNet control signal (method step 2).

Two detectors share one interface (uint8 RGB frame -> float32 (H, W) edges in [0, 1]):

- ``"soft"``: a weights-free multi-scale gradient detector, the offline default. It aims
  at what HED gives ControlNet: bright soft lines on object contours (hands, face, body),
  dark elsewhere, with fine texture and noise suppressed.
- ``"hed"``: the ControlNet HED annotator (:class:`~napari_diffslva.nets.hed.ControlNetHED`)
  with the public ``ControlNetHED.pth`` weights.

Either can be followed by :func:`safe_quantize`, which removes the faint greyscale copy of
the input that raw HED maps carry (an identity leak the HED ControlNet learned to use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SettingsError, WeightsError

if TYPE_CHECKING:
    from ..nets.hed import ControlNetHED

EDGE_DETECTORS = ("soft", "hed")

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


def load_hed(
    path: str | PathLike | None = None, *, offline: bool = True, device: str = "cpu"
) -> ControlNetHED:
    """The HED annotator with public weights (``ControlNetHED.pth`` or a .safetensors copy).

    Loaded strictly: a file with other keys or shapes raises :class:`WeightsError` naming
    the first differences. Always float32 (the public file is most likely float16).
    """
    from ..nets.hed import ControlNetHED
    from ..weights import load_state_dict, resolve_weights, strip_prefix

    file = resolve_weights("hed", path, offline=offline)
    state = strip_prefix(load_state_dict(file))
    model = ControlNetHED()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"{file}: not a ControlNet HED state dict (missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}); use lllyasviel/Annotators ControlNetHED.pth"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"{file}: {k} has shape {tuple(state[k].shape)}, expected "
            f"{tuple(expected[k].shape)}; use lllyasviel/Annotators ControlNetHED.pth"
        )
    model.load_state_dict(state, strict=True)
    return model.float().eval().to(device)


def hed_edges(frame: np.ndarray, model: ControlNetHED) -> np.ndarray:
    """HED edges of a uint8 RGB frame: float32 ``(H, W)`` in [0, 1]."""
    import torch

    device = model.norm.device
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None]
    with torch.inference_mode():
        edges = model.edges(x.float())[0]
    return edges.cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class EdgeDetector:
    """A configured edge detector: call it with a uint8 RGB frame, get float32 (H, W) edges.

    ``name`` ("soft", "hed", "soft-safe", ...) identifies the settings in cache keys.
    """

    name: str
    detect: Callable[[np.ndarray], np.ndarray]
    safe: bool = False

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        edges = self.detect(frame)
        return safe_quantize(edges) if self.safe else edges


def get_edge_detector(
    name: str = "soft",
    *,
    safe: bool = False,
    weights: str | PathLike | None = None,
    offline: bool = True,
    device: str = "cpu",
) -> EdgeDetector:
    """An :class:`EdgeDetector` by name: ``"soft"`` (no weights) or ``"hed"``.

    For HED the weights load once, here; ``weights`` is a file path or None to search the
    weight folders (and the hub when ``offline=False``).
    """
    label = f"{name}-safe" if safe else name
    if name == "soft":
        return EdgeDetector(label, soft_edges, safe)
    if name == "hed":
        model = load_hed(weights, offline=offline, device=device)
        return EdgeDetector(label, lambda frame: hed_edges(frame, model), safe)
    raise SettingsError(
        f"unknown edge detector {name!r}: choose one of {', '.join(EDGE_DETECTORS)}"
    )


def edges_to_uint8(edges: np.ndarray) -> np.ndarray:
    """Edges in [0, 1] as uint8 (x 255, rounded): the cached form, 4x smaller."""
    return np.rint(np.clip(edges, 0.0, 1.0) * 255).astype(np.uint8)


def edges_from_uint8(edges: np.ndarray) -> np.ndarray:
    """Cached uint8 edges back to float32 in [0, 1]."""
    return np.asarray(edges, dtype=np.float32) / 255.0
