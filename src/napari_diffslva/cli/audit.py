"""``napari-diffslva audit ORIGINAL ANONYMIZED``: is the signer gone, and is the signing kept?

Measures identity (face embedding distance, leaks), grammatical facial expression,
hands/body (edge F-score, SSIM) and temporal consistency; ``--report DIR`` writes
``audit.json``, PNG plots and a self-contained ``report.html``. With ``--fail-on-leak``
the exit code is 3 when any frame leaks identity.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import SettingsError
from ._output import drive_with_bar, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="measure identity removal and what the signing kept")
    p.add_argument("original", help="the original clip (video, image, or folder of images)")
    p.add_argument("anonymized", help="the anonymized clip, frame for frame the same length")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", metavar="DIR", help="write audit.json, plots and report.html")
    p.add_argument("--stride", type=int, default=1, help="audit every N-th frame (default 1)")
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        metavar="N",
        help="audit at most N frames spread over the clip",
    )
    p.add_argument(
        "--hand-boxes",
        metavar="FILE",
        help="JSON list, one entry per frame, of [x0, y0, x1, y1] hand boxes in "
        "pixels (adds hand-region SSIM)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--fail-on-leak",
        action="store_true",
        help="exit with code 3 when any frame is still recognisable (for scripts "
        "that must not release a clip that leaks identity)",
    )
    p.set_defaults(func=run)


def load_hand_boxes(path: str | Path) -> list[np.ndarray]:
    """Per-frame ``(K, 4)`` hand boxes from a JSON list of lists of ``[x0, y0, x1, y1]``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        boxes = [
            np.asarray(frame if frame else np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4)
            for frame in data
        ]
    except (OSError, ValueError, TypeError) as exc:
        raise SettingsError(
            f"{p}: not a JSON list of per-frame [x0, y0, x1, y1] box lists ({exc})"
        ) from exc
    return boxes


def run(args: argparse.Namespace) -> int:
    from ..audit.run import audit_videos

    hand_boxes = load_hand_boxes(args.hand_boxes) if args.hand_boxes else None
    result = drive_with_bar(
        audit_videos(
            args.original,
            args.anonymized,
            hand_boxes=hand_boxes,
            stride=args.stride,
            max_frames=args.max_frames,
        ),
        "audit",
        quiet=args.quiet,
        should_stop=args.should_stop,
    )
    data = result.to_json()
    if args.report:
        from ..audit.report import write_report

        written = write_report(result, args.report)
        data["report"] = str(written["html"])
    if args.json:
        print_json(data)
    else:
        _print_summary(data)
    leaks = data["identity"]["leak_frames"]
    return 3 if args.fail_on_leak and leaks else 0


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _print_summary(data: dict) -> None:
    idn, ex, hd, tm = data["identity"], data["expression"], data["hands"], data["temporal"]
    s = idn["summary"]
    print(f"frames            {data['frames']} ({len(data['frame_indices'])} audited)")
    print(
        f"identity          mean distance {_fmt(s['mean_distance'])} "
        f"(same person below {idn['threshold']:g})"
    )
    print(
        f"  leak frames     {len(idn['leak_frames'])} of {s['frames_with_original_face']} "
        f"with a face {idn['leak_frames'][:20]}"
    )
    print(f"  no face in out  {len(idn['no_face_frames'])} {idn['no_face_frames'][:20]}")
    print(f"expression        mean correlation {_fmt(ex['summary']['mean_correlation'], 2)}")
    for name in ex["features"]:
        print(
            f"  {name:<15} r {_fmt(ex['correlation'][name], 2):>6}  error {_fmt(ex['error'][name])}"
        )
    print(
        f"hands and body    edge F {_fmt(hd['summary']['edge_f'])}  "
        f"SSIM {_fmt(hd['summary']['ssim'])}  hand SSIM {_fmt(hd['summary']['hand_ssim'])}"
    )
    print(
        f"temporal          warping error input {_fmt(tm['warp_error_input'], 2)}  "
        f"output {_fmt(tm['warp_error_output'], 2)}"
    )
    for note in data["notes"]:
        print(f"note: {note}")
    if "report" in data:
        print(f"report            {data['report']}")
