"""``napari-diffslva probe VIDEO``: frames, exact rate, size, duration, codec, rotation."""

from __future__ import annotations

import argparse

from ._output import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="show a clip's exact frame count, rate and size")
    p.add_argument("video", help="video file, image, or folder of numbered images")
    p.add_argument("--timestamps", action="store_true", help="include per-frame timestamps")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..video import probe

    info = probe(args.video)
    d = info.to_dict(with_timestamps=args.timestamps)
    if args.json:
        print_json(d)
        return 0
    print(f"frames    {d['frames']}")
    print(f"rate      {d['rate']} ({d['fps']:.6g} fps){' variable' if d['variable_rate'] else ''}")
    print(f"size      {d['width']}x{d['height']}")
    print(f"duration  {d['duration']:.6g} s")
    print(f"codec     {d['codec']} ({d['pix_fmt']})")
    print(f"rotation  {d['rotation']}")
    if args.timestamps:
        print("timestamps " + " ".join(f"{t:.6g}" for t in d["timestamps"]))
    return 0
