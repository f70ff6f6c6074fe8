"""The open mouth of the new face, built from the new face alone.

A closed source mouth has no interior to stretch when the driver opens theirs. The
interior is never taken from the driver (their teeth and tongue are theirs): it is either
the source face's own interior (when the source mouth is already about as open as the
target), or a painted one: a dark, shaded cavity, a tongue, and, when the driver shows
teeth, a teeth band under the upper lip, coloured from the source's own lips and skin and
sized by the target landmarks. From the driver only one bit per frame is used (teeth
visible or not, :func:`teeth_visible`), measured on a statistic of its inner mouth.

Points are (x, y) crop pixels; images are uint8 RGB crops.
"""

from __future__ import annotations

import numpy as np

INNER_MOUTH = np.arange(60, 68)
OUTER_MOUTH = np.arange(48, 60)
UPPER_INNER_LIP = np.array([60, 61, 62, 63, 64])
# Mean inner-lip gap / mouth width above which a mouth counts as open.
MIN_OPENING = 0.04
# The source's own interior is kept while the target opens at most this much wider.
OWN_INTERIOR_RATIO = 1.25
# Teeth: share of the driver's inner-mouth pixels lighter than its lips and less coloured.
TEETH_MIN_SHARE = 0.15
TEETH_LIGHTER_THAN_LIPS = 8.0  # Lab L units


def mouth_opening(landmarks: np.ndarray) -> float:
    """Mean inner-lip gap over mouth width (0 = closed), scale-free."""
    lm = np.asarray(landmarks, np.float64)
    gap = np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1).mean()
    width = np.linalg.norm(lm[54] - lm[48])
    return float(gap / max(width, 1e-6))


def polygon_mask(points: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8, 255 inside the polygon through ``points``."""
    import cv2

    mask = np.zeros(shape_hw, np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
    return mask


def teeth_visible(crop: np.ndarray, landmarks: np.ndarray) -> bool:
    """Does this (driver's) open mouth show teeth? One bit, from the share of inner-mouth
    pixels that are lighter and greyer than the lips (teeth are; cavity and tongue are
    not). A closed mouth shows none."""
    import cv2

    if mouth_opening(landmarks) < MIN_OPENING:
        return False
    hw = crop.shape[:2]
    inner = polygon_mask(landmarks[INNER_MOUTH], hw) > 0
    lips = (polygon_mask(landmarks[OUTER_MOUTH], hw) > 0) & ~inner
    if inner.sum() < 8 or lips.sum() < 8:
        return False
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    chroma = np.hypot(lab[..., 1] - 128, lab[..., 2] - 128)
    light = lab[..., 0][inner] > np.median(lab[..., 0][lips]) + TEETH_LIGHTER_THAN_LIPS
    grey = chroma[inner] < np.median(chroma[lips])
    return bool(np.mean(light & grey) >= TEETH_MIN_SHARE)


def needs_interior(target: np.ndarray, source: np.ndarray) -> bool:
    """True when the target mouth is open and clearly wider open than the source's, so the
    warped source would show stretched lips instead of an opening."""
    opening = mouth_opening(target)
    return opening >= MIN_OPENING and opening > OWN_INTERIOR_RATIO * mouth_opening(source)


def _lab_mean(lab: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return lab[mask].mean(axis=0) if mask.any() else np.array([120.0, 150.0, 140.0])


def _upper_lip_curve(target: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """y of the upper inner lip at each x (linear between its five landmarks)."""
    pts = target[UPPER_INNER_LIP]
    order = np.argsort(pts[:, 0])
    return np.interp(xs, pts[order, 0], pts[order, 1])


def paint_interior(warped_source: np.ndarray, target: np.ndarray, teeth: bool) -> np.ndarray:
    """``warped_source`` with a painted mouth interior in the target's inner-lip polygon.

    Colours come from the warped source itself (its lips and the skin around them), so the
    result has the source's colouring and lighting; shapes come from the target landmarks.
    The edge is feathered over one pixel between the source's lips and the painted
    interior only.
    """
    import cv2

    h, w = warped_source.shape[:2]
    inner = polygon_mask(target[INNER_MOUTH], (h, w)) > 0
    if inner.sum() < 4:
        return warped_source
    lab = cv2.cvtColor(warped_source, cv2.COLOR_RGB2LAB).astype(np.float32)
    lips = (polygon_mask(target[OUTER_MOUTH], (h, w)) > 0) & ~inner
    lip = _lab_mean(lab, lips)
    width = float(np.linalg.norm(target[54] - target[48]))
    gap = mouth_opening(target) * width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

    # cavity: dark, the lips' hue, darkest away from the lips (a shaded hollow)
    depth = cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3)
    shade = np.exp(-depth / max(0.18 * gap, 1.0))
    out = np.empty_like(lab)
    out[..., 0] = lip[0] * (0.16 + 0.22 * shade)
    out[..., 1] = 128 + (lip[1] - 128) * 0.55
    out[..., 2] = 128 + (lip[2] - 128) * 0.35

    # tongue: a soft ellipse resting on the lower lip, lips' colour, darker
    lower = target[[65, 66, 67]].mean(axis=0)
    centre = (lower[0], lower[1] - 0.18 * gap)
    ax, ay = 0.3 * width, max(0.3 * gap, 1.0)
    tongue = np.clip(
        1.5 - 1.5 * (((xs - centre[0]) / ax) ** 2 + ((ys - centre[1]) / ay) ** 2), 0.0, 1.0
    )
    tongue_lab = np.array(
        [lip[0] * 0.62, 128 + (lip[1] - 128) * 1.05, 128 + (lip[2] - 128) * 0.8], np.float32
    )
    out = out * (1 - tongue[..., None]) + tongue_lab * tongue[..., None]

    if teeth:
        teeth_lab, teeth_mask = _teeth_band(lab, target, inner, lips, gap, width)
        out = np.where(teeth_mask[..., None], teeth_lab, out)

    painted = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    alpha = cv2.GaussianBlur(inner.astype(np.float32), (3, 3), 0)[..., None]
    alpha[inner] = 1.0  # inside the polygon only painted pixels; the blur falls on the lips
    blended = warped_source.astype(np.float32) * (1 - alpha) + painted.astype(np.float32) * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _teeth_band(
    lab: np.ndarray,
    target: np.ndarray,
    inner: np.ndarray,
    lips: np.ndarray,
    gap: float,
    width: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Upper teeth under the upper lip (Lab colours, mask): light, a touch warm, darker
    to the corners, lit from the skin around the mouth."""
    import cv2

    h, w = inner.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    upper = _upper_lip_curve(target, xs[0])[None, :]
    band = min(gap, 0.09 * width + 0.1 * gap)
    teeth_mask = (ys >= upper - 1) & (ys < upper + band)
    ring_size = (int(0.15 * width) | 1,) * 2
    skin_ring = (
        cv2.dilate(polygon_mask(target[OUTER_MOUTH], (h, w)), np.ones(ring_size, np.uint8)) > 0
    )
    skin = _lab_mean(lab, skin_ring & ~(lips | inner))
    centre_x = target[[62, 66], 0].mean()
    across = np.abs(xs - centre_x) / max(0.5 * width, 1.0)
    light = np.clip(skin[0] * 1.12 + 12, 150, 230) * (1 - 0.4 * np.clip(across, 0, 1) ** 2)
    spacing = max(width / 9.0, 2.0)  # faint gaps between teeth
    light -= 10 * (np.abs(((xs - centre_x) / spacing + 0.5) % 1.0 - 0.5) < 0.06)
    light -= 25 * np.clip((ys - upper) / max(band, 1.0), 0, 1) ** 4  # shaded lower edge
    teeth_lab = np.stack([light, np.full_like(light, 130), np.full_like(light, 136)], -1)
    return teeth_lab, teeth_mask
