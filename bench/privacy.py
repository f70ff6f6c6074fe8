"""Figures of the privacy mechanisms on the real clips (docs/privacy.md).

For each real clip (its first ``--frames`` frames) it prints, as Markdown:

- face-region control map: milliseconds per 512 px frame for sketch, region and
  composition (the edges are the prepare stage's, not counted), the region's share of
  the frame, and the share of the edge pixels below the chin (body and hands) that the
  region takes from the edge map;
- self-audit: seconds per frame of the identity audit of a stand-in result (the clip
  with biden_1's face pasted on the signer's) and the leaks it finds; and of the original
  against itself (every frame must leak);
- identity gate: the dlib distance of the anchor's stand-ins (the original, biden_1's
  face pasted, noise) to the original anchor face.

    .venv/bin/python bench/privacy.py [--frames 60]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from napari_diffslva.audit.identity import embedding_distance, face_embedding, face_in_place
from napari_diffslva.audit.run import audit_identity
from napari_diffslva.geometry import working_geometry
from napari_diffslva.prepare.edges import get_edge_detector
from napari_diffslva.prepare.face_control import FaceControl
from napari_diffslva.prepare.faces import detect_faces, face_landmarks, track_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.testing.face_swap import replace_face_part
from napari_diffslva.video import read_frames

REAL = Path(
    os.environ.get(
        "NAPARI_DIFFSLVA_TEST_DATA", Path(__file__).resolve().parents[1] / "tests/data/real"
    )
)
CLIPS = ("face_talking.mp4", "asl_house.gif", "sl_soup.mp4", "asl_selfie_webcam.mp4")


def control_figures(frames: np.ndarray, track) -> tuple[float, float, tuple, float]:
    """(ms per frame, region share of the frame, reach, share of the edge pixels below
    the chin that the region takes from the edge map: where hands and body are)."""
    geo = working_geometry(frames.shape[1:3])
    detect = get_edge_detector("soft", safe=True)
    face = FaceControl(track, geo)
    spent, share, removed, total = 0.0, [], 0, 0
    rows = np.arange(geo.work_hw[0])[:, None]
    for t in range(len(frames)):
        edges = detect(geo.to_work(frames[t]))
        start = time.perf_counter()
        _, _, region = face.maps(t, edges, safe=True)
        spent += time.perf_counter() - start
        share.append(float((region > 0).mean()))
        if t in track.face_frames:
            chin = track.landmarks[t][8, 1] * geo.scale_yx[0]
            below = (edges > 0) & (rows > chin)
            removed += int((below & (region > 0)).sum())
            total += int(below.sum())
    return 1000 * spent / len(frames), float(np.mean(share)), face.reach, removed / max(total, 1)


def audit_figures(frames, track, stand_in) -> tuple[float, int, int, int]:
    """(seconds per frame, leaks against a pasted-face result, frames with a face,
    leaks of the original against itself)."""
    result = replace_face_part(frames, track, "face", stand_in)
    start = time.perf_counter()
    identity, _ = run_to_end(audit_identity(frames, result, track))
    seconds = (time.perf_counter() - start) / len(frames)
    itself, _ = run_to_end(audit_identity(frames, frames, track))
    return (
        seconds,
        len(identity.leak_frames),
        len(identity.original_face_frames),
        len(itself.leak_frames),
    )


def gate_figures(frames, track, stand_in) -> dict[str, float]:
    """Distance of each anchor stand-in's face to the original anchor face."""
    t = track.face_frames[len(track.face_frames) // 2]
    box = track.box(t)
    reference = face_embedding(frames[t], box, face_landmarks(frames[t], box))
    noise = np.random.default_rng(0).integers(0, 256, frames[t].shape, dtype=np.uint8)
    looks = {
        "original": frames[t],
        "biden_1 pasted": replace_face_part(frames[t : t + 1], _one(track, t), "face", stand_in)[0],
        "noise": noise,
    }
    return {
        k: embedding_distance(face_in_place(v, box).embedding, reference) for k, v in looks.items()
    }


def _one(track, t):
    """The track of frame ``t`` alone."""
    from napari_diffslva.prepare.faces import FaceTrack

    arrays = {k: v[t : t + 1] for k, v in track.to_arrays().items()}
    return FaceTrack.from_arrays(arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    photo = read_frames(REAL / "faces/biden_1.jpg")[0]
    box = max(detect_faces(photo), key=lambda b: b.area)
    stand_in = (photo, face_landmarks(photo, box))
    print("| clip | frames | ms/frame | region share | reach up/down | edges below chin taken |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in CLIPS:
        frames = read_frames(REAL / name, 0, args.frames)
        track = run_to_end(track_faces(frames))
        ms, share, reach, taken = control_figures(frames, track)
        reach = "/".join(f"{v:.2f}" for v in reach)
        print(f"| {name} | {len(frames)} | {ms:.1f} | {share:.1%} | {reach} | {taken:.1%} |")
        rows.append((name, frames, track))
    print()
    print("| clip | self-audit s/frame | leaks, biden_1 pasted | leaks, original itself |")
    print("|---|---|---|---|")
    for name, frames, track in rows:
        seconds, leaks, faces, itself = audit_figures(frames, track, stand_in)
        print(f"| {name} | {seconds:.2f} | {leaks} of {faces} | {itself} of {faces} |")
    print()
    print("| clip | gate distance: original | biden_1 pasted | noise |")
    print("|---|---|---|---|")
    for name, frames, track in rows:
        d = gate_figures(frames, track, stand_in)
        print(f"| {name} | {d['original']:.2f} | {d['biden_1 pasted']:.2f} | {d['noise']:.2f} |")


if __name__ == "__main__":
    main()
