"""Figures of the face module on real clips (docs/face_module.md).

For each (source face, driving clip) pair the source face is reenacted onto the driving
clip's face track twice: with the ``warp`` backend, and with the module off (the source
face pasted still). It prints, as Markdown:

- expression correlation over time (Pearson, audit's landmark features) between the
  driver and the output, module on vs off;
- identity: dlib embedding L2 distance of the output face to the driver (same person
  below 0.6) and to the source photo;
- seconds per frame of each backend at 256x256 on this machine (TPSMM with random
  weights: same architecture and cost as with ``vox.pth.tar``).

    .venv/bin/python bench/face_module.py [--frames 80]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from napari_diffslva.audit.expression import FEATURES, expression_features, pearson
from napari_diffslva.audit.identity import (
    SAME_PERSON_THRESHOLD,
    embedding_distance,
    face_embedding,
)
from napari_diffslva.face.backends import StillBackend, make_backend
from napari_diffslva.face.enhance import SourceFace, reenact_video
from napari_diffslva.prepare.faces import detect_faces, face_landmarks, track_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames

REAL = Path(
    os.environ.get(
        "NAPARI_DIFFSLVA_TEST_DATA", Path(__file__).resolve().parents[1] / "tests/data/real"
    )
)
SOURCES = {
    "obama_1.jpg": ("faces/obama_1.jpg", 0),
    "biden_1.jpg": ("faces/biden_1.jpg", 0),
    "sl_soup.mp4 #0": ("sl_soup.mp4", 0),
}
DRIVERS = ("face_talking.mp4", "asl_house.gif", "sl_soup.mp4", "asl_selfie_webcam.mp4")
SHOWN = ("mouth_open", "eye_aperture", "brow_raise", "head_pitch", "head_yaw", "head_roll")


def source_image(name: str) -> np.ndarray:
    path, index = SOURCES[name]
    return read_frames(REAL / path, index, index + 1)[0]


def photo_embedding(image: np.ndarray) -> np.ndarray:
    box = max(detect_faces(image), key=lambda b: b.area)
    return face_embedding(image, box, face_landmarks(image, box))


def measure(frames, track, out, faces, source_emb) -> dict:
    hw = frames.shape[1:3]
    drv, res, d_driver, d_source = [], [], [], []
    for t in faces:
        box = track.box(t)
        lm = face_landmarks(out[t], box)
        drv.append(expression_features(track.landmarks[t], hw))
        res.append(expression_features(lm, hw))
        emb = face_embedding(out[t], box, lm)
        d_driver.append(embedding_distance(emb, face_embedding(frames[t], box, track.landmarks[t])))
        d_source.append(embedding_distance(emb, source_emb))
    drv, res = np.stack(drv), np.stack(res)
    corr = {f: pearson(drv[:, FEATURES.index(f)], res[:, FEATURES.index(f)]) for f in SHOWN}
    return {
        "corr": corr,
        "driver_median": float(np.median(d_driver)),
        "driver_min": float(np.min(d_driver)),
        "driver_far": float(np.mean(np.array(d_driver) > SAME_PERSON_THRESHOLD)),
        "source_median": float(np.median(d_source)),
        "source_max": float(np.max(d_source)),
        "source_near": float(np.mean(np.array(d_source) < SAME_PERSON_THRESHOLD)),
    }


def seconds_per_frame(backend, source: SourceFace, crops, lms) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in backend.reenact(source.crop, source.landmarks, crops, lms, crops[0], lms[0]))
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=80, help="driving frames per clip")
    parser.add_argument("--drivers", nargs="+", default=DRIVERS, choices=DRIVERS)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    args = parser.parse_args()

    rows = []
    for driver in args.drivers:
        frames = read_frames(REAL / driver, 0, args.frames)
        track = run_to_end(track_faces(frames))
        for name in args.sources:
            if name.split(" ")[0] == driver:
                continue
            image = source_image(name)
            src_emb = photo_embedding(image)
            warp, report = run_to_end(
                reenact_video(image, frames, backend=make_backend("warp"), track=track)
            )
            still, _ = run_to_end(reenact_video(image, frames, backend=StillBackend(), track=track))
            faces = report.enhanced_frames
            on = measure(frames, track, warp, faces, src_emb)
            off = measure(frames, track, still, faces, src_emb)
            rows.append(
                (
                    name,
                    driver,
                    len(frames),
                    len(faces),
                    len(report.lost_frames),
                    on,
                    off,
                    report.seconds_per_frame,
                )
            )
            print(f"done {name} -> {driver}", flush=True)

    print(
        "\n| source | driver | frames (face / lost) | "
        + " | ".join(f"{f} on / off" for f in SHOWN)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(SHOWN))
    for name, driver, n, n_face, n_lost, on, off, _ in rows:
        corr = " | ".join(f"{on['corr'][f]:.2f} / {off['corr'][f]:.2f}" for f in SHOWN)
        print(f"| {name} | {driver} | {n} ({n_face} / {n_lost}) | {corr} |")
    print(
        f"\n| source | driver | L2 to driver: min, median (share > {SAME_PERSON_THRESHOLD}) "
        f"| L2 to source: median, max (share < {SAME_PERSON_THRESHOLD}) |"
    )
    print("|---|---|---|---|")
    for name, driver, *_, on, _off, _s in rows:
        print(
            f"| {name} | {driver} | {on['driver_min']:.2f}, {on['driver_median']:.2f} "
            f"({on['driver_far']:.0%}) | {on['source_median']:.2f}, {on['source_max']:.2f} "
            f"({on['source_near']:.0%}) |"
        )

    # speed at 256x256, reenactment only (blending excluded), and whole warp+blend
    frames = read_frames(REAL / "face_talking.mp4", 0, 8)
    source = SourceFace.from_frame(frames[0], detect_faces(frames[0])[0])
    crops, lms = [source.crop] * 4, [source.landmarks] * 4
    warp_s = seconds_per_frame(make_backend("warp"), source, crops, lms)
    import torch

    from napari_diffslva.face.tpsmm_backend import TPSMMBackend
    from napari_diffslva.nets.tpsmm import TPSMM

    torch.manual_seed(0)
    tpsmm_s = seconds_per_frame(TPSMMBackend(TPSMM()), source, crops[:3], lms[:3])
    blend_s = np.mean([r[-1] for r in rows])
    print(
        f"\nseconds per frame at 256x256 ({torch.get_num_threads()} threads): "
        f"warp {warp_s:.3f}, TPSMM {tpsmm_s:.2f}; warp + blend + paste in a clip "
        f"{blend_s:.3f}"
    )


if __name__ == "__main__":
    main()
