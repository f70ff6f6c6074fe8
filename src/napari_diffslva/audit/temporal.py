"""Temporal consistency: flow-warping error of consecutive frames, output beside input.

The flow and its occlusion mask come from the *original* pair (its motion is the truth
the output should follow); the same field warps frame i-1 of the original and of the
output onto frame i. Flicker or texture that swims shows as an output error above the
input's own (which is not zero: lighting, blur, flow error).
"""

from __future__ import annotations

import numpy as np

from ..prepare.flow import pair_flow, warp_image


def warp_errors(
    original_prev: np.ndarray,
    original: np.ndarray,
    anonymized_prev: np.ndarray,
    anonymized: np.ndarray,
) -> tuple[float, float]:
    """(input, output) mean absolute error in 0..255 grey levels between frame i and frame
    i-1 warped onto it, over the pixels visible in both frames (not occluded)."""
    pair = pair_flow(original, original_prev)
    visible = ~pair.occlusion_raw
    if not visible.any():
        return float("nan"), float("nan")

    def error(prev: np.ndarray, current: np.ndarray) -> float:
        warped = warp_image(prev, pair.flow).astype(np.float32)
        return float(np.abs(warped - current.astype(np.float32))[visible].mean())

    return error(original_prev, original), error(anonymized_prev, anonymized)
