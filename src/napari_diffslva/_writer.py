"""napari writer contribution: an RGB time series layer to H.264 .mp4/.mov.

Uses the layer's timing metadata (set by our reader) so an export keeps the source's
frame count, rate and timestamps; layers without it are written at 25 fps.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from .export import write_video
from .video import VideoTiming

DEFAULT_RATE = Fraction(25)


def layer_timing(metadata: dict[str, Any], frames: int) -> VideoTiming:
    """The timing stored by our reader in layer metadata, or a constant 25 fps."""
    timing = metadata.get("diffslva", {}).get("timing")
    if timing is not None:
        t = VideoTiming.from_dict(timing)
        if t.frames == frames:
            return t
    return VideoTiming.constant(frames, DEFAULT_RATE)


def write_video_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: ``data`` is (T, H, W, 3) or (H, W, 3)."""
    arr = data if getattr(data, "ndim", 0) == 4 else np.asarray(data)[None]
    timing = layer_timing(attributes.get("metadata", {}), int(arr.shape[0]))
    frames = (np.asarray(arr[i], dtype=np.uint8) for i in range(arr.shape[0]))
    return [str(write_video(frames, path, timing))]
