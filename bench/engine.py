"""Engine figures: speed, evaluations, memory against clip length, flicker, cache sizes.

    .venv/bin/python bench/engine.py                 # tiny models, a few minutes on 2 cores
    .venv/bin/python bench/engine.py --real-size     # + SD1.5-size UNet/ControlNet at 256x256
    .venv/bin/python bench/engine.py --toy-denoiser  # only the flicker ablation, toy denoiser

Tiny random-weight models (see engine/tiny.py) measure the engine's own overhead, not the
quality of a translation. Results go to stdout as JSON lines; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def clip(n: int, hw=(128, 128), name="asl_house.gif"):
    import cv2

    from napari_diffslva.engine.translate import InMemoryInputs
    from napari_diffslva.video import read_frames

    frames = read_frames(DATA / name, 0, n)
    small = np.stack([cv2.resize(f, hw[::-1], interpolation=cv2.INTER_AREA) for f in frames])
    edges = np.stack([cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 60, 140) / 255.0
                      for f in small]).astype(np.float32)
    return InMemoryInputs(small, edges)


def run_tiny(n: int, folder: Path, **overrides) -> dict:
    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.tiny import tiny_settings
    from napari_diffslva.engine.translate import translate_clip
    from napari_diffslva.progress import run_to_end
    from napari_diffslva.project import RunFolder

    settings = tiny_settings(folder / "tiny", **overrides)
    models = load_models(settings)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(tmp)
        stats = run_to_end(translate_clip(clip(n), models, settings, run))
        state = sorted((run.root / "state").rglob("*.safetensors"))
        state_bytes = state[-1].stat().st_size if state else 0
    return {"frames": n, **stats.to_dict(), "state_file_bytes": state_bytes}


def flicker(folder: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.tiny import tiny_settings
    from napari_diffslva.engine.translate import translate_clip
    from napari_diffslva.progress import run_to_end
    from test_engine_translate import _warping_error

    inputs = clip(10, (64, 128))
    out = {}
    for name, changes in {"on": {}, "off": {"cross_frame_attention": False, "fusion": False}
                          }.items():
        settings = tiny_settings(folder / "tiny", **changes)
        events = []
        run_to_end(translate_clip(inputs, load_models(settings), settings), events.append)
        frames = dict(e.payload for e in events)
        out[name] = _warping_error([frames[i] for i in range(inputs.num_frames)], inputs)
    out["input"] = _warping_error([inputs.frame(i) for i in range(inputs.num_frames)], inputs)
    return out


class ToyDenoiser:
    """A stand-in for UNet + ControlNet that removes noise and invents per-frame detail.

    The exact MMSE denoiser of the prior ``x0 = mu_f + v b``, ``b = +-1`` per latent element
    with ``P(b = +1) = sigmoid(beta h_f)``: ``mu_f`` is the control image (the frame's grey
    levels, fed as the control) at latent size, ``h_f`` a random texture fixed per frame
    (seeded by a hash of its control image). Its x0 depends on ``x_t`` and it commits to
    detail at mid noise, as SD does; it has no attention, so cross-frame attention does
    nothing to it, and it says nothing about image quality.
    """

    def __init__(self, unet, scheduler, v: float = 0.3, beta: float = 2.0) -> None:
        self.unet, self.abar = unet, scheduler.alphas_cumprod.double()
        self.v, self.beta = v, beta
        self.priors: dict[str, tuple] = {}
        self.current: tuple | None = None

    def __getattr__(self, name):  # config, attn_processors, set_attn_processor ...
        return getattr(self.__dict__["unet"], name)

    def controlnet(self, x, t, *, controlnet_cond, **kwargs):
        import hashlib

        import torch
        import torch.nn.functional as F

        grey = controlnet_cond[:1, :1].float()
        key = hashlib.sha256(grey.cpu().numpy().tobytes()).hexdigest()
        if key not in self.priors:
            mu = (F.avg_pool2d(grey, 8) * 2 - 1).expand(1, 3, -1, -1)
            mu = torch.cat([mu, torch.zeros_like(mu[:, :1])], 1)
            gen = torch.Generator().manual_seed(int(key[:8], 16))
            self.priors[key] = (mu, torch.randn(mu.shape, generator=gen))
        self.current = self.priors[key]
        return None, None

    def __call__(self, x, t, **kwargs):
        import math

        import torch

        a = float(self.abar[int(t)])
        mu, h = (u.to(x) for u in self.current)
        logit = self.beta * h / 2 + self.v * math.sqrt(a) * (x - math.sqrt(a) * mu) / (1 - a)
        x0 = mu + self.v * torch.tanh(logit)
        return ((x - math.sqrt(a) * x0) / math.sqrt(1 - a),)


class _ZeroFlow:
    """Engine inputs whose flows are all zero and unoccluded (fusion without motion)."""

    def __init__(self, inputs) -> None:
        self.inputs, self.num_frames = inputs, inputs.num_frames
        self.content_hash = inputs.content_hash + "-zero-flow"
        self.frame, self.control = inputs.frame, inputs.control

    def flow(self, i: int, j: int):
        from napari_diffslva.prepare.flow import PairFlow

        return PairFlow.identity(self.inputs.frame(i).shape[:2])


def toy_flicker(folder: Path, name="asl_different.gif", start=10, stop=26, every=2,
                hw=(128, 128)) -> dict:
    """Flow-warping error with the toy denoiser: fusion on / off / zero flow / weight 0."""
    import dataclasses

    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.tiny import tiny_settings
    from napari_diffslva.engine.translate import InMemoryInputs, translate_clip
    from napari_diffslva.progress import run_to_end
    from napari_diffslva.video import read_frames
    from test_engine_translate import _warping_error

    frames = read_frames(DATA / name, start, stop)[::every]
    small = np.stack([cv2.resize(f, hw[::-1], interpolation=cv2.INTER_AREA) for f in frames])
    grey = np.stack([cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (3, 3), 0)
                     for f in small]) / np.float32(255)
    inputs = InMemoryInputs(small, grey.astype(np.float32))
    settings = tiny_settings(folder / "tiny")
    models = load_models(settings)
    toy = ToyDenoiser(models.unet, models.scheduler)
    models = dataclasses.replace(models, unet=toy, controlnet=toy.controlnet)
    out = {"clip": f"{name} {start}-{stop - 1} every {every}, {hw[0]}x{hw[1]}",
           "input": _warping_error([inputs.frame(i) for i in range(inputs.num_frames)], inputs)}
    for label, changes, source in (
        ("on", {}, inputs),
        ("off", {"cross_frame_attention": False, "fusion": False}, inputs),
        ("zero_flow", {}, _ZeroFlow(inputs)),
        ("stage2_weight_0", {"stage2_weight": 0.0}, inputs),
    ):
        events = []
        run_to_end(translate_clip(source, models, settings.replace(**changes)), events.append)
        result = dict(e.payload for e in events)
        out[label] = _warping_error([result[i] for i in range(inputs.num_frames)], inputs)
    return out


def sd15_cache_bytes(hw=(512, 512), steps=20, strength=0.75, bytes_per=2) -> dict:
    """Size of one frame's cross-frame state for SD1.5 ("up" layers, CFG batch 2), computed
    from the architecture: 3 layers each at 1280 ch (h/32), 640 (h/16), 320 (h/8)."""
    h, w = hw
    per_call = sum(3 * c * (h // f) * (w // f) for c, f in ((1280, 32), (640, 16), (320, 8)))
    computed = steps - int(steps * (1 - strength))
    return {"per_unet_call_fp32_batch1_mb": per_call * 4 / 1e6,
            "per_frame_state_mb": per_call * 2 * computed * bytes_per / 1e6,
            "computed_steps": computed, "dtype_bytes": bytes_per}


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
            down, mid = controlnet(x, 500, encoder_hidden_states=emb, controlnet_cond=cond,
                                   return_dict=False)
            unet(x, 500, encoder_hidden_states=emb, down_block_additional_residuals=down,
                 mid_block_additional_residual=mid)
            times.append(time.perf_counter() - t0)
    per_call = sum(t.numel() * t.element_size() for t in recorded.values())
    return {"hw": hw, "seconds_step_stock": times[0], "seconds_step_cross_frame": times[1],
            "cache_bytes_per_call_batch2_fp32": per_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real-size", action="store_true")
    parser.add_argument("--toy-denoiser", action="store_true",
                        help="only the flicker ablation with the toy denoiser (seconds)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny models: threads only add overhead on 2 shared cores
    if args.memory_child:
        print(json.dumps(run_tiny(args.memory_child, Path(args.folder))))
        return
    if args.toy_denoiser:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps({"flicker_toy_denoiser": toy_flicker(Path(tmp))}), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(json.dumps({"speed_tiny_128x128": run_tiny(args.frames, folder)}), flush=True)
        for n in (4, 16, 32):  # each in a fresh process: max RSS is per process
            out = subprocess.run([sys.executable, __file__, "--memory-child", str(n),
                                  "--folder", str(folder)], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            row = json.loads(out)
            print(json.dumps({"memory_vs_length": {k: row[k] for k in (
                "frames", "peak_memory_mb", "seconds_per_frame", "cache_bytes")}}), flush=True)
        print(json.dumps({"flicker_tiny_64x128": flicker(folder)}), flush=True)
    print(json.dumps({"sd15_state_512": sd15_cache_bytes()}), flush=True)
    if args.real_size:
        print(json.dumps({"real_size_step": real_size()}), flush=True)


if __name__ == "__main__":
    main()
