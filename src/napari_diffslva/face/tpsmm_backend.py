"""Reenactment with the Thin-Plate Spline Motion Model (``vox.pth.tar``, 256x256).

As in the authors' demo: frames are float RGB in [0, 1] at 256x256, keypoints of the
source, of the driver's neutral frame and of each driving frame are detected, and the
"relative" motion (driver's keypoint motion since the neutral frame, scaled by the keypoint
hull sizes) is applied to the source keypoints. No background motion (as in the demo).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsError
from ..nets.tpsmm import IMAGE_SIZE, SUBNETWORKS, TPSMM, relative_keypoints
from ..weights import load_state_dict, resolve_weights

REQUIRED = ("kp_detector", "dense_motion_network", "inpainting_network")


def load_tpsmm(path: str | os.PathLike) -> TPSMM:
    """A :class:`TPSMM` in eval mode with the checkpoint's sub-networks loaded strictly.

    ``avd_network`` and ``bg_predictor`` are optional in the file (the demo does not use
    them); other top-level keys (optimizers, epoch) are ignored.
    """
    checkpoint = load_state_dict(path)
    missing = [k for k in REQUIRED if k not in checkpoint]
    if missing:
        raise WeightsError(
            f"{path}: not a TPSMM checkpoint (no {', '.join(missing)}); use vox.pth.tar"
        )
    with torch.device("meta"):  # no random init of 88M parameters that are overwritten
        model = TPSMM()
    for name in SUBNETWORKS:
        if name not in checkpoint:  # optional ones (unused by the demo): fresh modules
            setattr(model, name, type(getattr(model, name))())
            continue
        try:
            getattr(model, name).load_state_dict(checkpoint[name], strict=True, assign=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise WeightsError(f"{path}: {name} does not fit TPSMM vox-256 ({detail})") from exc
    model = model.float()  # files saved in half precision run in float32
    return model.eval()


def _to_tensor(crop: np.ndarray) -> torch.Tensor:
    import cv2

    if crop.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        crop = cv2.resize(crop, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255.0


def _to_crop(image: torch.Tensor, shape_hw: tuple[int, int]) -> np.ndarray:
    import cv2

    out = (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    if out.shape[:2] != shape_hw:
        out = cv2.resize(out, shape_hw[::-1], interpolation=cv2.INTER_LINEAR)
    return out


class TPSMMBackend:
    """The learned :class:`~napari_diffslva.face.backends.ReenactBackend` (TPSMM)."""

    name = "reenact"
    reads_driving_crops = True  # keypoints are measured on them; pixels are never output

    def __init__(self, model: TPSMM) -> None:
        self.model = model.eval()

    @classmethod
    def from_weights(cls, path: str | os.PathLike | None = None) -> TPSMMBackend:
        """Load ``vox.pth.tar`` from ``path`` or the weight folders (raises WeightsError)."""
        return cls(load_tpsmm(resolve_weights("tpsmm", Path(path) if path else None)))

    @torch.inference_mode()
    def reenact(
        self,
        source_crop: np.ndarray,
        source_landmarks: np.ndarray,
        driving_crops: Iterable[np.ndarray],
        driving_landmarks: Iterable[np.ndarray],
        neutral_crop: np.ndarray,
        neutral_landmarks: np.ndarray,
        teeth: Iterable[bool] | None = None,
    ) -> Iterator[np.ndarray]:
        """One reenacted crop per driving crop (landmarks and ``teeth`` are not needed by
        this backend). The driving crops only give keypoints: the image is generated from
        ``source`` moved by them (``animate`` never sees a driving pixel)."""
        shape_hw = source_crop.shape[:2]
        source = _to_tensor(source_crop)
        kp_source = self.model.kp_detector(source)
        kp_neutral = self.model.kp_detector(_to_tensor(neutral_crop))
        for crop, _ in zip(driving_crops, driving_landmarks, strict=True):
            kp_driving = self.model.kp_detector(_to_tensor(crop))
            kp = relative_keypoints(kp_source, kp_driving, kp_neutral)
            prediction, _motion = self.model.animate(source, kp_source, kp)
            yield _to_crop(prediction, shape_hw)
