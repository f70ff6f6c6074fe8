"""Baselines of the anonymization audit on real sign clips; prints the table in docs/audit.md.

    .venv/bin/python bench/audit_baselines.py [--clips sl_soup.mp4 asl_house.gif] [--stride 1]

Three stand-ins for an anonymizer, each audited against the original clip:

- unchanged: the original itself (nothing removed, everything kept);
- blur: the face box (widened by 30 %) under a Gaussian blur of sigma = face width / 4;
- flip: the frame mirrored left-right (the same person, the body layout mirrored).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from napari_diffslva.audit.run import audit_clips
from napari_diffslva.prepare.faces import track_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames

REAL = Path(
    os.environ.get(
        "NAPARI_DIFFSLVA_TEST_DATA", Path(__file__).resolve().parents[1] / "tests/data/real"
    )
)


def blur_faces(frames: np.ndarray, boxes: np.ndarray, grow: float = 0.3) -> np.ndarray:
    """Each frame's face box (x0, y0, x1, y1; NaN = none) widened by ``grow``, blurred."""
    out = frames.copy()
    for frame, box in zip(out, boxes, strict=True):
        if not np.isfinite(box).all():
            continue
        x0, y0, x1, y1 = box
        gx, gy = grow * (x1 - x0), grow * (y1 - y0)
        xa, ya = int(max(x0 - gx, 0)), int(max(y0 - gy, 0))
        xb, yb = int(x1 + gx), int(y1 + gy)
        frame[ya:yb, xa:xb] = cv2.GaussianBlur(frame[ya:yb, xa:xb], (0, 0), (x1 - x0) / 4)
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=["sl_soup.mp4", "asl_house.gif"])
    parser.add_argument("--stride", type=int, default=1)
    args = parser.parse_args()

    results = []
    print(
        "| clip | baseline | leak frames | no-face frames | identity distance (fitted) "
        "| mean expression r | edge F | SSIM | warp error in / out | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.clips:
        frames = read_frames(REAL / name)
        track = run_to_end(track_faces(frames))
        variants = {
            "unchanged": frames,
            "blur": blur_faces(frames, track.boxes),
            "flip": np.ascontiguousarray(frames[:, :, ::-1]),
        }
        for baseline, anonymized in variants.items():
            start = time.perf_counter()
            r = run_to_end(audit_clips(frames, anonymized, track=track, stride=args.stride))
            seconds = time.perf_counter() - start
            results.append((name, baseline, r))
            faces = len(r.identity.original_face_frames)
            print(
                f"| {name} | {baseline} | {len(r.identity.leak_frames)}/{faces} "
                f"| {len(r.identity.no_face_frames)}/{faces} "
                f"| {fmt(r.identity.summary()['mean_distance'])} "
                f"({fmt(r.identity.summary()['mean_fitted_distance'])}) "
                f"| {fmt(r.expression.summary()['mean_correlation'])} "
                f"| {fmt(np.nanmean(r.hands.edge_f))} | {fmt(np.nanmean(r.hands.ssim))} "
                f"| {fmt(r.temporal.warp_error_input)} / {fmt(r.temporal.warp_error_output)} "
                f"| {seconds:.0f} |",
                flush=True,
            )

    features = results[0][2].expression.features
    print()
    print("| clip | baseline | " + " | ".join(features) + " |")
    print("|---|---|" + "---|" * len(features))
    for name, baseline, r in results:
        print(
            f"| {name} | {baseline} | "
            + " | ".join(fmt(r.expression.correlation[f]) for f in features)
            + " |"
        )


if __name__ == "__main__":
    main()
