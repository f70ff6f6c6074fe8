"""``napari-diffslva export INPUT OUTPUT``: re-encode through the plugin's reader and writer."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    from ..export import check_encoding, check_output, export_frames, info_record
    from ..project import atomic_write_json
    from ..video import DamagedFrameError, VideoReader, check_frames, damaged_frame_message, probe

    check_encoding(args.crf, args.odd_size)
    check_output(args.output, overwrite=args.overwrite, protect=[args.input])
    info = drive_with_bar(
        check_frames(probe(args.input)), "export", quiet=args.json, should_stop=args.should_stop
    )
    if info.damaged and args.on_damaged_frame == "error":
        raise DamagedFrameError(
            damaged_frame_message(info.path, list(info.damaged), info.frames, info.timing)
        )
    with VideoReader(args.input, info=info, on_damaged=args.on_damaged_frame) as reader:
        gen = export_frames(
            reader.iter_frames(),
            args.output,
            info.timing,
            overwrite=args.overwrite,
            protect=[args.input],
            crf=args.crf,
            odd_size=args.odd_size,
        )
        out = drive_with_bar(gen, "export", quiet=args.json, should_stop=args.should_stop)
    result = probe(out).to_dict()
    result["output"] = str(out)
    record = info_record(info, args.on_damaged_frame)
    if record["deviations"]:  # every departure from the source is written down beside it
        sidecar = Path(str(out) + ".json")
        atomic_write_json(sidecar, {"tool": "napari-diffslva", "source": info.to_dict(), **record})
        result.update(record, sidecar=str(sidecar))
    if args.json:
        print_json(result)
    else:
        print(
            f"wrote {out}: {result['frames']} frames at {result['rate']} fps, "
            f"{result['width']}x{result['height']}"
        )
        for note in record["deviations"]:
            print(f"  note: {note}")
    return 0
