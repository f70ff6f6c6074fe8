"""The video loop: anchors first, then outward from each anchor, streamed to the run folder.

The anchors (:mod:`.anchors`: one, or one per ``anchor_span`` frames of a long clip, all
styled by the first) are translated first; their results and cached attention states fix
the style of the clip. Then each anchor's frames are translated outward from it, each
attending to its anchor and to its neighbour towards the anchor ("previous"). Every
finished frame is written to the run folder at once and announced as a :class:`Progress`
event whose payload is ``(index, rgb)``; nothing accumulates in memory, so memory stays
flat over the length of the clip.

Resume: frame ``i`` needs its anchor (recomputed: deterministic), the previous output (its
PNG in the run folder) and the previous frame's attention states. Those states (413 MB at
512x512 in fp16) depend on the states of the frame before, and so on back to the anchor,
so no small state can replace them; they are written only for every ``state_every``-th
frame of a chain (``state/translate-<key>/chain-<i>.safetensors``, one file at a time). A
resume recomputes the frames after the last such checkpoint (at most ``state_every - 1``,
outputs already on disk) to rebuild the states, so it produces the same bits as an
uninterrupted run on the same device; the recomputed outputs are compared with the stored
ones (``RunStats.resume_mismatches``).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..progress import Progress, ProgressGenerator
from ..project import RunFolder, atomic_write_bytes, settings_key
from .anchors import ClipPlan, plan_clip
from .attention import StateCache
from .models import Models
from .sampler import AnchorGuide, FrameRefs, FrameSampler
from .settings import EngineSettings
from .style import StyleReference

if TYPE_CHECKING:
    import torch

    from ..prepare.flow import PairFlow

STAGE = "anonymized"


class EngineInputs(Protocol):
    """What the engine reads of a clip, all at working size."""

    num_frames: int
    content_hash: str  # the source video's (run folders check it)
    inputs_key: str  # everything read below (frames, control maps, flows): part of the run key

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
        self.inputs_key = f"{self.content_hash}-{flow_backend}"
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

    frames: int  # frames translated by this call (anchors and resume recomputation included)
    unet_evals_per_frame: float  # batch elements: CFG counts 2
    controlnet_evals_per_frame: float
    seconds_per_frame: float
    denoiser_seconds_per_frame: float  # inside UNet + ControlNet forward passes
    other_seconds_per_frame: float  # VAE, fusion, flow, I/O, state persistence
    peak_memory_mb: float  # CUDA max allocated on a GPU, process max RSS on the CPU
    device: str = "cpu"  # where the models ran: says which of the two peak_memory_mb is
    anchors: list[int] = field(default_factory=list)  # the first fixes the style
    resumed_frames: int = 0  # recomputed on resume to rebuild the attention states
    resume_mismatches: int = 0  # of those, outputs that differ from the stored ones
    style_reference: str | None = None  # key of the group's style reference (AdaIN only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_key(
    inputs: EngineInputs,
    settings: EngineSettings,
    style_reference: StyleReference | None = None,
    models: Models | None = None,
    anchors: tuple[int, ...] = (),
) -> str:
    """The settings key of a clip's translated frames in the run folder: the inputs (other
    control maps or flows give other frames, so a resume after changing the edge model or
    the face-region treatment starts over), the settings, a style reference, a long clip's
    anchors (they follow the face track), and the VAE really loaded when the default one was
    not available."""
    parts = [inputs.inputs_key, settings.result_dict()]
    if len(anchors) > 1:
        parts.append({"anchors": list(anchors)})
    if style_reference is not None:
        parts.append(style_reference.key)
    if models is not None and models.vae_source != settings.vae:
        parts.append({"vae_loaded": models.vae_source})
    return settings_key(*parts)


# -- attention-state checkpoints on disk -----------------------------------------------------
def _state_dir(run: RunFolder, key: str) -> Path:
    return run.root / "state" / f"translate-{key}"


def _state_path(run: RunFolder, key: str, frame: int) -> Path:
    return _state_dir(run, key) / f"chain-{frame:06d}.safetensors"


def save_state(run: RunFolder, key: str, frame: int, states: StateCache) -> int:
    """Persist frame ``frame``'s cached states atomically (and drop older checkpoints);
    returns the file size in bytes."""
    from safetensors.torch import save

    tensors = {
        f"{step}|{layer}": t.detach().contiguous().cpu() for (step, layer), t in states.items()
    }
    data = save(tensors)
    atomic_write_bytes(_state_path(run, key, frame), data)
    for path in _state_dir(run, key).glob("chain-*.safetensors"):
        if path != _state_path(run, key, frame):
            path.unlink(missing_ok=True)
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


def saved_state_frames(run: RunFolder, key: str) -> list[int]:
    """Frames whose states are checkpointed under ``key``."""
    return sorted(int(p.stem.split("-")[1]) for p in _state_dir(run, key).glob("chain-*"))


def _peak_memory_mb(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if sys.platform == "win32":  # no getrusage; psutil is not a dependency
        return float("nan")
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


# -- the loop --------------------------------------------------------------------------------
def clip_plan(inputs: EngineInputs, settings: EngineSettings) -> ClipPlan:
    """The anchors and order of a clip (anchor choice scores frames when the inputs carry
    a face track, as a prepared clip does)."""
    from ..prepare.anchors import scorer

    n = inputs.num_frames
    return plan_clip(n, settings.anchor_index(n), settings.anchor_span, scorer(inputs))


def translate_anchor(
    inputs: EngineInputs,
    models: Models,
    settings: EngineSettings,
    *,
    style_reference: StyleReference | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """The (first) anchor's translated RGB at working size: the same pixels the clip's
    anchor frame gets (for a check before the clip runs, e.g. an identity gate)."""
    anchor = clip_plan(inputs, settings).anchors[0]
    with FrameSampler(models, settings, inputs.frame(anchor).shape[:2]) as sampler:
        style = _style_targets(style_reference, settings, models)
        return sampler.translate_anchor(
            inputs.frame(anchor), inputs.control(anchor), should_stop, style
        ).rgb


def _style_targets(
    style_reference: StyleReference | None, settings: EngineSettings, models: Models
) -> dict | None:
    if style_reference is None or not settings.adain:
        return None
    return style_reference.targets(settings, models.device, models.dtype)


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
    per frame (anchors first, then outward from each) and returns :class:`RunStats`.

    With ``run``, each frame is written to ``frames/anonymized/`` and marked done before
    it is yielded. ``resume=True`` keeps frames already done under the same settings key and
    continues the chains where they stopped. Cancel by closing the generator or through
    ``should_stop`` (checked between denoising steps; raises :class:`Cancelled`).

    ``style_reference`` (a group's first view's, see :mod:`.style`) sets the AdaIN targets
    of the first anchor, hence of the whole clip; it needs ``adain`` on and the same
    schedule. With ``run``, the first anchor's own statistics are saved there as this clip's
    reference.
    """
    clip = _ClipRun(inputs, models, settings, run, style_reference)
    clip.start(resume)
    with FrameSampler(models, settings, clip.hw) as sampler:
        clip.sampler = sampler
        yield from clip.anchors(should_stop)
        for anchor in clip.plan.anchors:
            yield from clip.segment(anchor, should_stop)
    return clip.stats()


class _ClipRun:
    """State of one :func:`translate_clip` call (one concept: a clip's chains)."""

    def __init__(
        self,
        inputs: EngineInputs,
        models: Models,
        settings: EngineSettings,
        run: RunFolder | None,
        style_reference: StyleReference | None,
    ) -> None:
        self.inputs, self.models, self.settings, self.run = inputs, models, settings, run
        self.plan = clip_plan(inputs, settings)
        self.key = run_key(inputs, settings, style_reference, models, self.plan.anchors)
        self.style_reference = style_reference
        self.style = _style_targets(style_reference, settings, models)
        self.hw = inputs.frame(self.plan.anchors[0]).shape[:2]
        self.done: set[int] = set()
        self.finished = self.translated = self.recomputed = self.mismatches = 0
        self.first: AnchorGuide | None = None
        self.sampler: FrameSampler
        self.started = time.perf_counter()

    def start(self, resume: bool) -> None:
        if self.run is None:
            return
        self.run.check_source(self.inputs.content_hash)
        self.run.write_settings(STAGE, self.settings.to_dict())
        if resume:
            self.done = self.run.done_frames(STAGE, self.key)
        else:
            shutil.rmtree(self.run.root / "state", ignore_errors=True)

    # -- anchors ----------------------------------------------------------------------------
    def anchors(self, should_stop) -> ProgressGenerator[None]:
        """Every anchor first: the first with its own (or a group's) style, the others with
        the first's; the first's guide is kept for the whole clip."""
        for anchor in self.plan.anchors:
            if anchor in self.done and anchor != self.plan.anchors[0]:
                yield self._stored(anchor)
                continue
            t0 = time.perf_counter()
            guide = self._translate_anchor(anchor, should_stop)
            if anchor == self.plan.anchors[0] and self.run is not None and guide.stats:
                StyleReference.from_stats(self.settings.steps, guide.stats).save(self.run)
            yield self._finish(anchor, guide.rgb, t0, write=anchor not in self.done)

    def _translate_anchor(self, anchor: int, should_stop) -> AnchorGuide:
        frame, control = self.inputs.frame(anchor), self.inputs.control(anchor)
        self.translated += 1
        if self.first is None:
            self.first = self.sampler.translate_anchor(frame, control, should_stop, self.style)
            return self.first
        return self.sampler.translate_anchor(
            frame, control, should_stop, self.first.stats or None, self.first.states
        )

    # -- one anchor's frames ----------------------------------------------------------------
    def segment(self, anchor: int, should_stop) -> ProgressGenerator[None]:
        """The frames ``anchor`` serves, outward from it; finished ones are read back."""
        chain = self.plan.chain(anchor)
        pending = [i for i in chain if i not in self.done]
        if not pending:
            for i in chain:
                yield self._stored(i)
            return
        guide = self.first if anchor == self.plan.anchors[0] else None
        if guide is None:
            guide = self._translate_anchor(anchor, should_stop)  # its states, again
        previous_rgb = self._rebuild(guide, pending[0], should_stop)
        for i in chain:
            if i in self.done:
                yield self._stored(i)
                previous_rgb = None
                continue
            t0 = time.perf_counter()
            if self.plan.previous(i) == anchor:  # the other side starts at the anchor again
                self.sampler.use_anchor(guide)
                previous_rgb = guide.rgb
            rgb = self._translate(i, guide, previous_rgb, should_stop)
            previous_rgb = rgb
            self._checkpoint(i, anchor)  # before the frame counts as done
            yield self._finish(i, rgb, t0, write=True)

    def _rebuild(self, guide: AnchorGuide, first_pending: int, should_stop) -> np.ndarray:
        """Attention states and output of ``first_pending``'s previous frame: the anchor's,
        or recomputed from the last checkpoint on its chain (done frames, on resume)."""
        self.sampler.use_anchor(guide)
        previous = self.plan.previous(first_pending)
        anchor = self.plan.anchor_of(first_pending)
        if previous == anchor:
            return guide.rgb
        between = self._path(anchor, previous)
        start = 0
        if self.run is not None:
            for k in range(len(between) - 1, -1, -1):
                states = load_state(self.run, self.key, between[k], self.models.device)
                if states is not None:
                    self.sampler.set_previous_state(states)
                    start = k + 1
                    break
        rgb = guide.rgb if start == 0 else self.run.read_frame(STAGE, between[start - 1])
        for i in between[start:]:
            rgb_new = self._translate(i, guide, rgb, should_stop)
            self.recomputed += 1
            if not np.array_equal(rgb_new, self.run.read_frame(STAGE, i)):
                self.mismatches += 1
            rgb = self.run.read_frame(STAGE, i)  # the stored output is what follows
        return rgb

    def _path(self, anchor: int, frame: int) -> list[int]:
        """Frames from next to ``anchor`` out to ``frame`` (inclusive), along the chain."""
        step = 1 if frame > anchor else -1
        return list(range(anchor + step, frame + step, step))

    def _translate(self, i: int, guide: AnchorGuide, previous_rgb, should_stop) -> np.ndarray:
        if previous_rgb is None:
            previous_rgb = self.run.read_frame(STAGE, self.plan.previous(i))
        anchor, previous = self.plan.anchor_of(i), self.plan.previous(i)
        refs = FrameRefs(
            anchor_flow=self.inputs.flow(i, anchor),
            prev_flow=self.inputs.flow(i, previous),
            prev_rgb=previous_rgb,
        )
        self.translated += 1
        frame, control = self.inputs.frame(i), self.inputs.control(i)
        return self.sampler.translate_frame(frame, control, guide, refs, should_stop)

    def _checkpoint(self, i: int, anchor: int) -> None:
        every = self.settings.state_every if self.settings.cross_frame_attention else 0
        if self.run is not None and every and abs(i - anchor) % every == 0:
            save_state(self.run, self.key, i, self.sampler.previous_state())

    # -- bookkeeping ------------------------------------------------------------------------
    def _finish(self, i: int, rgb: np.ndarray, t0: float, *, write: bool) -> Progress:
        if self.run is not None and write:
            self.run.write_frame(STAGE, i, rgb)
            self.run.mark_done(STAGE, i, self.key, {"seconds": time.perf_counter() - t0})
            self.done.add(i)
        self.finished += 1
        n = self.inputs.num_frames
        return Progress("translate", self.finished, n, time.perf_counter() - t0, (i, rgb))

    def _stored(self, i: int) -> Progress:
        t0 = time.perf_counter()
        rgb = self.run.read_frame(STAGE, i)
        self.finished += 1
        n = self.inputs.num_frames
        return Progress("translate", self.finished, n, time.perf_counter() - t0, (i, rgb))

    def stats(self) -> RunStats:
        counters = self.sampler.counters
        total = time.perf_counter() - self.started
        per = max(self.translated, 1)
        return RunStats(
            frames=self.translated,
            unet_evals_per_frame=counters.unet_evals / per,
            controlnet_evals_per_frame=counters.controlnet_evals / per,
            seconds_per_frame=total / per,
            denoiser_seconds_per_frame=counters.denoiser_seconds / per,
            other_seconds_per_frame=(total - counters.denoiser_seconds) / per,
            peak_memory_mb=_peak_memory_mb(self.models.device),
            device=str(self.models.device),
            anchors=list(self.plan.anchors),
            resumed_frames=self.recomputed,
            resume_mismatches=self.mismatches,
            style_reference=self.style_reference.key if self.style is not None else None,
        )
