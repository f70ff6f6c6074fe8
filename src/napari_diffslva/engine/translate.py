"""The video loop: anchor first, then every frame in order, streamed to the run folder.

The anchor frame is translated first; its result and cached attention states fix the
style of the clip. Then frames ``0 .. N-1`` are translated in order (the anchor is not
translated twice), each attending to the anchor and to the frame before it. Every finished
frame is written to the run folder at once and announced as a :class:`Progress` event
whose payload is ``(index, rgb)``; nothing accumulates in memory, so memory stays flat
over the length of the clip.

Resume: the chain state that frame ``i`` needs is the anchor (recomputed: deterministic),
the previous output (its PNG in the run folder) and the previous frame's cached attention
states, persisted after each frame as ``state/translate-<key>/previous-<i>.safetensors``
(model dtype, written atomically; the older file is removed only after the newer frame is
marked done). A resumed run therefore produces the same bits as an uninterrupted one on
the same device.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..progress import Progress, ProgressGenerator
from ..project import RunFolder, atomic_write_bytes, settings_key
from .attention import StateCache
from .models import Models
from .sampler import FrameRefs, FrameSampler
from .settings import EngineSettings
from .style import StyleReference

if TYPE_CHECKING:
    import torch

    from ..prepare.flow import PairFlow

STAGE = "anonymized"


class EngineInputs(Protocol):
    """What the engine reads of a clip, all at working size."""

    num_frames: int
    content_hash: str

    def frame(self, i: int) -> np.ndarray:
        """Input frame ``i``, uint8 RGB ``(H, W, 3)``."""
        ...

    def control(self, i: int) -> np.ndarray:
        """Soft edges of frame ``i``, float32 ``(H, W)`` in [0, 1] (the ControlNet input)."""
        ...

    def flow(self, i: int, j: int) -> PairFlow:
        """Pull field that brings frame ``j`` into frame ``i``, with its occlusion mask."""
        ...


class InMemoryInputs:
    """:class:`EngineInputs` over arrays in memory; flows computed on demand and cached.

    For tests and short clips; long clips use the run-folder-backed inputs.
    """

    def __init__(
        self,
        frames_work: np.ndarray,
        edges: np.ndarray,
        *,
        flow_backend: str = "dis",
        flow_cache_size: int = 16,
    ) -> None:
        if len(frames_work) != len(edges) or frames_work.shape[1:3] != edges.shape[1:3]:
            raise ValueError(f"frames {frames_work.shape} and edges {edges.shape} do not match")
        self.frames, self.edges = frames_work, edges
        self.num_frames = len(frames_work)
        digest = hashlib.sha256(np.ascontiguousarray(frames_work).tobytes())
        digest.update(np.ascontiguousarray(edges, np.float32).tobytes())
        self.content_hash = digest.hexdigest()[:16]
        self.flow_backend = flow_backend
        self._flows: OrderedDict[tuple[int, int], PairFlow] = OrderedDict()
        self._flow_cache_size = flow_cache_size

    def frame(self, i: int) -> np.ndarray:
        return self.frames[i]

    def control(self, i: int) -> np.ndarray:
        return np.asarray(self.edges[i], np.float32)

    def flow(self, i: int, j: int) -> PairFlow:
        from ..prepare.flow import pair_flow

        if (i, j) not in self._flows:
            self._flows[(i, j)] = pair_flow(self.frames[i], self.frames[j], self.flow_backend)
            while len(self._flows) > self._flow_cache_size:
                self._flows.popitem(last=False)
        return self._flows[(i, j)]


@dataclass
class RunStats:
    """Cost of one :func:`translate_clip` call, averaged over the frames it translated."""

    frames: int  # frames translated by this call (the anchor included)
    unet_evals_per_frame: float  # batch elements: CFG counts 2
    controlnet_evals_per_frame: float
    seconds_per_frame: float
    denoiser_seconds_per_frame: float  # inside UNet + ControlNet forward passes
    other_seconds_per_frame: float  # VAE, fusion, flow, I/O, state persistence
    peak_memory_mb: float  # CUDA max allocated on a GPU, process max RSS on the CPU
    cache_bytes: int  # largest cross-frame attention cache held at once
    style_reference: str | None = None  # key of the group's style reference (AdaIN only)

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


def run_key(
    inputs: EngineInputs, settings: EngineSettings, style_reference: StyleReference | None = None
) -> str:
    """The settings key of a clip's translated frames in the run folder (a style reference
    is part of it: another reference gives other frames)."""
    parts = [inputs.content_hash, settings.result_dict()]
    if style_reference is not None:
        parts.append(style_reference.key)
    return settings_key(*parts)


# -- previous-frame state on disk ------------------------------------------------------------
def _state_dir(run: RunFolder, key: str) -> Path:
    return run.root / "state" / f"translate-{key}"


def _state_path(run: RunFolder, key: str, frame: int) -> Path:
    return _state_dir(run, key) / f"previous-{frame:06d}.safetensors"


def save_state(run: RunFolder, key: str, frame: int, states: StateCache) -> int:
    """Persist frame ``frame``'s cached states atomically; returns the file size in bytes."""
    from safetensors.torch import save

    tensors = {
        f"{step}|{layer}": t.detach().contiguous().cpu() for (step, layer), t in states.items()
    }
    data = save(tensors)
    atomic_write_bytes(_state_path(run, key, frame), data)
    return len(data)


def load_state(run: RunFolder, key: str, frame: int, device: torch.device) -> StateCache | None:
    """Frame ``frame``'s persisted states, or None when that file is missing."""
    from safetensors.torch import load

    path = _state_path(run, key, frame)
    if not path.is_file():
        return None
    out: StateCache = {}
    for name, tensor in load(path.read_bytes()).items():
        step, layer = name.split("|", 1)
        out[(int(step), layer)] = tensor.to(device)
    return out


def _drop_states_except(run: RunFolder, key: str, keep: int) -> None:
    for path in _state_dir(run, key).glob("previous-*.safetensors"):
        if path != _state_path(run, key, keep):
            path.unlink(missing_ok=True)


def _peak_memory_mb(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


# -- the loop --------------------------------------------------------------------------------
def _resume_point(
    run: RunFolder, key: str, order: list[int], anchor: int, done: set[int], device: torch.device
) -> tuple[int, StateCache | None]:
    """Position in ``order`` to continue from, and the states of the frame before it.

    Falls back to the start of ``order`` when the previous frame's state is not on disk.
    """
    pending = [p for p, i in enumerate(order) if i not in done]
    if not pending:
        return len(order), None
    pos = pending[0]
    prev = order[pos] - 1
    if order[pos] == 0 or prev == anchor:
        return pos, None
    states = load_state(run, key, prev, device)
    if states is None or prev not in done:
        return 0, None
    return pos, states


def translate_anchor(
    inputs: EngineInputs,
    models: Models,
    settings: EngineSettings,
    *,
    style_reference: StyleReference | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """The anchor frame's translation alone: uint8 RGB at working size, the same pixels
    :func:`translate_clip` gives the anchor with these settings (for checks, such as the
    identity gate, made before the clip is translated)."""
    anchor = settings.anchor_index(inputs.num_frames)
    style = (
        style_reference.targets(settings, models.device, models.dtype)
        if style_reference is not None and settings.adain
        else None
    )
    image = inputs.frame(anchor)
    with FrameSampler(models, settings, image.shape[:2]) as sampler:
        guide = sampler.translate_anchor(image, inputs.control(anchor), should_stop, style)
    return guide.rgb


def translate_clip(
    inputs: EngineInputs,
    models: Models,
    settings: EngineSettings,
    run: RunFolder | None = None,
    *,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    style_reference: StyleReference | None = None,
) -> ProgressGenerator[RunStats]:
    """Translate a clip: yields ``Progress("translate", done, total, seconds, (i, rgb))``
    per frame (anchor first) and returns :class:`RunStats`.

    With ``run``, each frame is written to ``frames/anonymized/`` and marked done before
    it is yielded. ``resume=True`` keeps frames already done under the same settings key and
    continues the chain from the last one. Cancel by closing the generator or through
    ``should_stop`` (checked between denoising steps; raises :class:`Cancelled`).

    ``style_reference`` (a group's first view's, see :mod:`.style`) sets the AdaIN targets
    of the anchor, hence of the whole clip; it needs ``adain`` on and the same schedule.
    With ``run``, the anchor's own statistics are saved there as this clip's reference.
    """
    n = inputs.num_frames
    anchor = settings.anchor_index(n)
    key = run_key(inputs, settings, style_reference)
    style = (
        style_reference.targets(settings, models.device, models.dtype)
        if style_reference is not None and settings.adain
        else None
    )
    order = [i for i in range(n) if i != anchor]
    done: set[int] = set()
    if run is not None:
        run.check_source(inputs.content_hash)
        run.write_settings(STAGE, settings.to_dict())
        if resume:
            done = run.done_frames(STAGE, key)
        else:
            shutil.rmtree(run.root / "state", ignore_errors=True)
    start_pos, resumed_states = (
        _resume_point(run, key, order, anchor, done, models.device)
        if run is not None and resume
        else (0, None)
    )
    hw = inputs.frame(anchor).shape[:2]
    translated, started_all, cache_peak = 0, time.perf_counter(), 0
    finished = 0
    with FrameSampler(models, settings, hw) as sampler:
        t0 = time.perf_counter()
        guide = sampler.translate_anchor(
            inputs.frame(anchor), inputs.control(anchor), should_stop, style
        )
        translated += 1
        if run is not None and guide.stats:
            StyleReference.from_stats(settings.steps, guide.stats).save(run)
        cache_peak = max(cache_peak, sampler.controller.nbytes())
        if run is not None and anchor not in done:
            run.write_frame(STAGE, anchor, guide.rgb)
            run.mark_done(STAGE, anchor, key, {"seconds": time.perf_counter() - t0})
        finished += 1
        yield Progress("translate", finished, n, time.perf_counter() - t0, (anchor, guide.rgb))

        prev_rgb: np.ndarray | None = None
        for pos, i in enumerate(order):
            t0 = time.perf_counter()
            if pos < start_pos:  # finished in an earlier run
                rgb = run.read_frame(STAGE, i)
                finished += 1
                yield Progress("translate", finished, n, time.perf_counter() - t0, (i, rgb))
                continue
            if i == 0:
                sampler.set_previous_state({})  # no previous frame: attend to itself
            elif i - 1 == anchor:
                sampler.use_anchor_as_previous()
                prev_rgb = guide.rgb
            elif pos == start_pos and resumed_states is not None:
                sampler.set_previous_state(resumed_states)
                prev_rgb = run.read_frame(STAGE, i - 1)
            refs = FrameRefs(
                anchor_flow=inputs.flow(i, anchor),
                prev_flow=inputs.flow(i, i - 1) if i > 0 else None,
                prev_rgb=prev_rgb,
            )
            evals_before = sampler.counters.unet_evals
            rgb = sampler.translate_frame(
                inputs.frame(i), inputs.control(i), guide, refs, should_stop
            )
            cache_peak = max(cache_peak, sampler.controller.nbytes())
            translated += 1
            prev_rgb = rgb
            if run is not None:
                run.write_frame(STAGE, i, rgb)
                save_state(run, key, i, sampler.previous_state())
                run.mark_done(
                    STAGE,
                    i,
                    key,
                    {
                        "seconds": time.perf_counter() - t0,
                        "unet_evals": sampler.counters.unet_evals - evals_before,
                    },
                )
                _drop_states_except(run, key, i)
            finished += 1
            yield Progress("translate", finished, n, time.perf_counter() - t0, (i, rgb))
        counters = sampler.counters
    total_seconds = time.perf_counter() - started_all
    per = max(translated, 1)
    return RunStats(
        frames=translated,
        unet_evals_per_frame=counters.unet_evals / per,
        controlnet_evals_per_frame=counters.controlnet_evals / per,
        seconds_per_frame=total_seconds / per,
        denoiser_seconds_per_frame=counters.denoiser_seconds / per,
        other_seconds_per_frame=(total_seconds - counters.denoiser_seconds) / per,
        peak_memory_mb=_peak_memory_mb(models.device),
        cache_bytes=cache_peak,
        style_reference=style_reference.key if style is not None else None,
    )
