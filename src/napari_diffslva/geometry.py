"""Working geometry: the size the models see, and the exact way back to source pixels.

Stable Diffusion wants both sides to be multiples of 64 (8 for the VAE x 8 for the UNet's
down-sampling); the default short side is 512. Frames are resized (never cropped), so
the mapping back is a plain per-axis scale and export restores the source size exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SettingsError


@dataclass(frozen=True)
class WorkingGeometry:
    """Source size and working size, both as (height, width)."""

    source_hw: tuple[int, int]
    work_hw: tuple[int, int]

    @property
    def scale_yx(self) -> tuple[float, float]:
        """Working pixels per source pixel along y and x (for points: the face track)."""
        return (self.work_hw[0] / self.source_hw[0], self.work_hw[1] / self.source_hw[1])

    def to_work(self, frame: np.ndarray) -> np.ndarray:
        """Resize one source frame (H, W, C) to working size."""
        return _resize(frame, self.work_hw)

    def to_source(self, frame: np.ndarray) -> np.ndarray:
        """Resize one working frame back to the source size."""
        return _resize(frame, self.source_hw)


def working_geometry(
    source_hw: tuple[int, int], short_side: int = 512, multiple: int = 64
) -> WorkingGeometry:
    """Scale so the short side is ``short_side``, then round both sides to ``multiple``."""
    if short_side < multiple or short_side % multiple:
        raise SettingsError(f"short side {short_side} must be a positive multiple of {multiple}")
    h, w = source_hw
    if h <= 0 or w <= 0:
        raise SettingsError(f"invalid source size {w}x{h}")
    scale = short_side / min(h, w)
    work = tuple(max(multiple, int(round(s * scale / multiple)) * multiple) for s in (h, w))
    return WorkingGeometry(source_hw=(h, w), work_hw=(work[0], work[1]))


def _resize(frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    if frame.shape[:2] == tuple(hw):
        return frame
    shrinking = hw[0] < frame.shape[0]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(frame, (hw[1], hw[0]), interpolation=interp)
