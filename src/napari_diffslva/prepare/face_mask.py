"""Face masks: the landmark polygon (offline default) and the BiSeNet parser (better).

Landmarks are (x, y) source pixels; masks are (H, W) arrays (row = y).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .faces import LOST, FaceTrack

# BiSeNet face-parsing labels (zllrunning/face-parsing.PyTorch).
PARSER_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
    "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
# The parts an anonymised face replaces: skin, brows, eyes, glasses, nose, mouth, lips.
FACE_CLASSES = (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)
_PARSER_SIZE = 512
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _face_polygon(landmarks: np.ndarray, forehead: float) -> np.ndarray:
    """Jaw line plus brows lifted along the face's up axis by ``forehead`` x face height."""
    lm = np.asarray(landmarks, dtype=np.float64)
    brows, chin = lm[17:27], lm[8]
    up = brows.mean(0) - chin  # chin -> brow centre
    lifted = brows + forehead * up
    return np.concatenate([lm[0:17], lifted], axis=0)


def landmark_face_mask(
    landmarks: np.ndarray,
    shape_hw: tuple[int, int],
    *,
    forehead: float = 0.35,
    feather: float = 0.04,
) -> np.ndarray:
    """Soft face mask (H, W) float32 in [0, 1] from 68 (x, y) landmarks.

    The convex hull of the jaw line and the brows (lifted toward the hairline by
    ``forehead`` times the chin-to-brow height) is grown by one feather width and blurred
    with a Gaussian of ``feather`` times the face width, so the landmarks themselves stay
    near 1 and the edge fades smoothly into the frame.
    """
    import cv2

    h, w = shape_hw[:2]
    polygon = _face_polygon(landmarks, forehead)
    face_width = float(np.ptp(np.asarray(landmarks)[:, 0]))
    sigma = max(feather * face_width, 1.0)
    hull = cv2.convexHull(np.round(polygon).astype(np.int32))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    grow = int(round(sigma))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    return np.clip(soft, 0.0, 1.0)


def frame_face_mask(track: FaceTrack, t: int, shape_hw: tuple[int, int], **kwargs) -> np.ndarray:
    """Soft mask (H, W) float32 of frame ``t`` for blending; all 0 on LOST frames."""
    if track.status[t] == LOST or np.isnan(track.landmarks[t]).any():
        return np.zeros(shape_hw[:2], np.float32)
    return landmark_face_mask(track.landmarks[t], shape_hw, **kwargs)


@dataclass
class FaceParser:
    """BiSeNet face parsing on face crops (RGB uint8)."""

    net: Any
    device: str = "cpu"

    def parse(self, face_crop_rgb: np.ndarray) -> np.ndarray:
        """(h, w) int64 labels (see :data:`PARSER_LABELS`) at the crop's own size."""
        import cv2
        import torch

        h, w = face_crop_rgb.shape[:2]
        image = cv2.resize(
            face_crop_rgb, (_PARSER_SIZE, _PARSER_SIZE), interpolation=cv2.INTER_LINEAR
        )
        x = (image.astype(np.float32) / 255 - _IMAGENET_MEAN) / _IMAGENET_STD
        x = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)).to(self.device)
        with torch.no_grad():
            labels = self.net(x)[0].argmax(1)[0].cpu().numpy().astype(np.uint8)
        return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)


def load_face_parser(
    path: str | os.PathLike | None = None, *, offline: bool = True, device: str = "cpu"
) -> FaceParser:
    """BiSeNet with the public ``79999_iter.pth`` weights (strict load).

    Raises :class:`~napari_diffslva.errors.WeightsError` when the file is missing or does
    not hold exactly BiSeNet's keys and shapes.
    """
    from ..errors import WeightsError
    from ..nets.bisenet import BiSeNet
    from ..weights import load_state_dict, resolve_weights, strip_prefix

    file = resolve_weights("bisenet", path, offline=offline)
    state = strip_prefix(load_state_dict(file))
    net = BiSeNet(n_classes=len(PARSER_LABELS))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WeightsError(
            f"{file}: not a BiSeNet face-parsing checkpoint (79999_iter.pth): "
            f"{first[1].strip() if len(first) > 1 else first[0]}"
        ) from exc
    return FaceParser(net.eval().to(device), device)


def parser_face_mask(labels: np.ndarray, classes: tuple[int, ...] = FACE_CLASSES) -> np.ndarray:
    """(h, w) float32 mask, 1 where the parsed label is one of ``classes``."""
    return np.isin(labels, classes).astype(np.float32)
