"""``napari-diffslva anonymize VIDEO -o OUT.mp4 --prompt ...``: the whole job on one clip."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..options import add_flags, given_flags
from ._output import drive_with_bar, print_json


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """The anonymization settings as flags (shared with ``batch``), generated from their
    declarations; all default to None so a config file's values are only overridden by
    flags the user actually gave."""
    from ..pipeline import SETTINGS_CLASSES

    g = p.add_argument_group(
        "settings (defaults: the method's published ones; docs/settings.md lists every key)"
    )
    g.add_argument("--config", help="TOML or JSON file of settings (same names as the flags)")
    add_flags(g, SETTINGS_CLASSES)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags the user actually gave, as flat keys."""
    from ..pipeline import SETTINGS_CLASSES

    return given_flags(args, SETTINGS_CLASSES)


def settings_from_args(args: argparse.Namespace):
    """Settings from ``--config`` (if given) overridden by the flags the user gave."""
    from ..pipeline import AnonymizeSettings

    flat = given_settings(args)
    if args.config:
        return AnonymizeSettings.from_file(args.config, **flat)
    return AnonymizeSettings.from_flat(flat)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anonymize", help="replace the signer by a prompt-described person")
    p.add_argument("video", help="video file, or folder of numbered images")
    p.add_argument("-o", "--output", required=True, help="output .mp4 or .mov")
    p.add_argument("--run-dir", help="run folder (default: OUTPUT_STEM.diffslva-run beside it)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--side-by-side", help="also write original|anonymized to this .mp4")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_settings_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import anonymize

    settings = settings_from_args(args)
    gen = anonymize(
        args.video,
        args.output,
        run_dir=args.run_dir,
        settings=settings,
        resume=args.resume,
        overwrite=args.overwrite,
        side_by_side=args.side_by_side,
        should_stop=args.should_stop,
    )
    result = drive_with_bar(gen, "anonymize", quiet=args.json, should_stop=args.should_stop)
    d = result.to_dict()
    code = 3 if result.held_back else 0  # as audit --fail-on-leak
    if args.json:
        print_json(d)
        return code
    if result.held_back:
        print(
            f"held back: the result still looks like the signer, so it was not written to "
            f"{args.output} but to {d['output']} (run folder {d['run_dir']})",
            file=sys.stderr,
        )
    else:
        print(
            f"wrote {d['output']}: {d['frames']} frames at {d['rate']} fps "
            f"(run folder {d['run_dir']})"
        )
    _print_privacy(result)
    if "seconds_per_frame" in d:
        print(
            f"  {d['seconds_per_frame']:.2f} s per frame, "
            f"{d.get('unet_evals_per_frame', 0):.0f} UNet evaluations per frame, "
            f"{_peak_memory(d)}"
        )
    lost = d["face_module"].get("lost_frames")
    if lost:
        print(
            f"  face module left {len(lost)} frames without a tracked face unchanged: "
            f"{', '.join(map(str, lost[:20]))}{' ...' if len(lost) > 20 else ''}"
        )
    return code


def _peak_memory(d: dict[str, Any]) -> str:
    """The run's peak memory: the GPU's allocations on CUDA, else the process's RSS."""
    mb, device = d.get("peak_memory_mb", float("nan")), str(d.get("device", ""))
    if mb != mb:  # NaN: not measurable here (a Windows CPU)
        return "peak memory not measured"
    return f"peak {'GPU memory' if device.startswith('cuda') else 'memory (RSS)'} {mb:.0f} MB"


def _print_privacy(result) -> None:
    """The identity gate's and the self-audit's one-line reports."""
    from ..privacy import SELF_AUDIT_OFF

    if result.gate is not None:
        print(f"  {result.gate.message()}")
    if result.audit is None:
        print(f"  {SELF_AUDIT_OFF}")
    else:
        print(f"  {result.audit.message()}")
        if result.leaking and not result.held_back:
            print(
                "  warning: check those frames before sharing the clip "
                "(--fail-on-leak keeps such a result out of the output location)",
                file=sys.stderr,
            )
