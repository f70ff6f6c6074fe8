"""Benchmark of the "prepare" stage on real clips at the 512x512 working size.

Each stage is one function ``bench_<name>(ctx) -> None`` registered in ``STAGES``; it
prints its own figures. Run all stages or some:

    .venv/bin/python bench/prepare.py [--quick] [--stage edges --stage flow]

``--long-clip`` runs only the long-clip section instead: a synthetic 320x240 clip of real
frames (made at bench time) of 1,000 and 10,000 frames, how long ``probe`` takes on it, and
``prepare`` on each length in its own process, with peak RSS against clip length:

    .venv/bin/python bench/prepare.py --long-clip [--long-frames 1000,10000] [--long-short-side 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from napari_diffslva.prepare import edges as E
from napari_diffslva.prepare import flow as F
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames

REAL = Path(
    os.environ.get(
        "NAPARI_DIFFSLVA_TEST_DATA", Path(__file__).resolve().parents[1] / "tests/data/real"
    )
)
CLIPS = ("sl_soup.mp4", "asl_selfie_webcam.mp4", "asl_house.gif", "face_talking.mp4")
SIZE = 512


@dataclass
class Context:
    """What every stage gets: real frames resized to SIZE x SIZE, per clip."""

    clips: dict[str, np.ndarray]
    quick: bool

    @property
    def all_frames(self) -> np.ndarray:
        return np.concatenate(list(self.clips.values()))


def load_context(quick: bool) -> Context:
    count = 8 if quick else 32
    clips = {}
    for name in CLIPS[:2] if quick else CLIPS:
        frames = read_frames(REAL / name, 0, count)
        clips[name] = np.stack(
            [cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in frames]
        )
    return Context(clips, quick)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def print_scaling(
    label: str,
    seconds_for: Callable[[int], float],
    lengths: list[int],
    work: Callable[[int], int] = lambda n: n,
    unit: str = "frame",
) -> None:
    """Time of a whole clip for several lengths, and ms per unit of work (flat = linear)."""
    rows = [(n, seconds_for(n)) for n in lengths]
    per_unit = [s / work(n) for n, s in rows]
    print(f"  {label} clip length scaling:")
    for (n, s), pu in zip(rows, per_unit, strict=True):
        extra = "" if unit == "frame" else f", {1000 * pu:7.1f} ms/{unit}"
        print(f"    T={n:3d}: {s:7.3f} s total, {1000 * s / n:7.1f} ms/frame{extra}")
    print(f"    ms/{unit} ratio longest/shortest: {per_unit[-1] / per_unit[0]:.2f} (1.0 = linear)")


def bench_edges(ctx: Context) -> None:
    import torch

    frames = ctx.all_frames
    print(f"\n== edges ({SIZE}x{SIZE}, {torch.get_num_threads()} torch threads) ==")
    soft = timed(lambda: [E.soft_edges(f) for f in frames[:8]], 2 if ctx.quick else 5) / 8
    print(f"  soft (weights-free): {1000 * soft:7.1f} ms/frame, {1 / soft:6.1f} fps")
    safe = timed(lambda: [E.safe_quantize(E.soft_edges(f)) for f in frames[:8]], 2) / 8
    print(f"  soft + safe:         {1000 * safe:7.1f} ms/frame")
    weights = E.find_hed_weights()
    if weights is None:
        print(f"  trained HED: weights not found ({E.HED_INSTALL}); skipped")
    else:
        _bench_hed(frames, weights, soft, 1 if ctx.quick else 2)
    detector = E.get_edge_detector("soft")
    lengths = [4, 8, 16] if ctx.quick else [8, 16, 32, 64]
    pool = np.concatenate([frames] * (1 + max(lengths) // len(frames)))

    def clip_seconds(n: int) -> float:
        start = time.perf_counter()
        for frame in pool[:n]:
            E.edges_to_uint8(detector(frame))
        return time.perf_counter() - start

    print_scaling("soft", clip_seconds, lengths)


def _bench_hed(frames: np.ndarray, weights: Path, soft: float, repeat: int) -> None:
    """Trained HED per 512x512 frame: batch sizes, channels-last against contiguous."""
    import torch

    model = E.load_hed(weights)
    print(f"  trained HED ({E.weights_identity(weights)}, fp32, CPU):")
    per_frame = {}
    for batch in (1, 2, 4):
        chunk = list(frames[:batch])
        per_frame[batch] = timed(lambda c=chunk: E.hed_edges(c, model), repeat) / batch
        print(
            f"    channels-last, batch {batch}: {1000 * per_frame[batch]:7.0f} ms/frame, "
            f"{per_frame[batch] / soft:5.0f}x soft"
        )
    plain = model.to(memory_format=torch.contiguous_format)
    x = torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float().contiguous()

    def contiguous() -> None:
        with torch.inference_mode():
            plain.edges(x)

    seconds = timed(contiguous, repeat)
    print(
        f"    contiguous,    batch 1: {1000 * seconds:7.0f} ms/frame; "
        f"channels-last speed-up {seconds / per_frame[1]:.2f}x"
    )
    best = min(per_frame, key=per_frame.get)
    print(f"    fastest batch here: {best} ({per_frame[1] / per_frame[best]:.2f}x batch 1)")


def _error(target: np.ndarray, image: np.ndarray, keep: np.ndarray) -> float:
    diff = np.abs(target.astype(np.float32) - image.astype(np.float32)).mean(axis=-1)
    return float(diff[keep].mean())


def bench_flow(ctx: Context) -> None:
    """Speed and quality of each DIS preset: warping error of frame i-1 pulled into frame i,
    on the pixels that every preset calls visible (a fair common mask), per clip."""
    presets = [f"dis-{p}" for p in F.DIS_PRESETS]
    print(f"\n== flow ({SIZE}x{SIZE}, OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads) ==")
    step = 4 if ctx.quick else 2
    errors = {clip: {p: [] for p in ["no warp", *presets]} for clip in ctx.clips}
    occluded = {p: [] for p in presets}
    for clip, frames in ctx.clips.items():
        for i in range(1, len(frames), step):
            pairs = {p: F.pair_flow(frames[i], frames[i - 1], p) for p in presets}
            common = ~np.logical_or.reduce([pr.occlusion_raw for pr in pairs.values()])
            errors[clip]["no warp"].append(_error(frames[i], frames[i - 1], common))
            for p, pr in pairs.items():
                warped = F.warp_image(frames[i - 1], pr.flow)
                errors[clip][p].append(_error(frames[i], warped, common))
                occluded[p].append(float(pr.occlusion_raw.mean()))
    print("  mean abs warping error (grey levels) on commonly visible pixels, frame i-1 -> i:")
    print(f"    {'clip':24s}" + "".join(f"{p:>15s}" for p in ["no warp", *presets]))
    mean_err = {p: [] for p in ["no warp", *presets]}
    for clip, by_preset in errors.items():
        row = {p: float(np.mean(v)) for p, v in by_preset.items()}
        for p, v in row.items():
            mean_err[p].append(v)
        print(f"    {clip:24s}" + "".join(f"{v:15.3f}" for v in row.values()))
    overall = {p: float(np.mean(v)) for p, v in mean_err.items()}
    print(f"    {'mean over clips':24s}" + "".join(f"{v:15.3f}" for v in overall.values()))
    a, b = ctx.all_frames[4], ctx.all_frames[5]
    repeat = 3 if ctx.quick else 10
    print("  preset          flow ms  pair+occl ms  err/no-warp  occluded %")
    seconds = {}
    for p in presets:
        backend = F.get_flow_backend(p)
        seconds[p] = timed(lambda backend=backend: backend(a, b), repeat)
        pair = timed(lambda p=p: F.pair_flow(b, a, p), max(1, repeat // 2))
        print(
            f"  {p:14s} {1000 * seconds[p]:8.1f} {1000 * pair:13.1f} "
            f"{overall[p] / overall['no warp']:12.2f} {100 * np.mean(occluded[p]):11.1f}"
        )
    print(
        f"  medium vs fast: {seconds['dis-medium'] / seconds['dis-fast']:.1f}x the time, "
        f"warp error {overall['dis-medium'] / overall['dis-fast']:.2f}x"
    )
    default = F.get_flow_backend("dis").name
    print(f"  default backend: {default}")
    lengths = [4, 8] if ctx.quick else [8, 16, 32]
    clip = next(iter(ctx.clips.values()))

    def clip_seconds(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            F.frame_pair_flows(clip.__getitem__, i, n // 2)
        return time.perf_counter() - start

    # frame 0 has no previous frame, the anchor needs no flow to itself, and the frame after
    # the anchor reuses its previous-frame pair: 2T - 3 pairs are computed, not 2T (the
    # "back" pull of each neighbour pair reuses the same two flows)
    print_scaling(
        f"frame_pair_flows ({default}, prev/back + anchor)",
        clip_seconds,
        lengths,
        work=lambda n: 2 * n - 3,
        unit="pair",
    )


def bench_faces(ctx: Context) -> None:
    """Face tracking (dlib HOG + landmarks) at each clip's native size."""
    from napari_diffslva.prepare.faces import track_faces

    print("faces (native size, HOG + 68 landmarks + occlusion check):")
    count = 8 if ctx.quick else 32
    for name in CLIPS:
        frames = read_frames(REAL / name, 0, count)
        start = time.perf_counter()
        track = run_to_end(track_faces(frames))
        sec = (time.perf_counter() - start) / len(frames)
        h, w = frames.shape[1:3]
        print(
            f"  {name:24s} {w}x{h}: {1000 * sec:7.1f} ms/frame ({1 / sec:5.1f} fps), "
            f"face on {len(track.face_frames)}/{len(frames)}"
        )


def bench_run_folder(ctx: Context) -> None:
    """The whole prepare job into a run folder: time linear, memory flat in clip length."""
    import tempfile
    import tracemalloc

    from napari_diffslva.export import write_video
    from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip

    source = read_frames(REAL / "face_talking.mp4")
    lengths = [8, 16, 32] if ctx.quick else [16, 48, 144]
    settings = PrepareSettings(short_side=256, edges="soft")  # run-folder costs, not HED's
    print("prepare_clip into a run folder (face_talking.mp4, short side 256):")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            clip = Path(tmp) / f"clip{n}.mp4"
            write_video(source[:n], clip, rate=25)
            tracemalloc.start()
            start = time.perf_counter()
            run_to_end(prepare_clip(clip, Path(tmp) / f"run{n}", settings))
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            rows.append((n, seconds, peak))
            print(
                f"    T={n:3d}: {seconds:7.2f} s, {1000 * seconds / n:7.1f} ms/frame, "
                f"peak traced memory {peak:7.1f} MiB"
            )
    (n0, s0, m0), (n1, s1, m1) = rows[0], rows[-1]
    print(f"    ms/frame ratio longest/shortest: {(s1 / n1) / (s0 / n0):.2f} (1.0 = linear)")
    print(
        f"    peak memory ratio longest/shortest: {m1 / m0:.2f} for {n1 / n0:.0f}x the frames "
        "(1.0 = flat)"
    )


# -- long clips: probe time and flat memory of prepare (bench_long_clip) ---------------------
LONG_SOURCE = "sl_soup.mp4"  # 320x240, a face on every frame


def make_long_clip(path: Path, frames: int) -> Path:
    """A ``frames``-long clip of the real source's frames, played forward and backward in
    turn (no cuts), encoded as the plugin exports (H.264, GOP 12), written as it goes."""
    from fractions import Fraction

    from napari_diffslva.export import export_frames
    from napari_diffslva.video import VideoTiming

    source = read_frames(REAL / LONG_SOURCE)
    cycle = np.concatenate([np.arange(len(source)), np.arange(len(source) - 2, 0, -1)])
    stream = (source[cycle[i % len(cycle)]] for i in range(frames))
    timing = VideoTiming.constant(frames, Fraction(2997, 100))
    return run_to_end(export_frames(stream, path, timing))


def _probe_half_lost(clip: Path) -> None:
    """Probe time of a copy whose second half of frame data is zeroed behind a complete
    index (the tail check walks back GOP by GOP until a frame decodes)."""
    import av

    from napari_diffslva.video import probe

    with av.open(str(clip)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(clip.read_bytes())
    start, end = packets[len(packets) // 2][0], packets[-1][0] + packets[-1][1]
    data[start:end] = bytes(end - start)
    lost = clip.with_name("half_lost.mp4")
    lost.write_bytes(bytes(data))
    begin = time.perf_counter()
    info = probe(lost)
    print(
        f"          probe with the second half of the data zeroed: "
        f"{time.perf_counter() - begin:5.2f} s ({info.frames} frames decode, "
        f"end missing: {info.end_missing})"
    )
    lost.unlink()


def _measure_prepare(clip: str, run_dir: str, short_side: str) -> None:
    """In a fresh process: prepare one clip, print seconds and peak RSS as JSON."""
    import json
    import resource

    from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip

    start = time.perf_counter()
    settings = PrepareSettings(short_side=int(short_side), edges="soft")  # memory, not HED
    run_to_end(prepare_clip(clip, run_dir, settings))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak}))


def bench_long_clip(lengths: list[int], short_side: int) -> None:
    import json
    import subprocess
    import tempfile

    from napari_diffslva.progress import run_to_end as drive
    from napari_diffslva.video import check_frames, probe

    print(
        f"\n== long clip: synthetic 320x240 from {LONG_SOURCE}, prepare (faces at source "
        f"size, edges and flow at short side {short_side}), one process per length =="
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            clip = Path(tmp) / f"long{n}.mp4"
            start = time.perf_counter()
            make_long_clip(clip, n)
            made = time.perf_counter() - start
            start = time.perf_counter()
            info = probe(clip)
            probed = time.perf_counter() - start
            start = time.perf_counter()
            drive(check_frames(info))
            checked = time.perf_counter() - start
            print(
                f"  T={n:6d}: made in {made:6.1f} s; probe {probed:5.2f} s "
                f"({info.frames} frames, demux + tail decode); check_frames {checked:6.2f} s "
                f"({1000 * checked / n:.2f} ms/frame, decode only)"
            )
            _probe_half_lost(clip)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure-prepare",
                    str(clip),
                    str(Path(tmp) / f"r{n}"),
                    str(short_side),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            d = json.loads(out.strip().splitlines()[-1])
            rows.append((n, d["seconds"], d["peak_rss_mib"]))
            print(
                f"          prepare {d['seconds']:7.1f} s "
                f"({1000 * d['seconds'] / n:6.1f} ms/frame), "
                f"peak RSS {d['peak_rss_mib']:7.1f} MiB"
            )
            clip.unlink()
    (n0, s0, m0), (n1, s1, m1) = rows[0], rows[-1]
    print(
        f"  peak RSS ratio {n1}/{n0} frames: {m1 / m0:.2f} for {n1 / n0:.0f}x the frames "
        "(1.0 = flat)"
    )
    print(f"  ms/frame ratio: {(s1 / n1) / (s0 / n0):.2f} (1.0 = linear)")


STAGES: dict[str, Callable[[Context], None]] = {
    "edges": bench_edges,
    "flow": bench_flow,
    "faces": bench_faces,
    "run_folder": bench_run_folder,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    parser.add_argument(
        "--stage",
        action="append",
        choices=list(STAGES),
        help="stage to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--long-clip",
        action="store_true",
        help="only the long-clip section: probe time and prepare's peak RSS against clip length",
    )
    parser.add_argument(
        "--long-frames",
        default="1000,10000",
        help="clip lengths of --long-clip (default 1000,10000)",
    )
    parser.add_argument(
        "--long-short-side",
        type=int,
        default=64,
        help="working short side of --long-clip's prepare (64: a 10,000-frame "
        "run takes under an hour on a shared 2-core machine)",
    )
    parser.add_argument(
        "--measure-prepare", nargs=3, metavar=("CLIP", "RUN_DIR", "SIDE"), help=argparse.SUPPRESS
    )  # the child process of --long-clip
    args = parser.parse_args(argv)
    if args.measure_prepare:
        _measure_prepare(*args.measure_prepare)
        return 0
    if args.long_clip:
        bench_long_clip([int(n) for n in args.long_frames.split(",")], args.long_short_side)
        return 0
    ctx = load_context(args.quick)
    shapes = ", ".join(f"{k} {v.shape[0]}" for k, v in ctx.clips.items())
    print(f"frames at {SIZE}x{SIZE}: {shapes}; {os.cpu_count()} CPUs")
    for name in args.stage or list(STAGES):
        STAGES[name](ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
