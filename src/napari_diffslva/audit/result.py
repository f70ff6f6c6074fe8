"""The audit's result: per-frame metrics, their summaries and what could not be measured.

Every per-frame array is aligned with :attr:`AuditResult.frame_indices` (the audited frames;
all frames unless the audit was subsampled). Internally a value that could not be measured
is NaN; :meth:`AuditResult.to_json` turns it into ``null``. No file names go into the
result: a clip's name often is the signer's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IDENTITY_SCALE = (
    "distance: L2 distance between dlib ResNet 128-d face embeddings of the original signer "
    "(mean embedding over the original's frames) and the face found in each anonymized frame. "
    "dlib's same-person threshold is 0.6: below it the face is still recognisable as the "
    "signer (a leak). Where no face is detected in an anonymized frame, fitted_distance is "
    "the same measure with the face fitted where the original's face is; below the threshold "
    "it is a leak too (a face a detector misses can still be recognised). "
    "similarity = clip(1 - distance / 1.2, 0, 1): 1 = identical, 0.5 = at "
    "the threshold, 0 = twice the threshold or more. dlib embeddings are not zero-centred "
    "(unrelated faces still have cosine 0.8+), so this is not comparable with the cosine "
    "figures of the DiffSLVA paper (another embedding: 0.77-0.89 same signer, about 0.1 "
    "after anonymization)."
)
NO_FACE_MEANING = (
    "no_face_frames: the original has a face there but no detector finds one in the "
    "anonymized frame near the same place. The audit cannot tell a broken face (artifacts, "
    "a hole) from a face that was changed beyond recognition as a face; look at those frames."
)


def _num(x: float) -> float | None:
    """A JSON number, or null for NaN/inf."""
    x = float(x)
    return x if math.isfinite(x) else None


def _nums(values: np.ndarray | list[float]) -> list[float | None]:
    return [_num(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def nanmean_or_nan(values: np.ndarray) -> float:
    """Mean of the finite values, NaN when there are none (no numpy warning)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass
class IdentityResult:
    """Is the original signer still recognisable in the anonymized frames?"""

    distance: np.ndarray  # (N,) anonymized face vs the signer's reference; NaN: no face
    original_distance: np.ndarray  # (N,) original vs the same reference, on the frames
    # that built it (NaN elsewhere): the natural same-person spread within the clip
    # (N,) where no face is detected in the output: the same measure with the face fitted
    # in the original's box (a face a detector misses can still be recognised)
    fitted_distance: np.ndarray
    threshold: float
    leak_frames: list[int]  # frame indices with distance (or fitted distance) < threshold
    no_face_frames: list[int]  # original has a face, anonymized has none a detector finds
    original_face_frames: list[int]  # frame indices where the original has a face
    measured: bool  # False when the original has no face anywhere

    @property
    def similarity(self) -> np.ndarray:
        """Calibrated score in [0, 1]: 0.5 at the same-person threshold."""
        return np.clip(1.0 - self.distance / (2.0 * self.threshold), 0.0, 1.0)

    def summary(self) -> dict[str, Any]:
        faces = len(self.original_face_frames)
        return {
            "measured": self.measured,
            "frames_with_original_face": faces,
            "frames_with_anonymized_face": int(np.isfinite(self.distance).sum()),
            "mean_distance": _num(nanmean_or_nan(self.distance)),
            "min_distance": _num(np.nanmin(self.distance))
            if np.isfinite(self.distance).any()
            else None,
            "mean_original_distance": _num(nanmean_or_nan(self.original_distance)),
            "mean_fitted_distance": _num(nanmean_or_nan(self.fitted_distance)),
            "leak_fraction": _num(len(self.leak_frames) / faces) if faces else None,
            "no_face_fraction": _num(len(self.no_face_frames) / faces) if faces else None,
            "no_leak": bool(faces and not self.leak_frames),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "distance": _nums(self.distance),
            "similarity": _nums(self.similarity),
            "original_distance": _nums(self.original_distance),
            "fitted_distance": _nums(self.fitted_distance),
            "threshold": self.threshold,
            "leak_frames": list(map(int, self.leak_frames)),
            "no_face_frames": list(map(int, self.no_face_frames)),
            "original_face_frames": list(map(int, self.original_face_frames)),
            "scale": IDENTITY_SCALE,
            "no_face_meaning": NO_FACE_MEANING,
            "summary": self.summary(),
        }


@dataclass
class ExpressionResult:
    """Grammatical facial features over time, original vs anonymized."""

    features: list[str]
    units: dict[str, str]
    original: np.ndarray  # (N, F) NaN where no landmarks
    anonymized: np.ndarray  # (N, F)
    correlation: dict[str, float]  # Pearson r over frames with both values; NaN if undefined
    error: dict[str, float]  # mean absolute difference, in the feature's unit
    fitted_without_detection_frames: list[int]  # landmarks fitted in the original's box

    def summary(self) -> dict[str, Any]:
        r = np.array(list(self.correlation.values()), dtype=np.float64)
        return {
            "mean_correlation": _num(nanmean_or_nan(r)),
            "min_correlation": _num(np.nanmin(r)) if np.isfinite(r).any() else None,
            "features_measured": int(np.isfinite(r).sum()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "units": dict(self.units),
            "original": {f: _nums(self.original[:, k]) for k, f in enumerate(self.features)},
            "anonymized": {f: _nums(self.anonymized[:, k]) for k, f in enumerate(self.features)},
            "correlation": {f: _num(v) for f, v in self.correlation.items()},
            "error": {f: _num(v) for f, v in self.error.items()},
            # how much the original's feature moves: a correlation means little without it
            "original_std": {
                f: _num(np.nanstd(self.original[:, k]))
                if np.isfinite(self.original[:, k]).any()
                else None
                for k, f in enumerate(self.features)
            },
            "fitted_without_detection_frames": list(map(int, self.fitted_without_detection_frames)),
            "summary": self.summary(),
        }


@dataclass
class HandsResult:
    """Hands and body kept: edge agreement outside the face, SSIM, hand-region SSIM."""

    edge_f: np.ndarray  # (N,) soft-edge F-score outside the face region, 0..1
    ssim: np.ndarray  # (N,) SSIM over the whole frame
    hand_ssim: np.ndarray | None  # (N,) mean SSIM over the given hand boxes; None: no boxes

    def summary(self) -> dict[str, Any]:
        return {
            "edge_f": _num(nanmean_or_nan(self.edge_f)),
            "ssim": _num(nanmean_or_nan(self.ssim)),
            "hand_ssim": None if self.hand_ssim is None else _num(nanmean_or_nan(self.hand_ssim)),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "edge_f": _nums(self.edge_f),
            "ssim": _nums(self.ssim),
            "hand_ssim": None if self.hand_ssim is None else _nums(self.hand_ssim),
            "summary": self.summary(),
        }


@dataclass
class TemporalResult:
    """Flow-warping error of consecutive frames, output beside input (0..255 units)."""

    pairs: list[tuple[int, int]]  # (previous, current) frame indices
    input_error: np.ndarray  # (P,) mean |warp(prev) - current| on non-occluded pixels
    output_error: np.ndarray  # (P,) same pixels and flow, on the anonymized frames

    @property
    def warp_error_input(self) -> float:
        return nanmean_or_nan(self.input_error)

    @property
    def warp_error_output(self) -> float:
        return nanmean_or_nan(self.output_error)

    def to_json(self) -> dict[str, Any]:
        ratio = self.warp_error_output / self.warp_error_input if self.warp_error_input else np.nan
        return {
            "warp_error_input": _num(self.warp_error_input),
            "warp_error_output": _num(self.warp_error_output),
            "ratio": _num(ratio),
            "pairs": [list(map(int, p)) for p in self.pairs],
            "per_pair_input": _nums(self.input_error),
            "per_pair_output": _nums(self.output_error),
        }


@dataclass
class AuditResult:
    """Everything the audit measured on one original/anonymized pair."""

    frames: int  # frames in each clip
    frame_indices: list[int]  # audited frames; per-frame arrays follow this order
    size: tuple[int, int]  # (height, width) of the original
    identity: IdentityResult
    expression: ExpressionResult
    hands: HandsResult
    temporal: TemporalResult
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why
    damaged_frames: list[int] = field(default_factory=list)  # original frames that do not decode

    def flagged_frames(self) -> list[tuple[int, str]]:
        """``(frame, why)`` for every frame a person should look at, in frame order."""
        reasons = (
            (self.identity.leak_frames, "identity leak: the signer may be recognisable"),
            (self.identity.no_face_frames, "no face found in the output"),
            (
                self.expression.fitted_without_detection_frames,
                "expression measured without a detected face",
            ),
        )
        return sorted((int(t), why) for frames, why in reasons for t in frames)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (NaN -> null)."""
        return {
            "frames": int(self.frames),
            "frame_indices": list(map(int, self.frame_indices)),
            "size": {"height": int(self.size[0]), "width": int(self.size[1])},
            "identity": self.identity.to_json(),
            "expression": self.expression.to_json(),
            "hands": self.hands.to_json(),
            "temporal": self.temporal.to_json(),
            "notes": list(self.notes),
            "damaged_frames": list(map(int, self.damaged_frames)),
            "flagged_frames": [{"frame": t, "why": why} for t, why in self.flagged_frames()],
        }
