"""``napari-diffslva prepare VIDEO -o RUN_DIR``: faces, edges and flow, cached in a run folder."""

from __future__ import annotations

import argparse

from ..options import add_flags, given_flags
from ..prepare.pipeline import PrepareSettings
from ._output import drive_with_bar, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="compute edges, optical flow and the face track")
    p.add_argument("video", help="video file, image, or folder of numbered images")
    p.add_argument("-o", "--run-dir", required=True, help="run folder (created if missing)")
    add_flags(
        p.add_argument_group("settings (docs/settings.md lists every key)"), [PrepareSettings]
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..prepare.pipeline import prepare_clip

    settings = PrepareSettings(**given_flags(args, [PrepareSettings]))
    prepared = drive_with_bar(
        prepare_clip(args.video, args.run_dir, settings),
        "prepare",
        quiet=args.json,
        should_stop=args.should_stop,
    )
    summary = prepared.summary()
    if args.json:
        print_json(summary)
        return 0
    print(f"prepared {summary['frames']} frames in {summary['run_dir']}")
    print(
        f"  face on {summary['face_frames']} frames; lost: {_frames(summary['lost_frames'])}; "
        f"interpolated: {_frames(summary['interpolated_frames'])}"
    )
    print(f"  anchor frame {summary['anchor']}")
    control = summary["face_control"]
    face = control.get("note") or f"face region: {control['face_control']}"
    print(f"  control: {summary['edge_model']} edges; {face}")
    if summary["damaged_frames"]:
        print(
            f"  damaged frames (previous good frame stands in): "
            f"{_frames(summary['damaged_frames'])}"
        )
    for stage, sec in summary["seconds_per_frame"].items():
        print(f"  {stage:6s} {sec * 1000:8.1f} ms per frame")
    return 0


def _frames(indices: list[int]) -> str:
    return ", ".join(map(str, indices)) if indices else "none"
