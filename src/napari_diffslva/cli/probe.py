"""``napari-diffslva probe VIDEO``: frames, exact rate, size, duration, codec, rotation.

``frames`` is the number of frames that decode; when the container claims more (a clip
cut without rewriting its index, lost last packets, an edit list) the claim is shown
beside it. ``--check-frames`` also decodes every frame once to list damaged ones.
"""

from __future__ import annotations

import argparse

from ._output import drive_with_bar, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="show a clip's exact frame count, rate and size")
    p.add_argument("video", help="video file, image, or folder of numbered images")
    p.add_argument("--timestamps", action="store_true", help="include per-frame timestamps")
    p.add_argument(
        "--check-frames",
        action="store_true",
        help="decode every frame once and list the damaged ones (slower: a "
        "decode of the whole clip)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..video import check_frames, probe, source_notes

    info = probe(args.video)
    if args.check_frames:
        info = drive_with_bar(
            check_frames(info), "probe", quiet=args.json, should_stop=args.should_stop
        )
    d = info.to_dict(with_timestamps=args.timestamps)
    d["notes"] = source_notes(d)
    if args.json:
        print_json(d)
        return 0
    claim = d["header_frames"]
    claimed = (
        f" (the container claims {claim})" if claim is not None and claim != d["frames"] else ""
    )
    print(f"frames    {d['frames']}{claimed}")
    print(f"rate      {d['rate']} ({d['fps']:.6g} fps){' variable' if d['variable_rate'] else ''}")
    print(f"size      {d['width']}x{d['height']}")
    print(f"duration  {d['duration']:.6g} s")
    print(f"codec     {d['codec']} ({d['pix_fmt']})")
    print(f"rotation  {d['rotation']}")
    end = "missing: the last packets do not decode" if d["end_missing"] else "complete"
    print(f"end       {end}")
    if "damaged_frames" in d:
        print(f"damaged   {len(d['damaged_frames'])} {d['damaged_frames'][:20]}")
    for note in d["notes"]:
        print(f"note: {note}")
    if args.timestamps:
        print("timestamps " + " ".join(f"{t:.6g}" for t in d["timestamps"]))
    return 0
