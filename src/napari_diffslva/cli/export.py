"""``napari-diffslva export INPUT OUTPUT``: re-encode through the plugin's reader and writer."""

from __future__ import annotations

import argparse

from ..export import ODD_SIZES
from ..video import DAMAGED_FRAME_POLICIES
from ._output import drive_with_bar, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="re-encode a clip with exact frame timing (H.264)")
    p.add_argument("input", help="video file, image, or folder of numbered images")
    p.add_argument("output", help="output .mp4 or .mov")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--crf", type=int, default=18, help="x264 quality 0-51, lower is better (18)")
    p.add_argument(
        "--odd-size",
        choices=ODD_SIZES,
        default="yuv444",
        help="odd frame sizes: keep them (4:4:4) or pad one edge pixel (4:2:0)",
    )
    p.add_argument(
        "--on-damaged-frame",
        choices=DAMAGED_FRAME_POLICIES,
        default="error",
        help="a frame in the middle that does not decode: stop with an error "
        "(error, default) or show the previous good frame in its place (repeat)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import reencode

    gen = reencode(
        args.input,
        args.output,
        overwrite=args.overwrite,
        crf=args.crf,
        odd_size=args.odd_size,
        on_damaged=args.on_damaged_frame,
    )
    result = drive_with_bar(gen, "export", quiet=args.json, should_stop=args.should_stop)
    if args.json:
        print_json(result)
        return 0
    print(
        f"wrote {result['output']}: {result['frames']} frames at {result['rate']} fps, "
        f"{result['width']}x{result['height']}"
    )
    for note in result.get("deviations", []):
        print(f"  note: {note}")
    return 0
