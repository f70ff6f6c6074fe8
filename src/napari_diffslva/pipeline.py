"""The whole anonymization of one clip: prepare, translate, restore faces, export.

One function per step over one run folder, so each front end (napari, CLI, batch) runs
the same code and a killed run resumes from the last finished frame:

1. ``prepare``   faces, edges, flow (cached, see :mod:`.prepare.pipeline`)
2. ``translate`` the diffusion engine, frame by frame into ``frames/anonymized``
3. ``face``      the original expressions re-enacted on the new face, at source size,
                 into ``frames/final`` (a copy of step 2 when the face module is off)
4. ``export``    ``frames/final`` to H.264 with the source's exact timing, plus a sidecar
"""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .engine.settings import EngineSettings
from .errors import DiffslvaError, SettingsError
from .options import check, declared, option, unknown_keys
from .prepare.pipeline import Prepared, PrepareSettings, prepare_clip
from .progress import Progress, ProgressGenerator, StopCheck
from .project import RunFolder, settings_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from .audit.gate import GateResult
    from .engine.style import StyleReference
    from .engine.translate import RunStats
    from .privacy import SelfAudit

FACE_MODULES = ("warp", "reenact", "off")
FINAL = "final"
# keys both settings objects have: set once, from the engine side
_SHARED = ("anchor", "short_side", "offline", "device")


@dataclass(frozen=True)
class AnonymizeSettings:
    """All settings of a run, readable from flat keys (the CLI flags, a TOML/JSON file)."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    face_module: str = option(
        "warp",
        "restore the original expressions on the new face (warp: no weights; reenact: TPSMM; off)",
        kind="str",
        stage="face",
        choices=FACE_MODULES,
    )
    face_weights: str | None = option(
        None,
        "TPSMM vox.pth.tar for face_module reenact (null: searched)",
        kind="str",
        stage="face",
        nullable=True,
        path=True,
    )
    gate_tries: int = option(
        3,
        "identity gate: seeds tried on the anchor (seed, seed+1, ...) until its new face "
        "is not the signer, else the run stops; 0: no gate, a recognisable anchor face "
        "goes on into every frame",
        kind="int",
        stage="run",
        low=0,
    )
    self_audit: bool = option(
        True,
        "after the run, count the frames that still look like the signer (the audit's "
        "identity part); off: nothing checks the result and a leak goes unnoticed",
        kind="bool",
        stage="run",
    )
    fail_on_leak: bool = option(
        False,
        "keep a result in which any frame still looks like the signer out of the output "
        "location: it is written into the run folder as LEAKING-IDENTITY-<name> (exit code "
        "3); runs the self-audit even when self_audit is off",
        kind="bool",
        stage="run",
    )

    def __post_init__(self) -> None:
        check(self)
        shared = {k: getattr(self.engine, k) for k in _SHARED}
        object.__setattr__(self, "prepare", replace(self.prepare, **shared))

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> AnonymizeSettings:
        """Split flat keys between engine, prepare and face settings; unknown keys fail."""
        engine_keys = {f.name for f in fields(EngineSettings)}
        prepare_keys = {f.name for f in fields(PrepareSettings)} - set(_SHARED)
        own = {f.name for f, _ in declared(cls)}
        unknown = unknown_keys(flat, SETTINGS_CLASSES)
        if unknown:
            raise SettingsError(
                f"unknown settings: {', '.join(unknown)} "
                "(see docs/settings.md or `napari-diffslva anonymize --help` for the valid names)"
            )
        engine = EngineSettings.from_dict({k: v for k, v in flat.items() if k in engine_keys})
        prepare = PrepareSettings.from_dict({k: v for k, v in flat.items() if k in prepare_keys})
        return cls(engine=engine, prepare=prepare, **{k: v for k, v in flat.items() if k in own})

    def to_flat(self) -> dict[str, Any]:
        flat = {k: v for k, v in asdict(self.prepare).items() if k not in _SHARED}
        flat.update(self.engine.to_dict())
        flat.update({f.name: getattr(self, f.name) for f, _ in declared(type(self))})
        return flat

    @classmethod
    def for_prepared(cls, prepare: PrepareSettings, flat: dict[str, Any]) -> AnonymizeSettings:
        """The settings of a run on a clip prepared with ``prepare``: every prepare setting
        is kept (nothing the user chose there is dropped), ``flat`` adds the engine, face and
        run settings; its ``device`` and ``offline`` win, as for every run."""
        kept = {k: v for k, v in prepare.to_dict().items() if k not in ("device", "offline")}
        return cls.from_flat({**kept, **flat})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> AnonymizeSettings:
        """Settings from a ``.toml`` or ``.json`` file (flat keys), then ``overrides``."""
        p = Path(path)
        try:
            if p.suffix == ".toml":
                flat = tomllib.loads(p.read_text())
            else:
                flat = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{p}: cannot read settings ({exc})") from exc
        flat = flat.get("anonymize", flat)  # a GUI sidecar nests them
        flat.update(overrides)
        return cls.from_flat(flat)


#: Every settings class of a run, engine first (its copies of the shared keys win).
SETTINGS_CLASSES = (EngineSettings, PrepareSettings, AnonymizeSettings)


@dataclass
class AnonymizeResult:
    """What a run produced and what it cost."""

    run_dir: Path
    frames: int
    rate: str
    anchor: int
    output: Path | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    face: dict[str, Any] = field(default_factory=dict)
    gate: GateResult | None = None  # the anchor's identity gate
    audit: SelfAudit | None = None  # the identity audit of the result (None: off)
    held_back: bool = False  # leaking and kept out of the output location (fail_on_leak)

    @property
    def leaking(self) -> bool:
        return self.audit is not None and self.audit.leaking

    def to_dict(self) -> dict[str, Any]:
        d = {
            "frames": self.frames,
            "rate": self.rate,
            "anchor": self.anchor,
            "run_dir": str(self.run_dir),
            "output": str(self.output) if self.output else None,
        }
        d.update({k: v for k, v in self.stats.items() if k != "frames"})
        d["translated_frames"] = self.stats.get("frames", 0)
        d["face_module"] = self.face
        d["identity_gate"] = self.gate.to_dict() if self.gate else None
        d["self_audit"] = self.audit.to_dict() if self.audit else None
        d["held_back"] = self.held_back
        return d


def _at_source_size(
    gen: ProgressGenerator[RunStats], to_source: Callable[[np.ndarray], np.ndarray]
) -> ProgressGenerator[RunStats]:
    """Relay ``gen``'s events with streamed frames scaled back to the source size."""
    try:
        while True:
            event = next(gen)
            if event.payload is not None:
                index, rgb = event.payload
                event = replace(event, payload=(index, to_source(rgb)))
            yield event
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def anonymize_clip(
    video: str | Path,
    run_dir: str | Path,
    settings: AnonymizeSettings | None = None,
    *,
    resume: bool = False,
    style_reference: StyleReference | None = None,
    should_stop: StopCheck | None = None,
) -> ProgressGenerator[AnonymizeResult]:
    """Prepare, translate and restore faces; finished frames land in ``run_dir``.

    ``style_reference``: a group's first view's anchor style (see :mod:`.engine.style`).
    Yields progress; frames of the ``translate`` and ``face`` stages carry
    ``payload=(index, rgb_at_source_size)``. Closing the generator cancels between frames;
    ``should_stop()`` turning true cancels within one denoising step (:class:`Cancelled`).
    Either way the run folder resumes (``resume=True``).
    """
    from .engine.translate import translate_clip
    from .privacy import self_audit

    settings = settings or AnonymizeSettings()
    prepared, models, engine, gate = yield from _gated(
        video, run_dir, settings, style_reference, should_stop
    )
    run = prepared.run
    run.write_settings("anonymize", replace(settings, engine=engine).to_flat())
    gen = translate_clip(
        prepared,
        models,
        engine,
        run,
        resume=resume,
        style_reference=style_reference,
        should_stop=should_stop,
    )
    run_stats = yield from _at_source_size(gen, prepared.geometry.to_source)
    face_report = yield from _final_frames(prepared, engine, settings, resume, style_reference)
    audited = settings.self_audit or settings.fail_on_leak  # no verdict without the audit
    audit = (yield from self_audit(prepared, FINAL)) if audited else None
    if audit is None:
        run.write_privacy("self_audit", {"off": True})
    return AnonymizeResult(
        run_dir=run.root,
        frames=prepared.info.frames,
        rate=f"{prepared.info.rate.numerator}/{prepared.info.rate.denominator}",
        anchor=prepared.anchor,
        stats=run_stats.to_dict(),
        face=face_report,
        gate=gate,
        audit=audit,
    )


def check_anchor(
    video: str | Path,
    run_dir: str | Path,
    settings: AnonymizeSettings | None = None,
    *,
    style_reference: StyleReference | None = None,
    should_stop: StopCheck | None = None,
) -> ProgressGenerator[GateResult]:
    """Prepare (cached) and run the anchor's identity gate alone, so a person sees the
    new anchor face (:func:`~napari_diffslva.privacy.new_anchor`) and the verdict
    before the clip is translated; :func:`anonymize_clip` with the same settings reuses
    the result. Raises :class:`~napari_diffslva.audit.gate.AnchorLeakError` as it does."""
    settings = settings or AnonymizeSettings()
    *_, gate = yield from _gated(video, run_dir, settings, style_reference, should_stop)
    return gate


def _gated(
    video: str | Path,
    run_dir: str | Path,
    settings: AnonymizeSettings,
    style_reference: StyleReference | None,
    should_stop: StopCheck | None,
) -> ProgressGenerator[tuple[Prepared, Any, EngineSettings, GateResult]]:
    """The prepared clip, the models, the engine settings the gate chose, its result."""
    from .engine.models import load_models
    from .privacy import gate_engine

    prepared: Prepared = yield from prepare_clip(video, run_dir, settings.prepare)
    engine = replace(settings.engine, anchor=prepared.anchor)
    models = load_models(engine)
    engine, gate = yield from gate_engine(
        prepared, models, engine, settings.gate_tries, style_reference, should_stop
    )
    return prepared, models, engine, gate


def _final_key(
    prepared: Prepared,
    engine: EngineSettings,
    settings: AnonymizeSettings,
    style_reference: StyleReference | None = None,
) -> str:
    from .engine.translate import STAGE as TRANSLATED

    edits = prepared.run.read_edits()
    parts = [
        prepared.run.manifest(TRANSLATED).get("key"),  # the translated frames it reads
        engine.result_dict(),
        settings.face_module,
        settings.face_weights,
        {k: v for k, v in prepared.settings.to_dict().items() if k not in ("device", "offline")},
        edits,
    ]
    if style_reference is not None:
        parts.append(style_reference.key)
    return settings_key(*parts)


def _final_frames(
    prepared: Prepared,
    engine: EngineSettings,
    settings: AnonymizeSettings,
    resume: bool,
    style_reference: StyleReference | None = None,
) -> ProgressGenerator[dict[str, Any]]:
    """Translated frames at source size, with the face module applied when it is on."""
    from .engine.translate import STAGE as TRANSLATED

    run, n = prepared.run, prepared.info.frames
    key = _final_key(prepared, engine, settings, style_reference)
    done = run.done_frames(FINAL, key) if resume else set()

    def generated(i: int) -> np.ndarray:
        return prepared.geometry.to_source(run.read_frame(TRANSLATED, i))

    if settings.face_module == "off":
        for i in range(n):
            if i not in done:
                start = time.perf_counter()
                frame = generated(i)
                run.write_frame(FINAL, i, frame)
                run.mark_done(FINAL, i, key)
                yield Progress("face", i + 1, n, time.perf_counter() - start, (i, frame))
        return {"backend": "off"}
    from .face.backends import make_backend
    from .face.enhance import enhance_faces

    backend = make_backend(settings.face_module, settings.face_weights)
    gen = enhance_faces(
        (generated, n),
        prepared.track,
        prepared.reader.__getitem__,
        backend=backend,
        source_frame_index=prepared.anchor,
        masks=prepared.blend_mask,
        keep_frames=False,
    )
    try:
        while True:
            event = next(gen)
            index, frame = event.payload
            if index not in done:
                run.write_frame(FINAL, index, frame)
                run.mark_done(FINAL, index, key)
            yield event
    except StopIteration as stop:
        _, report = stop.value
    finally:
        gen.close()
    return report.to_dict()


def export_result(
    run_dir: str | Path,
    output: str | Path,
    *,
    overwrite: bool = False,
    side_by_side: str | Path | None = None,
    sidecar: bool = True,
    source: str | Path | None = None,
) -> ProgressGenerator[Path]:
    """Encode the finished frames of ``run_dir`` with the source's exact timing.

    Writes ``output`` (and, when asked, a side-by-side comparison video with the original
    ``source`` on the left) plus ``output.json``: settings, model ids, tool version, source
    timing — never the source file name. A result to keep out of the output location
    (:func:`held_back_output`) goes into the run folder instead, without a side-by-side
    video; the returned path says where it went.
    """
    from .export import check_output, export_frames
    from .video import VideoTiming

    run = RunFolder(run_dir)
    meta = run.read_run()
    if not meta:
        raise DiffslvaError(f"{run_dir}: not a run folder (no run.json); run anonymize first")
    held = held_back_output(run_dir, output)
    if held is not None:
        output, side_by_side, overwrite = held, None, True
    timing = VideoTiming.from_dict(meta["timing"])
    key = run.manifest(FINAL).get("key")
    done = run.done_frames(FINAL, key) if key else set()
    missing = [i for i in range(timing.frames) if i not in done]
    if missing:
        raise DiffslvaError(
            f"{run_dir}: {len(missing)} of {timing.frames} frames are not finished "
            f"(first missing: {missing[0]}); resume the run before exporting"
        )
    out = check_output(output, overwrite=overwrite, protect=[source] if source else [])
    frames = (run.read_frame(FINAL, i) for i in range(timing.frames))
    yield from export_frames(
        frames, out, timing, overwrite=overwrite, protect=[source] if source else []
    )
    if side_by_side is not None:
        yield from _export_side_by_side(run, meta, timing, side_by_side, source, overwrite)
    if sidecar:
        _write_sidecar(run, meta, out)
    return out


def held_back(run_dir: str | Path) -> bool:
    """Must the result of ``run_dir`` be kept out of the output location? Yes when its
    self-audit found frames that still look like the signer and the run was made with
    ``fail_on_leak``."""
    run = RunFolder(run_dir)
    leaking = run.read_privacy().get("self_audit", {}).get("leaking", False)
    return bool(leaking and run.read_settings("anonymize").get("fail_on_leak", False))


def held_back_output(run_dir: str | Path, output: str | Path) -> Path | None:
    """Where the result of ``run_dir`` is exported instead of ``output`` when it is
    :func:`held_back`: the run folder's ``LEAKING-IDENTITY-<name>``; else None."""
    return RunFolder(run_dir).held_back_export(output) if held_back(run_dir) else None


def _export_side_by_side(
    run: RunFolder,
    meta: dict[str, Any],
    timing: Any,
    path: str | Path,
    source: str | Path | None,
    overwrite: bool,
) -> ProgressGenerator[Path]:
    """The original (left) beside the finished frames, with the same timing."""
    from .export import export_frames
    from .video import VideoReader, probe

    if source is None:
        raise DiffslvaError("a side-by-side video needs the original clip (source=...)")
    info = probe(source)
    if info.content_hash != meta["content_hash"]:
        raise DiffslvaError(f"{source}: not the video this run folder was made from")
    with VideoReader(source, info=info, on_damaged="repeat") as reader:
        pairs = (
            np.concatenate([reader[i], run.read_frame(FINAL, i)], axis=1)
            for i in range(timing.frames)
        )
        return (
            yield from export_frames(pairs, path, timing, overwrite=overwrite, protect=[source])
        )


_SIDECAR_SOURCE_KEYS = (
    "frames",
    "rate",
    "fps",
    "width",
    "height",
    "duration",
    "content_hash",
    "header_frames",
    "header_duration",
    "end_missing",
    "edit_list",
    "damaged_frames",
)


def _write_sidecar(run: RunFolder, meta: dict[str, Any], out: Path) -> None:
    """``OUT.json``: settings, tool version and the source's timing, never its name."""
    from .export import source_record
    from .project import atomic_write_json

    atomic_write_json(
        Path(str(out) + ".json"),
        {
            "tool": "napari-diffslva",
            "version": __version__,
            "anonymize": run.read_settings("anonymize"),
            "source": {k: meta["source"].get(k) for k in _SIDECAR_SOURCE_KEYS},
            **source_record(meta),
            "edge_model": meta.get("edge_model"),
            "privacy": _privacy_record(run),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _privacy_record(run: RunFolder) -> dict[str, Any]:
    """What the run checked: the anchor's identity gate and the self-audit, with the
    control signal's face treatment (for the sidecar)."""
    record = dict(run.read_privacy())
    gate = record.get("gate")
    if gate:
        record["gate"] = {k: v for k, v in gate.items() if k != "key"}
    prepare = run.read_settings("prepare")
    record["face_control"] = prepare.get("face_control")
    record["safe_edges"] = prepare.get("safe_edges")
    return record


def anonymize(
    video: str | Path,
    output: str | Path,
    *,
    run_dir: str | Path | None = None,
    settings: AnonymizeSettings | None = None,
    resume: bool = False,
    overwrite: bool = False,
    side_by_side: str | Path | None = None,
    style_reference: StyleReference | None = None,
    should_stop: StopCheck | None = None,
) -> ProgressGenerator[AnonymizeResult]:
    """:func:`anonymize_clip` then :func:`export_result`: the CLI's and batch's one call."""
    from .export import check_output

    settings = settings or AnonymizeSettings()
    out = check_output(output, overwrite=overwrite, protect=[video])
    run_dir = Path(run_dir) if run_dir else RunFolder.beside(out).root
    result = yield from anonymize_clip(
        video,
        run_dir,
        settings,
        resume=resume,
        style_reference=style_reference,
        should_stop=should_stop,
    )
    result.output = yield from export_result(
        run_dir, out, overwrite=overwrite, side_by_side=side_by_side, source=video
    )
    result.held_back = held_back(run_dir)  # it went into the run folder
    return result
