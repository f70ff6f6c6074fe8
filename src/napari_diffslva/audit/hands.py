"""Hands and body kept: soft-edge agreement outside the face, SSIM, hand-region SSIM.

Anonymization should change the face and nothing else a signer needs: the hands, arms and
body outline. SignDiff measures this with SSIM over the frame and over the hands; edges
add a measure that ignores colour and lighting changes (a restyled shirt is fine, a moved
finger is not). Boxes are ``(x0, y0, x1, y1)`` pixels (x right, y down).
"""

from __future__ import annotations

import numpy as np

# Match tolerance of the edge F-score, as a fraction of the image diagonal: the BSDS
# boundary benchmark's 0.0075 (about 3 px on a 320x240 frame).
EDGE_TOLERANCE = 0.0075
_MIN_SSIM_SIDE = 7  # skimage's default SSIM window


def edge_tolerance_px(hw: tuple[int, int]) -> int:
    """The edge match tolerance in pixels for a frame of this (height, width)."""
    return max(1, int(round(EDGE_TOLERANCE * float(np.hypot(*hw)))))


def box_mask(hw: tuple[int, int], box: np.ndarray | None, grow: float = 0.25) -> np.ndarray:
    """``(H, W)`` bool, True inside ``box`` widened by ``grow`` of its size on every side
    (a face box covers brows to chin; hair, ears and the neck outline lie just outside)."""
    mask = np.zeros(hw, dtype=bool)
    if box is None or not np.isfinite(np.asarray(box, np.float64)).all():
        return mask
    x0, y0, x1, y1 = (float(v) for v in box)
    gx, gy = grow * (x1 - x0), grow * (y1 - y0)
    mask[
        max(int(y0 - gy), 0) : max(int(np.ceil(y1 + gy)), 0),
        max(int(x0 - gx), 0) : max(int(np.ceil(x1 + gx)), 0),
    ] = True
    return mask


def edge_fscore(
    original_edges: np.ndarray, anonymized_edges: np.ndarray, exclude: np.ndarray | None = None
) -> float:
    """Soft-edge F-score in [0, 1] (1 = the same contours), NaN if neither has edges.

    Precision is the share of the output's edge strength that lies within the tolerance of
    an original edge of at least that strength (a grey dilation, no threshold to pick);
    recall the same the other way round. ``exclude`` (bool mask) is left out of both, e.g.
    the face, which anonymization is meant to change.
    """
    import cv2

    a = np.asarray(original_edges, np.float32).copy()
    b = np.asarray(anonymized_edges, np.float32).copy()
    if exclude is not None:
        a[exclude] = 0.0
        b[exclude] = 0.0
    r = edge_tolerance_px(a.shape)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    sum_a, sum_b = float(a.sum()), float(b.sum())
    if sum_a <= 1e-6 or sum_b <= 1e-6:
        return float("nan") if sum_a <= 1e-6 and sum_b <= 1e-6 else 0.0
    precision = float(np.minimum(b, cv2.dilate(a, disk)).sum()) / sum_b
    recall = float(np.minimum(a, cv2.dilate(b, disk)).sum()) / sum_a
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def frame_ssim(original: np.ndarray, anonymized: np.ndarray) -> float:
    """SSIM of two uint8 RGB frames (colour, data range 255)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(original, anonymized, channel_axis=-1, data_range=255))


def region_ssim(original: np.ndarray, anonymized: np.ndarray, boxes: np.ndarray | None) -> float:
    """Mean SSIM over the boxes ``(K, 4)`` (rows with NaN are skipped); NaN if none is usable
    (missing, or smaller than the 7 px SSIM window once clipped to the frame)."""
    from skimage.metrics import structural_similarity

    if boxes is None:
        return float("nan")
    h, w = original.shape[:2]
    scores = []
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        if not np.isfinite(box).all():
            continue
        x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
        if min(x1 - x0, y1 - y0) < _MIN_SSIM_SIDE:
            continue
        scores.append(
            structural_similarity(
                original[y0:y1, x0:x1], anonymized[y0:y1, x0:x1], channel_axis=-1, data_range=255
            )
        )
    return float(np.mean(scores)) if scores else float("nan")
