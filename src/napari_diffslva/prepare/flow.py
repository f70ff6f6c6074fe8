"""Optical flow and occlusion between input frames (method step 3).

Conventions used everywhere in this module:

- A flow is an ``(H, W, 2)`` float32 array of ``(dx, dy)`` in pixels (x first, as OpenCV).
- :func:`compute_flow` ``(src, dst)`` gives the *correspondence* field: pixel ``x`` of
  ``src`` is found at ``x + flow(x)`` in ``dst``.
- :func:`warp_image` pulls: ``out(x) = image(x + flow(x))``. So with
  ``flow = compute_flow(target, source)``, ``warp_image(source, flow)`` looks like
  ``target`` wherever the pixel is visible in both frames. :class:`PairFlow` stores exactly
  that pull field plus the occlusion mask (pixels of ``target`` not visible in ``source``).

The paper uses GMFlow; here the default backend is OpenCV's DIS flow, which ships with
OpenCV and runs in milliseconds on a CPU. Any other model fits the :class:`FlowBackend`
protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import SettingsError

if TYPE_CHECKING:
    import torch

# Measured with bench/prepare.py on 4 real clips at 512x512 (2 cores, frame i-1 pulled into
# frame i, error on commonly visible pixels): medium leaves 0.38 of the no-warp error, fast
# 0.51, ultrafast 0.60 (fast and ultrafast make dithered GIFs worse than no warp); medium
# costs about 4-5x fast (about 40-60 ms vs 10-15 ms per flow), still negligible next to one
# diffusion step.
DEFAULT_DIS_PRESET = "medium"
DIS_PRESETS = ("ultrafast", "fast", "medium")
FLOW_BACKENDS = ("dis", *(f"dis-{p}" for p in DIS_PRESETS))


class FlowBackend(Protocol):
    """Something that computes the correspondence flow from ``src`` to ``dst``."""

    name: str

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """``(H, W, 2)`` float32: pixel ``x`` of ``src`` sits at ``x + flow(x)`` in ``dst``."""
        ...


def _grey(frame: np.ndarray) -> np.ndarray:
    """8-bit single-channel image, the only input DIS accepts."""
    import cv2

    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"flow input must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"flow input must be (H,W) or (H,W,3), got {frame.shape}")


@dataclass(frozen=True)
class DISFlow:
    """OpenCV DIS optical flow with one of its presets.

    The OpenCV object is created per call: it is cheap (well under a millisecond) and
    keeps the backend safe to share between threads.
    """

    preset: str = DEFAULT_DIS_PRESET

    @property
    def name(self) -> str:
        return f"dis-{self.preset}"

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        import cv2

        a, b = _grey(src), _grey(dst)
        if a.shape != b.shape:
            raise ValueError(f"flow frames differ in size: {a.shape} vs {b.shape}")
        preset = getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{self.preset.upper()}")
        dis = cv2.DISOpticalFlow_create(preset)
        return dis.calc(a, b, None).astype(np.float32, copy=False)


def get_flow_backend(name: str = "dis") -> FlowBackend:
    """A flow backend by name: ``"dis"`` (the measured default preset) or ``"dis-<preset>"``
    with preset ``ultrafast``, ``fast`` or ``medium``."""
    key = name.strip().lower()
    if key == "dis":
        return DISFlow()
    if key.startswith("dis-") and key[4:] in DIS_PRESETS:
        return DISFlow(key[4:])
    raise SettingsError(f"unknown flow backend {name!r}: choose one of {', '.join(FLOW_BACKENDS)}")


def _as_backend(backend: str | FlowBackend) -> FlowBackend:
    return get_flow_backend(backend) if isinstance(backend, str) else backend


def compute_flow(
    src: np.ndarray, dst: np.ndarray, backend: str | FlowBackend = "dis"
) -> np.ndarray:
    """Correspondence flow ``(H, W, 2)`` float32 ``(dx, dy)``: pixel ``x`` of ``src`` is at
    ``x + flow(x)`` in ``dst``. Frames are uint8 RGB ``(H, W, 3)`` (or grey)."""
    return _as_backend(backend)(src, dst)


def _pixel_map(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute sampling positions ``x + flow(x)`` as two float32 maps for cv2.remap."""
    h, w = flow.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0].astype(np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1].astype(np.float32)
    return xs, ys


def warp_image(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Pull ``image`` along ``flow``: ``out(x) = image(x + flow(x))``.

    Bilinear, replicated border; works for ``(H, W)`` or ``(H, W, C)``, uint8 or float, and
    keeps the dtype.
    """
    import cv2

    image = np.asarray(image)
    flow = np.asarray(flow)
    if image.shape[:2] != flow.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and flow {flow.shape[:2]} differ in size")
    xs, ys = _pixel_map(flow)
    src = image
    if image.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        src = image.astype(np.float32)
    if src.ndim == 3 and src.shape[2] > 4:  # remap handles at most 4 channels at once
        out = np.stack([warp_image(src[..., c], flow) for c in range(src.shape[2])], axis=-1)
    else:
        out = cv2.remap(src, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if image.ndim == 3 and out.ndim == 2:  # remap drops a single channel axis
            out = out[..., None]
    return out.astype(image.dtype, copy=False)


def resize_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Flow resampled to ``hw = (h, w)`` with vectors rescaled to the new pixel size.

    Area averaging when shrinking (a latent pixel sees the mean motion of its 8x8 block).
    """
    import cv2

    flow = np.asarray(flow, dtype=np.float32)
    h, w = hw
    big_h, big_w = flow.shape[:2]
    if (h, w) == (big_h, big_w):
        return flow.copy()
    shrinking = h < big_h and w < big_w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    small = cv2.resize(flow, (w, h), interpolation=interp)
    small[..., 0] *= w / big_w
    small[..., 1] *= h / big_h
    return small


def warp_latent(
    latent: torch.Tensor, flow: np.ndarray | torch.Tensor, mode: str = "nearest"
) -> torch.Tensor:
    """Pull a latent ``(B, C, h, w)`` along an image-resolution flow ``(H, W, 2)``.

    The flow is area-resized to ``(h, w)`` and divided by the scale factor (``W/w`` for dx,
    ``H/h`` for dy), then applied with ``grid_sample`` (``align_corners=False``: pixel
    centres at ``i + 0.5``, as in the image) and a replicated border. ``mode`` is
    ``"nearest"`` (Rerender's choice for shape-aware fusion) or ``"bilinear"``.
    """
    import torch
    import torch.nn.functional as F

    if latent.ndim != 4:
        raise ValueError(f"latent must be (B,C,h,w), got {tuple(latent.shape)}")
    h, w = latent.shape[-2:]
    flow_np = flow.detach().cpu().float().numpy() if isinstance(flow, torch.Tensor) else flow
    small = torch.from_numpy(resize_flow(np.asarray(flow_np), (h, w)))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    gx = (xs + small[..., 0] + 0.5) / w * 2 - 1
    gy = (ys + small[..., 1] + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None].expand(latent.shape[0], h, w, 2)
    grid = grid.to(device=latent.device, dtype=latent.dtype)
    return F.grid_sample(latent, grid, mode=mode, padding_mode="border", align_corners=False)


def occlusion_from_flows(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """Forward-backward (UnFlow) check as Rerender-A-Video runs it: ``(H, W)`` bool, True
    where occluded.

    ``fwd`` is the pull field target->source (:func:`compute_flow` ``(target, source)``),
    ``bwd`` the field source->target. A target pixel is occluded where going there and back
    does not return: ``|fwd + warp(bwd, fwd)| > 0.01 (|fwd| + |bwd|) + 0.5``, plain (not
    squared) norms, ``bwd`` taken at the pixel itself as Rerender does. At 30 px of motion
    that tolerates 1.1 px of disagreement (squared norms would tolerate 4.3 px and fuse
    misaligned fingers in as ghosts). Pixels whose correspondence falls outside the source
    frame are occluded too (they are not visible in it).
    """
    fwd = np.asarray(fwd, dtype=np.float32)
    bwd = np.asarray(bwd, dtype=np.float32)
    back = warp_image(bwd, fwd)
    # per-channel arithmetic: numpy reductions over a last axis of 2 are ~10x slower
    diff = np.hypot(fwd[..., 0] + back[..., 0], fwd[..., 1] + back[..., 1])
    bound = 0.01 * (np.hypot(fwd[..., 0], fwd[..., 1]) + np.hypot(bwd[..., 0], bwd[..., 1])) + 0.5
    xs, ys = _pixel_map(fwd)
    h, w = fwd.shape[:2]
    outside = (xs < -0.5) | (xs > w - 0.5) | (ys < -0.5) | (ys > h - 0.5)
    return (diff > bound) | outside


def soften_occlusion(mask: np.ndarray) -> np.ndarray:
    """Rerender's mask softening: 9x9 max filter, Gaussian blur (kernel 9, sigma 18), plus
    the raw mask, clamped to ``[0, 1]``. Returns float32; 1 = not visible in the source."""
    import cv2

    raw = np.asarray(mask, dtype=np.float32)
    dilated = cv2.dilate(raw, np.ones((9, 9), np.uint8))
    blurred = cv2.GaussianBlur(dilated, (9, 9), 18, borderType=cv2.BORDER_REPLICATE)
    return np.clip(blurred + raw, 0.0, 1.0)


@dataclass(frozen=True)
class PairFlow:
    """How to pull a ``source`` frame into a ``target`` frame, and where that fails.

    ``flow`` (H, W, 2) float32: ``warp_image(source, flow) ~ target`` on visible pixels.
    ``occlusion`` (H, W) float32 in [0, 1], softened (1 = not visible in the source).
    ``occlusion_raw`` (H, W) bool, the forward-backward check itself.
    """

    flow: np.ndarray
    occlusion: np.ndarray
    occlusion_raw: np.ndarray

    @classmethod
    def identity(cls, hw: tuple[int, int]) -> PairFlow:
        """A frame pulled from itself: zero flow, nothing occluded."""
        return cls(np.zeros((*hw, 2), np.float32), np.zeros(hw, np.float32), np.zeros(hw, bool))

    @classmethod
    def missing(cls, hw: tuple[int, int]) -> PairFlow:
        """No source frame (frame 0 has no previous one): zero flow, all occluded."""
        return cls(np.zeros((*hw, 2), np.float32), np.ones(hw, np.float32), np.ones(hw, bool))


def pair_flow(
    target: np.ndarray, source: np.ndarray, backend: str | FlowBackend = "dis"
) -> PairFlow:
    """Pull field target<-source with its occlusion mask (two flows, both directions)."""
    flow_backend = _as_backend(backend)
    return _checked_pair(flow_backend(target, source), flow_backend(source, target))


def pair_flows_both_ways(
    target: np.ndarray, source: np.ndarray, backend: str | FlowBackend = "dis"
) -> tuple[PairFlow, PairFlow]:
    """``(target<-source, source<-target)``: the same two flows serve both directions,
    only the forward-backward check is run twice, with the roles swapped."""
    flow_backend = _as_backend(backend)
    fwd, bwd = flow_backend(target, source), flow_backend(source, target)
    return _checked_pair(fwd, bwd), _checked_pair(bwd, fwd)


def _checked_pair(fwd: np.ndarray, bwd: np.ndarray) -> PairFlow:
    raw = occlusion_from_flows(fwd, bwd)
    return PairFlow(fwd, soften_occlusion(raw), raw)


# Cached per frame i: "prev" pulls i-1 into i, "back" pulls i into i-1 (frames left of the
# anchor are translated outward, each from the frame after it), "anchor" the anchor into i.
FLOW_KINDS = ("prev", "back", "anchor")


def frame_pair_flows(
    get: Callable[[int], np.ndarray], i: int, anchor: int, backend: str | FlowBackend = "dis"
) -> dict[str, PairFlow]:
    """The pull fields cached with frame ``i`` (see :data:`FLOW_KINDS`); frame 0 has no
    previous frame (its "prev" and "back" are :meth:`PairFlow.missing`).

    Usable on its own, so callers can compute and store flows chunk by chunk.
    """
    flow_backend = _as_backend(backend)
    target = get(i)
    hw = target.shape[:2]
    if i == 0:
        prev = back = PairFlow.missing(hw)
    else:
        prev, back = pair_flows_both_ways(target, get(i - 1), flow_backend)
    if i == anchor:
        to_anchor = PairFlow.identity(hw)
    elif i - 1 == anchor:
        to_anchor = prev
    else:
        to_anchor = pair_flow(target, get(anchor), flow_backend)
    return {"prev": prev, "back": back, "anchor": to_anchor}


def pair_to_arrays(pair: PairFlow, kind: str) -> dict[str, np.ndarray]:
    """A pair in its compact cached form: ``{kind}_flow`` float16, ``{kind}_occlusion``
    uint8 (soft mask x 255) and ``{kind}_occlusion_raw`` bool (not derivable from the soft)."""
    return {
        f"{kind}_flow": pair.flow.astype(np.float16),
        f"{kind}_occlusion": np.rint(pair.occlusion * 255).astype(np.uint8),
        f"{kind}_occlusion_raw": pair.occlusion_raw.astype(bool),
    }


def pair_from_arrays(arrays: dict[str, np.ndarray], kind: str) -> PairFlow:
    """The :class:`PairFlow` ``kind`` (one of :data:`FLOW_KINDS`) from :func:`pair_to_arrays`."""
    if kind not in FLOW_KINDS:
        raise ValueError(f"kind must be one of {FLOW_KINDS}, got {kind!r}")
    return PairFlow(
        arrays[f"{kind}_flow"].astype(np.float32),
        arrays[f"{kind}_occlusion"].astype(np.float32) / 255,
        arrays[f"{kind}_occlusion_raw"].astype(bool),
    )


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow for a napari image layer: hue = direction, value = magnitude.

    ``max_magnitude`` (pixels) maps to full brightness; pass the same value for every
    frame of a clip to compare frames. Default: the flow's 99th percentile magnitude.
    """
    import cv2

    flow = np.asarray(flow, dtype=np.float32)
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    if max_magnitude is None:
        max_magnitude = float(np.percentile(magnitude, 99))
    scale = 255.0 / max(max_magnitude, 1e-6)
    hsv = np.empty((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = np.rint(angle / 2) % 180  # OpenCV 8-bit hue runs 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude * scale, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flow_vectors(flow: np.ndarray, step: int = 16, min_magnitude: float = 0.5) -> np.ndarray:
    """Sparse napari Vectors data ``(N, 2, 2)`` in (y, x) order: ``[[y, x], [dy, dx]]``.

    One vector per ``step`` x ``step`` cell (at its centre), skipping vectors shorter than
    ``min_magnitude`` pixels.
    """
    flow = np.asarray(flow, dtype=np.float32)
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    d = flow[ys, xs]
    keep = np.hypot(d[..., 0], d[..., 1]) >= min_magnitude
    starts = np.stack([ys[keep], xs[keep]], axis=-1).astype(np.float32)
    deltas = np.stack([d[..., 1][keep], d[..., 0][keep]], axis=-1)
    return np.stack([starts, deltas], axis=1)
