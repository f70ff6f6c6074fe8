"""``napari-diffslva edges VIDEO -o OUT.mp4``: what ControlNet is told, as a grey video.

By default the maps are exactly the control maps the prepare stage caches (and the engine
reads): the prepare stage runs (faces and edges, no flow) into ``--run-dir`` or, without
it, into a private folder beside the output that is removed afterwards (never a shared
temp folder: the maps derive from the original frames). ``--raw`` shows the edge model's
own map instead, computed frame by frame, with no later treatment. Either way the video
is at the working size, with the source's exact frame timing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import SettingsError
from ..options import add_flags, given_flags
from ..prepare.pipeline import PrepareSettings
from ._output import drive_with_bar, print_json

# prepare settings that do not change the control maps
_NOT_EDGES = ("flow", "anchor", "face_parser", "parser_weights")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edges", help="write the ControlNet control maps as a grey video")
    p.add_argument("video", help="video file, image, or folder of numbered images")
    p.add_argument("-o", "--output", required=True, help="output .mp4 or .mov")
    p.add_argument(
        "--raw",
        action="store_true",
        help="the edge model's map alone: no safe quantisation and no face-region "
        "treatment (shows what the run does NOT send to ControlNet)",
    )
    p.add_argument("--frames", help="a half-open range A:B of frame indices (default: all)")
    p.add_argument(
        "--run-dir", help="run folder to prepare into and keep (default: a private temporary one)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--crf", type=int, default=18, help="x264 quality, lower is better (18; 0: lossless)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_flags(
        p.add_argument_group("settings (docs/settings.md lists every key)"),
        [PrepareSettings],
        skip=_NOT_EDGES,
    )
    p.set_defaults(func=run)


def parse_frames(text: str | None, frames: int) -> range:
    """``"A:B"`` (either side may be empty) -> ``range(A, B)`` within a clip of ``frames``."""
    if text is None:
        return range(frames)
    start, sep, stop = text.partition(":")
    try:
        a = int(start) if start.strip() else 0
        b = int(stop) if stop.strip() else frames
    except ValueError:
        a, b = -1, -1
    if not sep or not 0 <= a < b <= frames:
        raise SettingsError(
            f"--frames {text}: give A:B with 0 <= A < B <= {frames} (B is not included)"
        )
    return range(a, b)


def run(args: argparse.Namespace) -> int:
    from ..export import check_output

    settings = PrepareSettings(**given_flags(args, [PrepareSettings]))
    out = check_output(args.output, overwrite=args.overwrite, protect=[args.video])
    if args.raw:
        maps, timing, summary = _raw_maps(args, settings)
        _encode(maps, out, timing, args)
    else:
        with _run_folder(args.run_dir, out) as run_dir:
            maps, timing, summary = _prepared_maps(args, settings, run_dir)
            _encode(maps, out, timing, args)
    summary["output"] = str(out)
    if args.json:
        print_json(summary)
    else:
        kind = "raw edge maps" if args.raw else "control maps"
        print(
            f"wrote {out}: {summary['frames']} {kind} ({summary['edge_model']}), "
            f"{summary['width']}x{summary['height']}"
        )
    return 0


@contextmanager
def _run_folder(run_dir: str | None, out: Path) -> Iterator[Path]:
    """``run_dir``, kept; or a private folder beside ``out``, removed at the end."""
    if run_dir:
        yield Path(run_dir)
        return
    private = Path(tempfile.mkdtemp(prefix=".edges-run-", dir=out.parent))
    try:
        yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _prepared_maps(args: argparse.Namespace, settings: PrepareSettings, run_dir: Path):
    """The prepare stage's cached control maps of the chosen frames."""
    from ..prepare.pipeline import prepare_clip
    from ..video import probe

    frames = parse_frames(args.frames, probe(args.video).frames)
    prepared = drive_with_bar(
        prepare_clip(args.video, run_dir, settings, stages=("faces", "edges"), edge_frames=frames),
        "edges",
        quiet=args.json,
    )
    maps = (prepared.edges.read(i)["edges"] for i in frames)
    summary = _summary(prepared.info.timing, frames, prepared.geometry.work_hw)
    summary.update(edge_model=prepared.edge_model, raw=False)
    return maps, _sub_timing(prepared.info.timing, frames), summary


def _raw_maps(args: argparse.Namespace, settings: PrepareSettings):
    """The edge model's own maps, computed here frame by frame (batched)."""
    from ..geometry import working_geometry
    from ..prepare.edges import choose_edge_model, edges_to_uint8, get_edge_detector
    from ..prepare.pipeline import run_device
    from ..video import (
        DamagedFrameError,
        VideoReader,
        check_frames,
        damaged_frame_message,
        probe,
    )

    info = drive_with_bar(check_frames(probe(args.video)), "edges", quiet=args.json)
    if info.damaged and settings.on_damaged_frame == "error":
        raise DamagedFrameError(
            damaged_frame_message(info.path, list(info.damaged), info.frames, info.timing)
        )
    frames = parse_frames(args.frames, info.frames)
    geo = working_geometry((info.height, info.width), settings.short_side)
    model = choose_edge_model(settings.edges, settings.hed_weights, offline=settings.offline)
    detector = get_edge_detector(model, device=run_device(settings.device))
    reader = VideoReader(args.video, info=info, on_damaged=settings.on_damaged_frame)

    def maps() -> Iterator[np.ndarray]:
        with reader:
            for _, edges in detector.stream(frames, lambda i: geo.to_work(reader[i])):
                yield edges_to_uint8(edges)

    summary = _summary(info.timing, frames, geo.work_hw)
    summary.update(edge_model=model.identity, raw=True)
    return maps(), _sub_timing(info.timing, frames), summary


def _sub_timing(timing, frames: range):
    """The timing of ``frames`` of a clip: their own timestamps and durations."""
    from ..video import VideoTiming

    end = timing.pts[frames.stop] if frames.stop < timing.frames else timing.end_pts
    return VideoTiming(timing.rate, timing.time_base, timing.pts[frames.start : frames.stop], end)


def _summary(timing, frames: range, work_hw: tuple[int, int]) -> dict:
    return {
        "frames": len(frames),
        "first_frame": frames.start,
        "source_frames": timing.frames,
        "height": work_hw[0],
        "width": work_hw[1],
    }


def _encode(maps, out: Path, timing, args: argparse.Namespace) -> None:
    from ..export import export_frames

    grey = (np.repeat(m[:, :, None], 3, axis=2) for m in maps)
    gen = export_frames(
        grey, out, timing, overwrite=args.overwrite, protect=[args.video], crf=args.crf
    )
    drive_with_bar(gen, "edges: export", quiet=args.json)
