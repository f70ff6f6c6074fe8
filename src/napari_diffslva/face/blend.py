"""Paste a reenacted face crop back into its frame without a visible seam (method eq. 12).

``I' = M_f * F_E + (1 - M_f) * I``: the crop goes back through the inverse alignment
transform under a feathered face mask. Before that its colours are matched to the frame's
(mean and standard deviation per Lab channel, measured on skin that both faces share), so
lighting and skin tone meet smoothly at the feathered edge.

Landmarks are (x, y) crop pixels; masks are (H, W) float32 in [0, 1] in crop space.
"""

from __future__ import annotations

import numpy as np

from ..prepare.align import crop_face, paste_back
from ..prepare.face_mask import _face_polygon, landmark_face_mask

# Colour statistics come from skin only (no hair, background, eyes or mouth, which differ
# between two people for reasons other than light): the jaw/brow hull shrunk by this
# fraction of the face width, minus the eyes and lips grown by the same amount.
SKIN_MARGIN = 0.04
INCOMING_SHRINK = 0.92
INCOMING_FOREHEAD = 0.2
MAX_STD_RATIO = 1.25
COVER_FOREHEAD = 0.35  # the replaced face's polygon: brows lifted by this x chin-to-brow
COVER_FEATHER = 0.04  # feather width / face width, outside the covered polygon


def covering_mask(landmarks: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32: exactly 1 on the face polygon (jaw line and lifted brows) grown by
    one feather width, fading to 0 over the next few widths. Nothing under the face
    polygon is mixed into the result, not even at the feathered edge."""
    import cv2

    h, w = shape_hw[:2]
    sigma = max(COVER_FEATHER * float(np.ptp(np.asarray(landmarks)[:, 0])), 1.0)
    grow = max(int(round(sigma)), 1)
    hull = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(
        hull, cv2.convexHull(np.round(_face_polygon(landmarks, COVER_FOREHEAD)).astype(np.int32)), 1
    )

    def grown(times: int) -> np.ndarray:
        size = 2 * times * grow + 1
        return cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))

    soft = cv2.GaussianBlur(grown(3).astype(np.float32), (0, 0), sigma)
    return np.maximum(np.clip(soft, 0.0, 1.0), grown(1).astype(np.float32))


def blend_mask(
    replaced: np.ndarray,
    incoming: np.ndarray,
    shape_hw: tuple[int, int],
    parser_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Soft mask covering the face being replaced and the incoming face.

    The replaced face (landmarks ``replaced``) is covered fully, forehead included, so none
    of it shows, not even mixed into the feather (:func:`covering_mask`); the incoming
    face's region is shrunk by :data:`INCOMING_SHRINK` so its
    feathered edge stays on its skin, not on its background or hair. A face parser's mask
    (crop space, 1 = face), when given, trims the result (feathered the same way).
    """
    import cv2

    incoming = np.asarray(incoming, np.float64)
    centre = incoming.mean(axis=0)
    shrunk = centre + (incoming - centre) * INCOMING_SHRINK
    mask = np.maximum(
        covering_mask(replaced, shape_hw),
        landmark_face_mask(shrunk, shape_hw, forehead=INCOMING_FOREHEAD),
    )
    if parser_mask is not None:
        sigma = 0.02 * shape_hw[1]
        soft = cv2.GaussianBlur(parser_mask.astype(np.float32), (0, 0), sigma)
        mask = np.minimum(mask, np.clip(soft * 1.5, 0.0, 1.0))
    return mask


def skin_region(landmark_sets: list[np.ndarray], shape_hw: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W): pixels that are facial skin for every given face."""
    import cv2

    region = np.ones(shape_hw[:2], bool)
    for landmarks in landmark_sets:
        lm = np.round(np.asarray(landmarks)).astype(np.int32)
        grow = max(1, int(SKIN_MARGIN * np.ptp(lm[:, 0])))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)
        face = np.zeros(shape_hw[:2], np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(lm[:27]), 1)
        parts = np.zeros_like(face)
        for part in (lm[36:42], lm[42:48], lm[48:60]):
            cv2.fillConvexPoly(parts, cv2.convexHull(part), 1)
        region &= cv2.erode(face, kernel).astype(bool) & ~cv2.dilate(parts, kernel).astype(bool)
    return region


def match_colours(crop: np.ndarray, reference: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``crop`` with per-channel Lab mean/std over ``region`` moved to ``reference``'s."""
    import cv2

    if region.sum() < 16:
        return crop
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    src_mean, src_std = lab[region].mean(0), lab[region].std(0)
    ref_mean, ref_std = ref[region].mean(0), ref[region].std(0)
    ratio = np.clip(ref_std / np.maximum(src_std, 1e-3), 1 / MAX_STD_RATIO, MAX_STD_RATIO)
    out = (lab - src_mean) * ratio + ref_mean
    return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def blend_face(
    frame: np.ndarray,
    crop: np.ndarray,
    transform: np.ndarray,
    mask: np.ndarray,
    colour_region: np.ndarray | None = None,
) -> np.ndarray:
    """``frame`` with the face ``crop`` pasted back under ``mask`` (crop space).

    ``transform`` is the (2, 3) frame->crop similarity the crop was aligned with. When a
    ``colour_region`` (crop-space boolean, e.g. :func:`skin_region` of both faces) is given,
    the crop's colours are first matched to the frame's there."""
    if colour_region is not None:
        under = crop_face(frame, transform, crop.shape[0])
        crop = match_colours(crop, under, colour_region)
    return paste_back(frame, crop, transform, mask)
