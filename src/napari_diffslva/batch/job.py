"""One clip of a batch, on a dask worker: anonymize it and return its ``batch.json`` record.

The unit of work is :func:`napari_diffslva.pipeline.anonymize` on one clip, with its own run
folder, so everything a single run guarantees carries over: a task that dies is retried and
*resumes* from the frames its run folder already holds. A view of a group takes its group's
first view's anchor frame index and its anchor style (the AdaIN statistics of its generated
anchor, see :mod:`..engine.style`).

Privacy per clip: the record holds the anchor's identity gate and the self-audit. A result
the self-audit found leaking under ``fail_on_leak`` is ``leaking``: kept out of the output
folder (written into its run folder, an earlier result at its output path removed). A
gate refusal is a ``failed`` clip with its one-line message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit.gate import AnchorLeakError
from ..errors import Cancelled, DiffslvaError
from ..progress import StageSeconds, StopCheck
from .manifest import iso_time

if TYPE_CHECKING:
    from .plan import ClipJob


def one_line(exc: BaseException, job: ClipJob) -> str:
    """An error as one line, without the source's name when the batch hides it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if job.hide_source:
        text = text.replace(job.source, job.name).replace(Path(job.source).name, job.name)
    return text


def base_record(job: ClipJob, **fields: Any) -> dict[str, Any]:
    """The fields every record of ``job`` has (a failed one until told otherwise)."""
    record: dict[str, Any] = {
        "status": "failed",
        "output": None,
        "error": None,
        "key": job.key,
        "group": job.group,
        **fields,
    }
    if not job.hide_source:
        record["input"] = job.source
    return record


def anonymize_job(
    job: ClipJob, reference: dict[str, Any] | None = None, stop_event: str | None = None
) -> dict[str, Any]:
    """Anonymize one clip (on a dask worker) and return its batch.json record.

    Always resumes: a retried task, or a rerun, continues from the frames in the clip's run
    folder. ``reference`` is the record of the group's first view; its anchor index and
    its style reference (``style_reference.json`` in its run folder) are used here.
    ``stop_event`` names a dask ``Event``: once it is set the clip stops within one
    denoising step and its record says ``cancelled``. Expected errors
    (:class:`DiffslvaError`: a corrupt clip, a bad setting) give a ``failed`` record;
    anything else propagates so dask retries the task.
    """
    started = time.time()
    record = base_record(job, worker=_worker_name())
    stages = StageSeconds()
    try:
        _run(job, reference, record, stages, _stop_check(stop_event))
    except Cancelled:
        record.update(status="cancelled", note="stopped on request; rerun the batch to resume")
    except AnchorLeakError as exc:  # every seed tried gave the signer back
        record.update(error=one_line(exc, job), identity_gate=exc.result.to_dict())
    except DiffslvaError as exc:
        record["error"] = one_line(exc, job)
    record.update(
        seconds=round(time.time() - started, 3),
        stages={k: round(v, 3) for k, v in stages.items()},
        started=iso_time(started),
        finished=iso_time(time.time()),
    )
    return record


def _run(
    job: ClipJob,
    reference: dict[str, Any] | None,
    record: dict[str, Any],
    on_progress: StageSeconds,
    should_stop: StopCheck | None,
) -> None:
    """The anonymization itself; fills ``record`` as it learns things."""
    from ..engine.translate import STAGE as TRANSLATED
    from ..export import source_record
    from ..pipeline import AnonymizeSettings, anonymize
    from ..progress import run_to_end
    from ..project import RunFolder

    flat = dict(job.settings)
    style = _follow(job, reference, flat, record)
    settings = AnonymizeSettings.from_flat(flat)
    record["resumed_frames"] = len(RunFolder(job.run_dir).manifest(TRANSLATED)["done"])
    Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    result = run_to_end(
        anonymize(
            job.source,
            job.output,
            run_dir=job.run_dir,
            settings=settings,
            resume=True,
            overwrite=True,
            style_reference=style,
            should_stop=should_stop,
        ),
        on_progress,
        should_stop,
    )
    record.update(frames=result.frames, anchor=result.anchor, **_privacy(result))
    if result.held_back:
        _remove_earlier_export(job)
        record.update(status="leaking", held_back=str(result.output))
    else:
        record.update(status="done", output=job.output)
    source = source_record(RunFolder(job.run_dir).read_run())
    if source["deviations"]:  # a lost end, damaged frames: written down per clip
        record["source_deviations"] = source["deviations"]
    if job.audit:
        record["audit"] = _audit_summary(job, result.output)


def _privacy(result) -> dict[str, Any]:
    """What the run checked: the identity gate and the self-audit's counts."""
    fields: dict[str, Any] = {}
    if result.gate is not None:
        fields["identity_gate"] = result.gate.to_dict()
    if result.audit is not None:
        identity = result.audit.identity
        fields["self_audit"] = {
            "leaking": result.audit.leaking,
            "leak_frames": len(identity.leak_frames),
            "face_frames": len(identity.original_face_frames),
            "no_face_frames": len(identity.no_face_frames),
        }
    return fields


def _remove_earlier_export(job: ClipJob) -> None:
    """A held-back clip leaves nothing at its output path: an earlier run's result there
    (other settings, not checked by this run) goes, with its sidecar."""
    for path in (Path(job.output), Path(job.output + ".json")):
        path.unlink(missing_ok=True)


def _follow(job: ClipJob, reference: dict[str, Any] | None, flat: dict[str, Any], record):
    """Take the group's first view's anchor (into ``flat``) and return its style reference."""
    from ..engine.style import StyleReference
    from ..project import RunFolder
    from ..video import probe

    if reference is None or reference.get("anchor") is None:
        if job.follows is not None:
            record["note"] = f"anchor not shared: the group's first view {job.follows} failed"
        return None
    frames = probe(job.source).frames
    flat["anchor"] = min(int(reference["anchor"]), frames - 1)
    record["anchor_from"] = job.follows
    style = StyleReference.load(RunFolder(job.follows_run_dir))
    if style is not None:
        record["style_reference"] = style.key
    return style


def _audit_summary(job: ClipJob, output: Path) -> dict[str, Any]:
    """The audit's headline numbers (identity, expression, hands, temporal) of ``output``."""
    from ..audit.run import audit_videos
    from ..progress import run_to_end

    try:
        data = run_to_end(audit_videos(job.source, output)).to_json()
    except DiffslvaError as exc:
        return {"error": one_line(exc, job)}
    identity = data["identity"]
    return {
        "identity": {
            **identity["summary"],
            "leak_frames": len(identity["leak_frames"]),
            "no_face_frames": len(identity["no_face_frames"]),
        },
        "expression": data["expression"]["summary"],
        "hands": data["hands"]["summary"],
        "temporal": {k: v for k, v in data["temporal"].items() if not isinstance(v, list)},
        "notes": data["notes"],
    }


def _stop_check(name: str | None) -> StopCheck | None:
    """``is_set`` of the dask event ``name`` (asked between denoising steps)."""
    if name is None:
        return None
    from distributed import Event

    return Event(name).is_set


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None
