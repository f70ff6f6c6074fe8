"""Batch throughput: clips per minute against the number of local dask workers.

Cuts ``--clips`` real clips to ``--frames`` frames and anonymizes them with the tiny
random-weight models (64 px working size, 2 steps) on a LocalCluster of 1, then 2 worker
processes. Each cluster runs the batch twice into fresh output folders: ``cold`` includes
the workers' first imports and model loads, ``warm`` is the steady state (models cached
per worker process). Prints figures and the 2-vs-1 ratios.

    .venv/bin/python bench/batch.py [--clips 6] [--frames 8] [--workers 1 2]

The tiny models make the diffusion cheap, so the figures weigh the fixed per-clip costs
(face tracking, flow, encoding, task overhead) much more than a real SD1.5 run would.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from napari_diffslva.batch import batch_client, plan_batch, run_batch
from napari_diffslva.engine.tiny import build_tiny_models
from napari_diffslva.export import write_video
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import probe, read_frames

REAL = Path(
    os.environ.get(
        "NAPARI_DIFFSLVA_TEST_DATA", Path(__file__).resolve().parents[1] / "tests/data/real"
    )
)
SOURCES = (
    "sl_soup.mp4",
    "asl_house.gif",
    "asl_different.gif",
    "asl_selfie_webcam.mp4",
    "face_talking.mp4",
)


def make_corpus(folder: Path, clips: int, frames: int) -> Path:
    """``clips`` short clips cut from the real ones (cycling, at different offsets)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        src = REAL / SOURCES[i % len(SOURCES)]
        start = (i // len(SOURCES)) * frames
        write_video(
            read_frames(src, start, start + frames),
            folder / f"clip{i:02d}.mp4",
            rate=probe(src).rate,
        )
    return folder


def timed_batch(
    client, corpus: Path, outdir: Path, settings: dict
) -> tuple[float, dict[str, float]]:
    """Wall seconds of the batch and mean seconds per clip of each stage (inside tasks)."""
    plan = plan_batch([corpus], outdir, settings=settings)
    started = time.perf_counter()
    result = run_to_end(run_batch(plan, client, poll=0.2))
    seconds = time.perf_counter() - started
    failed = [n for n, r in result.records.items() if r["status"] != "done"]
    if failed:
        raise SystemExit(f"clips failed: {failed}")
    stages: dict[str, float] = {}
    for rec in result.records.values():
        for stage, s in {**rec["stages"], "task": rec["seconds"]}.items():
            stages[stage] = stages.get(stage, 0.0) + s / len(result.records)
    return seconds, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--face-module", default="off", choices=["off", "warp"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        sd_dir, cn_dir = build_tiny_models(root / "models")
        settings = {
            "model": str(sd_dir),
            "controlnet": str(cn_dir),
            "offline": True,
            "short_side": 64,
            "steps": 2,
            "device": "cpu",
            "face_module": args.face_module,
        }
        corpus = make_corpus(root / "corpus", args.clips, args.frames)
        print(
            f"{args.clips} clips x {args.frames} frames, tiny models, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at start"
        )
        rates: dict[int, float] = {}
        for workers in args.workers:
            started = time.perf_counter()
            with batch_client(workers=workers) as client:
                cluster_seconds = time.perf_counter() - started
                cold, _ = timed_batch(client, corpus, root / f"out-{workers}-cold", settings)
                warm, stages = timed_batch(client, corpus, root / f"out-{workers}-warm", settings)
            rates[workers] = args.clips / warm * 60
            print(
                f"workers {workers}: cluster start {cluster_seconds:5.1f} s | cold batch "
                f"{cold:6.1f} s ({args.clips / cold * 60:5.1f} clips/min) | warm batch "
                f"{warm:6.1f} s ({rates[workers]:5.1f} clips/min, "
                f"{warm / args.clips:.1f} s per clip)"
            )
            print(
                "  warm, mean seconds per clip inside its task: "
                + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
            )
            print(f"  load average {os.getloadavg()[0]:.1f}")
        base = min(rates)  # the smallest worker count is the reference
        for workers, rate in rates.items():
            if workers != base:
                print(f"warm throughput {workers} vs {base} worker(s): x{rate / rates[base]:.2f}")
        print(f"load average {os.getloadavg()[0]:.1f} at end (other jobs share these cores)")


if __name__ == "__main__":
    main()
