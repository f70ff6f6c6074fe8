"""A run's own privacy checks: the anchor's identity gate before the clip is translated,
and the identity audit of the finished frames after it.

Both use the audit's identity model (dlib's face embeddings, same person below 0.6), are
recorded in the run folder (``privacy.json``, no file names) and come back as small result
objects (:class:`~napari_diffslva.audit.gate.GateResult`, :class:`SelfAudit`) that every
front shows: the CLI prints them, the GUI and the batch runner can show them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .audit.gate import LEAK, OFF, AnchorLeakError, GateResult, anchor_gate
from .audit.gate import STAGE as GATE_STAGE
from .progress import Progress, ProgressGenerator
from .project import settings_key

NEW_ANCHOR = "gate"  # frames/gate/: the new anchor the gate passed
SELF_AUDIT_OFF = "self-audit off: nothing checked whether the result still shows the signer"

if TYPE_CHECKING:
    from .audit.result import IdentityResult
    from .engine.models import Models
    from .engine.settings import EngineSettings
    from .engine.style import StyleReference
    from .prepare.pipeline import Prepared
    from .project import RunFolder


def _gate_key(prepared: Prepared, engine: EngineSettings, tries: int, style) -> str:
    control = (prepared.controls or prepared.edges).folder.name  # the control maps' key
    style_key = style.key if style is not None else None
    return settings_key(prepared.content_hash, control, engine.result_dict(), tries, style_key)


def _advice(engine: EngineSettings, tries: int) -> str:
    return (
        "describe a clearly different person in the prompt (--prompt), or raise the "
        f"strength (--strength, now {engine.strength:g}) so less of the original frame is "
        f"kept; gate_tries (--gate-tries, now {tries}) is how many seeds are tried"
    )


def gate_engine(
    prepared: Prepared,
    models: Models,
    engine: EngineSettings,
    tries: int,
    style_reference: StyleReference | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ProgressGenerator[tuple[EngineSettings, GateResult]]:
    """The engine settings the clip is translated with (the first seed, from
    ``engine.seed`` on, whose anchor face is not the signer) and the gate's result.

    ``tries=0`` turns the gate off; ``should_stop`` cancels within a denoising step. A
    result for the same clip, control maps and settings is reused from the run folder,
    so a resumed run does not translate the anchor again. The new anchor of the seed the
    clip uses is kept in the run folder (:func:`new_anchor`). The result is also
    yielded, as the payload of a last ``identity gate`` event, so a front can show it
    before the clip is translated. Raises
    :class:`~napari_diffslva.audit.gate.AnchorLeakError` when every try leaks.
    """
    result = yield from _gate(prepared, models, engine, tries, style_reference, should_stop)
    yield Progress(GATE_STAGE, 1, 1, 0.0, result)
    return replace(engine, seed=result.seed), result


def new_anchor(run: RunFolder, anchor: int) -> np.ndarray | None:
    """The new anchor frame (source size) the gate passed for the clip, or None."""
    if not run.frame_path(NEW_ANCHOR, anchor).is_file():
        return None
    return run.read_frame(NEW_ANCHOR, anchor)


def recorded_checks(run: RunFolder) -> tuple[GateResult | None, list[str]]:
    """The privacy checks of the last run in ``run`` as it recorded them (the gate, and one
    line per check), so a front that reopens the folder can show them again."""
    record = run.read_privacy()
    gate = GateResult.from_dict(record["gate"]) if "gate" in record else None
    lines = [gate.message()] if gate is not None else []
    audit = record.get("self_audit")
    if audit is not None:
        lines.append(SELF_AUDIT_OFF if audit.get("off") else audit["message"])
    return gate, lines


def _gate(
    prepared: Prepared,
    models: Models,
    engine: EngineSettings,
    tries: int,
    style_reference: StyleReference | None,
    should_stop: Callable[[], bool] | None,
) -> ProgressGenerator[GateResult]:
    anchor = prepared.anchor
    if tries == 0:
        result = GateResult(OFF, engine.seed, anchor)
        prepared.run.write_privacy("gate", result.to_dict())
        return result
    run, key = prepared.run, _gate_key(prepared, engine, tries, style_reference)
    cached = run.read_privacy().get("gate", {})
    if cached.get("key") == key and cached.get("verdict") != LEAK:
        return GateResult.from_dict(cached)
    from .engine import translate as engine_translate
    from .prepare.faces import face_landmarks

    original = prepared.reader[anchor]
    box = prepared.track.box(anchor)
    landmarks = face_landmarks(original, box) if box is not None else None
    latest: dict[int, np.ndarray] = {}  # the last try's new anchor, by seed

    def translate(seed: int) -> np.ndarray:
        rgb = engine_translate.translate_anchor(
            prepared,
            models,
            replace(engine, seed=seed),
            style_reference=style_reference,
            should_stop=should_stop,
        )
        latest.clear()
        latest[seed] = prepared.geometry.to_source(rgb)
        return latest[seed]

    seeds = [engine.seed + k for k in range(tries)]
    try:
        result = yield from anchor_gate(
            original, box, landmarks, translate, seeds, anchor=anchor, advice=_advice(engine, tries)
        )
    except AnchorLeakError as exc:
        run.write_privacy("gate", {**exc.result.to_dict(), "key": key})
        raise
    if result.seed in latest:
        run.write_frame(NEW_ANCHOR, anchor, latest[result.seed])
    run.write_privacy("gate", {**result.to_dict(), "key": key})
    return result


@dataclass
class SelfAudit:
    """The identity audit of a run's own result: does any frame still show the signer?"""

    identity: IdentityResult
    notes: list[str]

    @property
    def leaking(self) -> bool:
        return bool(self.identity.leak_frames)

    def message(self) -> str:
        idn = self.identity
        if not idn.measured:
            return "self-audit: no face of the signer was found in the original, nothing to check"
        leaks, faces = idn.leak_frames, len(idn.original_face_frames)
        text = (
            f"self-audit: {len(leaks)} of {faces} frames with the signer's face still look like "
            f"the signer (dlib distance below {idn.threshold:g})"
        )
        if leaks:
            text += f": frames {', '.join(map(str, leaks[:20]))}{' ...' if len(leaks) > 20 else ''}"
        if idn.no_face_frames:
            text += f"; no face found in {len(idn.no_face_frames)} of them"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaking": self.leaking,
            "leak_frames": [int(t) for t in self.identity.leak_frames],
            "no_face_frames": [int(t) for t in self.identity.no_face_frames],
            "summary": self.identity.summary(),
            "message": self.message(),
            "notes": list(self.notes),
        }


def self_audit(prepared: Prepared, stage: str) -> ProgressGenerator[SelfAudit]:
    """Audit the identity of the run's finished frames of ``stage`` against the original,
    on every frame where the original's face is tracked; recorded in the run folder."""
    from .audit.run import audit_identity

    finished = prepared.run.frame_sequence(stage, prepared.info.frames)
    identity, notes = yield from audit_identity(prepared.reader, finished, prepared.track)
    audit = SelfAudit(identity, notes)
    prepared.run.write_privacy("self_audit", audit.to_dict())
    return audit
