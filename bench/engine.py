"""Engine figures: evaluations per preset, speed, memory and run-folder size against clip
length, flicker, attention-state sizes.

    .venv/bin/python bench/engine.py                 # tiny models, a few minutes on 2 cores
    .venv/bin/python bench/engine.py --real-size     # + SD1.5-size UNet/ControlNet at 256x256
    .venv/bin/python bench/engine.py --flicker-only  # only the flicker ablation (minutes)
    .venv/bin/python bench/engine.py --evals-only    # only evaluations per frame per preset

Tiny random-weight models (see engine/tiny.py) measure the engine's own overhead, not the
quality of a translation. Results go to stdout as JSON lines; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(
    os.environ.get(
        "NAPARI_DIFFSLVA_TEST_DATA", Path(__file__).resolve().parents[1] / "tests/data/real"
    )
)


def clip(n: int, hw=(128, 128), name="asl_house.gif"):
    import cv2

    from napari_diffslva.engine.translate import InMemoryInputs
    from napari_diffslva.video import read_frames

    frames = read_frames(DATA / name, 0, n)
    small = np.stack([cv2.resize(f, hw[::-1], interpolation=cv2.INTER_AREA) for f in frames])
    edges = np.stack(
        [cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 60, 140) / 255.0 for f in small]
    ).astype(np.float32)
    return InMemoryInputs(small, edges)


def run_tiny(n: int, folder: Path, **overrides) -> dict:
    """Translate ``n`` frames into a temporary run folder; the folder's size after every
    frame (frames, manifest, attention-state checkpoints) comes with the stats."""
    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.tiny import tiny_settings
    from napari_diffslva.engine.translate import translate_clip
    from napari_diffslva.progress import run_to_end
    from napari_diffslva.project import RunFolder

    settings = tiny_settings(folder / "tiny", **overrides)
    models = load_models(settings)
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(tmp)

        def measure(event) -> None:
            files = [p for p in run.root.rglob("*") if p.is_file()]
            state = [p for p in files if p.suffix == ".safetensors"]
            sizes.append(
                (sum(p.stat().st_size for p in files), sum(p.stat().st_size for p in state))
            )

        stats = run_to_end(translate_clip(clip(n), models, settings, run), measure)
    return {
        "frames": n,
        **stats.to_dict(),
        "run_folder_bytes_per_frame": [total for total, _ in sizes],
        "state_bytes_per_frame": [state for _, state in sizes],
    }


PRESETS = (  # label, settings (tiny models stand in: evaluations do not depend on weights)
    ("rerender (default: ddim 20 steps, CFG 7.5)", {}),
    ("rerender, window-end reference", {"stage2_reference": "window-end"}),
    ("rerender, fusion off", {"fusion": False}),
    ("lcm (6 steps, no CFG)", {"preset": "lcm", "sampler": "lcm", "steps": 6, "guidance": 1.0}),
    ("lcm 4 steps", {"preset": "lcm", "sampler": "lcm", "steps": 4, "guidance": 1.0}),
    ("tcd (6 steps, no CFG)", {"preset": "tcd", "sampler": "tcd", "steps": 6, "guidance": 1.0}),
    (
        "hyper (ddim-trailing 8 steps, no CFG)",
        {"preset": "hyper", "sampler": "ddim-trailing", "steps": 8, "guidance": 1.0},
    ),
)


def evaluations(folder: Path, frames: int = 5) -> list[dict]:
    """UNet and ControlNet evaluations per frame (batch elements: CFG counts 2) of each
    preset, for a non-anchor frame and averaged over a clip with its anchor."""
    rows = []
    for label, overrides in PRESETS:
        one = run_tiny(1, folder, anchor=0, **overrides)["unet_evals_per_frame"]
        clip_stats = run_tiny(frames, folder, anchor=0, **overrides)
        per_clip = clip_stats["unet_evals_per_frame"]
        rows.append(
            {
                "preset": label,
                "anchor": one,
                "frame": (per_clip * frames - one) / (frames - 1),
                f"average_{frames}_frames": per_clip,
                "controlnet_equal": clip_stats["controlnet_evals_per_frame"] == per_clip,
            }
        )
    return rows


class _ZeroFlow:
    """Engine inputs whose flows are all zero (fusion that ignores motion), with the real
    occlusion masks or none."""

    def __init__(self, inputs, keep_occlusion: bool) -> None:
        self.inputs, self.num_frames = inputs, inputs.num_frames
        self.keep_occlusion = keep_occlusion
        self.content_hash = f"{inputs.content_hash}-zero-flow-{keep_occlusion}"
        self.frame, self.control = inputs.frame, inputs.control

    def flow(self, i: int, j: int):
        from napari_diffslva.prepare.flow import PairFlow

        if not self.keep_occlusion:
            return PairFlow.identity(self.inputs.frame(i).shape[:2])
        pair = self.inputs.flow(i, j)
        return PairFlow(np.zeros_like(pair.flow), pair.occlusion, pair.occlusion_raw)


FLICKER_CLIPS = (  # name, first frame, take every n-th, size: 8 frames each
    ("asl_different.gif", 10, 2, 128),
    ("asl_house.gif", 20, 2, 128),
    ("sl_soup.mp4", 10, 2, 128),
    ("face_talking.mp4", 40, 2, 128),
    ("asl_different.gif", 10, 4, 256),
    ("asl_selfie_webcam.mp4", 10, 3, 256),
)
BOTH_OFF = {"cross_frame_attention": False, "fusion": False}


def flicker_table(folder: Path) -> list[dict]:
    """Flow-warping error of consecutive outputs (0-255) on 8 frames of real clips, default
    schedule: the toy denoiser (napari_diffslva.testing.toy_denoiser) under the ablations,
    and the random tiny UNet for the record."""
    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.tiny import tiny_settings
    from napari_diffslva.testing.toy_denoiser import (
        flicker,
        toy_inputs,
        toy_models,
        translated_frames,
    )

    settings = tiny_settings(folder / "tiny")
    random_models = load_models(settings)
    rows = []
    for name, start, every, size in FLICKER_CLIPS:
        inputs = toy_inputs(DATA / name, start, every=every, size=size)
        toy = toy_models(random_models)
        motion = np.mean(
            [np.abs(inputs.flow(i, i - 1).flow).mean() for i in range(1, inputs.num_frames)]
        )
        row = {
            "clip": f"{name} {start}-{start + 7 * every} every {every}, {size}x{size}",
            "mean_abs_flow_px": round(float(motion), 2),
            "input": round(flicker([inputs.frame(i) for i in range(inputs.num_frames)], inputs), 2),
        }
        for label, models, source, changes in (
            ("toy_off", toy, inputs, BOTH_OFF),
            ("toy_attention_only", toy, inputs, {"fusion": False}),
            ("toy_fusion_only", toy, inputs, {"cross_frame_attention": False}),
            (
                "toy_fusion_only_model_noise",
                toy,
                inputs,
                {"cross_frame_attention": False, "stage2_noise": "model"},
            ),
            ("toy_on", toy, inputs, {}),
            ("toy_on_model_noise", toy, inputs, {"stage2_noise": "model"}),
            ("toy_on_no_smooth_boundary", toy, inputs, {"smooth_boundary": False}),
            ("toy_on_zero_flow", toy, _ZeroFlow(inputs, keep_occlusion=True), {}),
            ("toy_on_zero_flow_no_occlusion", toy, _ZeroFlow(inputs, keep_occlusion=False), {}),
            ("random_unet_off", random_models, inputs, BOTH_OFF),
            ("random_unet_on", random_models, inputs, {}),
        ):
            outputs = translated_frames(source, models, settings.replace(**changes))
            row[label] = round(flicker(outputs, inputs), 2)
        rows.append(row)
    return rows


def sd15_cache_bytes(hw=(512, 512), steps=20, strength=0.75, bytes_per=2, every=10) -> dict:
    """Size of one frame's cross-frame state for SD1.5 ("up" layers, CFG batch 2), computed
    from the architecture: 3 layers each at 1280 ch (h/32), 640 (h/16), 320 (h/8); and what
    a resume checkpoint every ``every`` frames writes per frame on average."""
    h, w = hw
    per_call = sum(3 * c * (h // f) * (w // f) for c, f in ((1280, 32), (640, 16), (320, 8)))
    computed = steps - int(steps * (1 - strength))
    state = per_call * 2 * computed * bytes_per / 1e6
    return {
        "per_unet_call_fp32_batch1_mb": per_call * 4 / 1e6,
        "per_frame_state_mb": state,
        "computed_steps": computed,
        "dtype_bytes": bytes_per,
        "state_every": every,
        "written_per_frame_mb": state / every,
    }


def real_size(hw=(256, 256)) -> dict:
    """SD1.5-size UNet + ControlNet (random weights, fp32, CPU): one guided step."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from napari_diffslva.engine.attention import CrossFrameController, install_cross_frame

    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    controller = CrossFrameController()
    install_cross_frame(unet, "up", controller)
    x = torch.randn(2, 4, hw[0] // 8, hw[1] // 8)
    emb = torch.randn(2, 77, 768)
    cond = torch.rand(2, 3, *hw)
    recorded: dict = {}
    times = []
    with torch.no_grad():
        for reading in (False, True):  # record this frame's states, then read them back
            controller.reading = reading
            controller.recording = None if reading else recorded
            controller.anchor = controller.previous = recorded if reading else {}
            t0 = time.perf_counter()
            down, mid = controlnet(
                x, 500, encoder_hidden_states=emb, controlnet_cond=cond, return_dict=False
            )
            unet(
                x,
                500,
                encoder_hidden_states=emb,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            )
            times.append(time.perf_counter() - t0)
    per_call = sum(t.numel() * t.element_size() for t in recorded.values())
    return {
        "hw": hw,
        "seconds_step_stock": times[0],
        "seconds_step_cross_frame": times[1],
        "cache_bytes_per_call_batch2_fp32": per_call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real-size", action="store_true")
    parser.add_argument(
        "--flicker-only",
        action="store_true",
        help="only the flicker ablation on real clips (2-4 minutes)",
    )
    parser.add_argument("--evals-only", action="store_true", help="only evaluations per preset")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny models: threads only add overhead on 2 shared cores
    if args.memory_child:
        print(json.dumps(run_tiny(args.memory_child, Path(args.folder))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.flicker_only:
            for row in evaluations(folder):
                print(json.dumps({"evaluations": row}), flush=True)
        if args.evals_only:
            return
        if not args.flicker_only:
            speed_and_memory(folder, args.frames)
        for row in flicker_table(folder):
            print(json.dumps({"flicker": row}), flush=True)
    print(json.dumps({"sd15_state_512": sd15_cache_bytes()}), flush=True)
    if args.real_size:
        print(json.dumps({"real_size_step": real_size()}), flush=True)


def speed_and_memory(folder: Path, frames: int) -> None:
    """Speed, peak memory and run-folder size per frame against clip length."""
    row = run_tiny(frames, folder, state_every=3)
    print(json.dumps({"speed_tiny_128x128": row}), flush=True)
    for n in (4, 16, 32):  # each in a fresh process: max RSS is per process
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), "--folder", str(folder)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        keep = ("frames", "peak_memory_mb", "seconds_per_frame")
        summary = {k: row[k] for k in keep}
        summary["largest_run_folder_mb"] = max(row["run_folder_bytes_per_frame"]) / 1e6
        summary["largest_state_mb"] = max(row["state_bytes_per_frame"]) / 1e6
        print(json.dumps({"memory_vs_length": summary}), flush=True)


if __name__ == "__main__":
    main()
