"""``napari-diffslva selftest``: the whole pipeline on the bundled sample with tiny models.

Builds random-weight models of Stable Diffusion's and ControlNet's architecture, loads
them through the same code as the real ones, anonymizes the sample clip and checks the
output's frame count, rate and size. Proves the installation works without any download.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ._output import drive_with_bar, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("selftest", help="run the pipeline on the sample with tiny random models")
    p.add_argument(
        "--save-models",
        metavar="DIR",
        help="keep the tiny models in DIR/sd and DIR/controlnet for smoke runs",
    )
    p.add_argument("--video", help="clip to use instead of the bundled sample")
    p.add_argument("-o", "--output", help="keep the anonymized clip here")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._sample_data import sample_path
    from ..engine.tiny import build_tiny_models
    from ..export import write_video
    from ..pipeline import AnonymizeSettings, anonymize
    from ..video import probe, read_frames

    video = Path(args.video) if args.video else sample_path()
    with tempfile.TemporaryDirectory(prefix="diffslva-selftest-") as tmp:
        tmp_dir = Path(tmp)
        model_dir = Path(args.save_models) if args.save_models else tmp_dir / "models"
        sd_dir, cn_dir = build_tiny_models(model_dir)
        if args.frames:
            info = probe(video)
            clip = tmp_dir / "clip.mp4"
            write_video(read_frames(video, 0, args.frames), clip, rate=info.rate)
            video = clip
        source = probe(video)
        settings = AnonymizeSettings.from_flat(
            {
                "model": str(sd_dir),
                "controlnet": str(cn_dir),
                "offline": True,
                "short_side": 64,
                "steps": 4,
                "device": "cpu",
                "prompt": "a person is signing",
            }
        )
        output = Path(args.output) if args.output else tmp_dir / "anonymized.mp4"
        result = drive_with_bar(
            anonymize(video, output, run_dir=tmp_dir / "run", settings=settings, overwrite=True),
            "selftest",
            quiet=args.json,
            should_stop=args.should_stop,
        )
        out = probe(output)
        checks = {
            "frame_count": out.frames == source.frames,
            "rate": out.rate == source.rate or source.timing.variable_rate,
            "timestamps": bool(abs(out.duration - source.duration) < 1e-3),
            "size": (out.width, out.height) == (source.width, source.height),
        }
    passed = all(checks.values())
    summary = {"passed": passed, "checks": checks, **result.to_dict()}
    if args.save_models:
        summary["models"] = {"sd": str(sd_dir), "controlnet": str(cn_dir)}
    if args.json:
        print_json(summary)
    else:
        failed = [k for k, ok in checks.items() if not ok]
        print(
            f"selftest {'PASSED' if passed else 'FAILED'}: {source.frames} frames, "
            f"{result.stats.get('seconds_per_frame', 0):.2f} s per frame"
            + (f"; failed checks: {', '.join(failed)}" if failed else "")
        )
        if args.save_models:
            print(f"tiny models kept: --model {sd_dir} --controlnet {cn_dir}")
    return 0 if passed else 1
