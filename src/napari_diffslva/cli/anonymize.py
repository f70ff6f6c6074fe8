"""``napari-diffslva anonymize VIDEO -o OUT.mp4 --prompt ...``: the whole job on one clip."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine.settings import STAGE2_NOISES
from ._output import drive_with_bar, print_json

# flag -> settings key, for flags whose value is passed through unchanged
_VALUE_FLAGS = {
    "prompt": str, "negative_prompt": str, "model": str, "controlnet": str, "steps": int,
    "strength": float, "guidance": float, "control_scale": float, "seed": int, "anchor": int,
    "device": str, "dtype": str, "short_side": int, "edges": str, "face_module": str,
    "face_weights": str, "hed_weights": str, "stage2_noise": str,
}
_SWITCHES = {  # flag -> (settings key, value when given)
    "offline": ("offline", True), "cpu_offload": ("cpu_offload", True),
    "safe_edges": ("safe_edges", True),
    "no_cross_frame_attention": ("cross_frame_attention", False),
    "no_fusion": ("fusion", False), "no_adain": ("adain", False),
}


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """The anonymization settings as flags (shared with ``batch``); all default to None so a
    config file's values are only overridden by flags the user actually gave."""
    g = p.add_argument_group("settings (defaults: the method's published ones)")
    g.add_argument("--config", help="TOML or JSON file of settings (same names as the flags)")
    g.add_argument("--prompt", help="who the signer becomes, e.g. 'a woman in CG style, brown "
                   "hair, is making gestures'")
    g.add_argument("--negative-prompt")
    g.add_argument("--model", help="SD1.5 hub id or local folder "
                   "(default stable-diffusion-v1-5/stable-diffusion-v1-5)")
    g.add_argument("--controlnet", help="ControlNet hub id or local folder "
                   "(default lllyasviel/sd-controlnet-hed)")
    g.add_argument("--steps", type=int, help="DDIM steps (20)")
    g.add_argument("--strength", type=float, help="SDEdit denoising strength (0.75)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance (7.5)")
    g.add_argument("--control-scale", type=float, help="ControlNet strength (1.0)")
    g.add_argument("--seed", type=int, help="random seed (0)")
    g.add_argument("--anchor", type=int, help="anchor frame (default: middle tracked face)")
    g.add_argument("--device", help="auto, cuda, cuda:1, mps or cpu (auto)")
    g.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"])
    g.add_argument("--short-side", type=int, help="working short side, multiple of 64 (512)")
    g.add_argument("--edges", choices=["soft", "hed"], help="control edges (soft)")
    g.add_argument("--hed-weights", help="ControlNetHED.pth path for --edges hed")
    g.add_argument("--safe-edges", action="store_true", help="quantise edges (identity safety)")
    g.add_argument("--face-module", choices=["warp", "reenact", "off"],
                   help="restore the original expressions (warp: no weights; reenact: TPSMM)")
    g.add_argument("--face-weights", help="vox.pth.tar path for --face-module reenact")
    g.add_argument("--offline", action="store_true", help="never download; fail fast instead")
    g.add_argument("--cpu-offload", action="store_true", help="for GPUs with little memory")
    g.add_argument("--no-cross-frame-attention", action="store_true", help="ablation")
    g.add_argument("--no-fusion", action="store_true", help="ablation: no flow-guided fusion")
    g.add_argument("--no-adain", action="store_true", help="ablation: no AdaIN colour fix")
    g.add_argument("--stage2-noise", choices=STAGE2_NOISES,
                   help="noise of the fusion reference: the model's own estimate (model, "
                   "default) or fresh noise as in Rerender-A-Video (fresh)")


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags the user actually gave, as flat keys."""
    flat: dict[str, Any] = {}
    for name in _VALUE_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            flat[name] = value
    for flag, (key, value) in _SWITCHES.items():
        if getattr(args, flag, False):
            flat[key] = value
    return flat


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
    gen = anonymize(args.video, args.output, run_dir=args.run_dir, settings=settings,
                    resume=args.resume, overwrite=args.overwrite, side_by_side=args.side_by_side)
    result = drive_with_bar(gen, "anonymize", quiet=args.json)
    d = result.to_dict()
    if args.json:
        print_json(d)
        return 0
    print(f"wrote {d['output']}: {d['frames']} frames at {d['rate']} fps "
          f"(run folder {d['run_dir']})")
    if "seconds_per_frame" in d:
        print(f"  {d['seconds_per_frame']:.2f} s per frame, "
              f"{d.get('unet_evals_per_frame', 0):.0f} UNet evaluations per frame")
    lost = d["face_module"].get("lost_frames")
    if lost:
        print(f"  face module left {len(lost)} frames without a tracked face unchanged: "
              f"{', '.join(map(str, lost[:20]))}{' ...' if len(lost) > 20 else ''}")
    return 0
