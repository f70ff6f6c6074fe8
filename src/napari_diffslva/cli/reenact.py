"""``napari-diffslva reenact SOURCE_IMAGE DRIVING_VIDEO -o OUT.mp4``: face reenactment.

Puts the face of one photo into every frame of the driving video, with the driver's
expressions. The driver's face never shows: where it is tracked it is covered fully, and
on frames where it is lost or covered by a hand the new face is pasted at the last known
pose (interpolated across the gap, held at the clip's ends) over a blurred face region.
This is face replacement, not an anonymizer: hair, body, hands and background stay the
driving video's (use ``anonymize`` for that).
"""

from __future__ import annotations

import argparse

from ._output import drive_with_bar, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from ..face.backends import BACKENDS

    p = sub.add_parser(
        "reenact",
        help="put a photo's face into a video, with its expressions (face replacement only, "
        "not an anonymizer: hair, body and background are kept; use anonymize)",
        description="Replace the face of DRIVING_VIDEO by the face of SOURCE_IMAGE with the "
        "driver's expressions. The driver's face is never shown (lost or "
        "occluded frames get the new face at the held pose over a blurred face "
        "region), but everything else in the frame is the original video: this "
        "is not an anonymizer.",
    )
    p.add_argument("source", metavar="SOURCE_IMAGE", help="photo (or video: first frame) of a face")
    p.add_argument("driving", metavar="DRIVING_VIDEO", help="video whose expressions to copy")
    p.add_argument("-o", "--output", required=True, help="output .mp4 or .mov")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="warp",
        help="warp: landmark warping, no weights (default); "
        "reenact: Thin-Plate Spline Motion Model (needs vox.pth.tar)",
    )
    p.add_argument("--weights", help="path of vox.pth.tar for --backend reenact")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SettingsError
    from ..export import check_output, write_video
    from ..face.backends import make_backend
    from ..face.enhance import reenact_video
    from ..video import probe, read_frames

    if args.weights and args.backend != "reenact":
        raise SettingsError("--weights is only used with --backend reenact")
    out = check_output(args.output, overwrite=args.overwrite, protect=[args.driving, args.source])
    backend = make_backend(args.backend, args.weights)  # fail on weights before any work
    source = read_frames(args.source, 0, 1)[0]
    info = probe(args.driving)
    frames = read_frames(args.driving)
    result, report = drive_with_bar(
        reenact_video(source, frames, backend=backend),
        "reenact",
        quiet=args.json,
        should_stop=args.should_stop,
    )
    written = write_video(result, out, info.timing, overwrite=args.overwrite)
    summary = report.to_dict()
    summary["output"] = str(written)
    if args.json:
        print_json(summary)
    else:
        print(
            f"wrote {written}: {len(report.enhanced_frames)} of {report.frames} frames "
            f"reenacted ({args.backend}, {report.seconds_per_frame:.2f} s/frame)"
        )
        if report.held_frames:
            print(
                f"face lost or occluded (new face held over a blurred face region): "
                f"frames {_ranges(report.held_frames)}"
            )
    return 0


def _ranges(frames: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts, start = [], None
    for i, t in enumerate(frames):
        if start is None:
            start = t
        if i + 1 == len(frames) or frames[i + 1] != t + 1:
            parts.append(str(start) if start == t else f"{start}-{t}")
            start = None
    return ", ".join(parts)
