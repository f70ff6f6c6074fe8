"""Manual corrections of a prepared clip: the ``edits.json`` format and its operations.

A person corrects the face track, paints face masks and picks the anchor frame (in
napari's Correct widget, or by writing the file); the corrections live in the run folder
(``RunFolder.read_edits`` / ``write_edits``), so every later stage and every front honours
them and they survive a restart. Format (frame indices are strings, as JSON keys are)::

    {"boxes":  {"12": [x0, y0, x1, y1], ...},        # source pixels, (x, y), edited boxes
     "status": {"13": "lost" | "occluded" | "face"},  # no face / face hidden / confirmed
     "anchor": {"frame": 20, "edited": true},         # the anchor frame a person chose
     "masks":  [12, 13]}                              # frames with a painted mask

:func:`~napari_diffslva.prepare.faces.apply_edits` applies ``boxes`` and ``status`` to a
face track; the prepare stage reads the anchor, the face mask the painted masks. Every
function here is pure: it returns a new dict.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import SettingsError

FRAME_STATUSES = ("lost", "occluded", "face")
Edits = dict[str, Any]


def with_boxes(edits: Edits, boxes: dict[int, Iterable[float]]) -> Edits:
    """Edits plus box corrections ``{t: [x0, y0, x1, y1]}``; a new box clears a no-face mark."""
    out = copy.deepcopy(edits or {})
    out.setdefault("boxes", {})
    for t, box in boxes.items():
        out["boxes"][str(int(t))] = [round(float(v), 2) for v in box]
        if out.get("status", {}).get(str(int(t))) in ("lost", "occluded"):
            del out["status"][str(int(t))]
    return out


def with_status(edits: Edits, frames: Iterable[int], status: str) -> Edits:
    """Edits with ``frames`` marked ``lost`` (no face), ``occluded`` or ``face`` (confirmed)."""
    if status not in FRAME_STATUSES:
        raise SettingsError(f"frame status {status!r}: use one of {', '.join(FRAME_STATUSES)}")
    out = copy.deepcopy(edits or {})
    out.setdefault("status", {})
    for t in frames:
        out["status"][str(int(t))] = status
        if status != "face":
            out.get("boxes", {}).pop(str(int(t)), None)
    return out


def with_anchor(edits: Edits, frame: int) -> Edits:
    out = copy.deepcopy(edits or {})
    out["anchor"] = {"frame": int(frame), "edited": True}
    return out


def with_masks(edits: Edits, frames: Iterable[int]) -> Edits:
    out = copy.deepcopy(edits or {})
    out["masks"] = sorted(set(out.get("masks", [])) | {int(t) for t in frames})
    return out


def without_frame_edits(edits: Edits, frames: Iterable[int]) -> Edits:
    """Edits with every box, status and mask correction of ``frames`` removed."""
    out = copy.deepcopy(edits or {})
    drop = {int(t) for t in frames}
    for key in ("boxes", "status"):
        for t in list(out.get(key, {})):
            if int(t) in drop:
                del out[key][t]
    if "masks" in out:
        out["masks"] = [t for t in out["masks"] if int(t) not in drop]
    return out


def track_edits_of(edits: Edits, frames: Iterable[int]) -> Edits:
    """Only the box and status corrections of ``frames`` (to apply them alone to a track)."""
    keys = {str(int(t)) for t in frames}
    return {
        key: {t: v for t, v in (edits.get(key) or {}).items() if str(t) in keys}
        for key in ("boxes", "status")
    }


def edited_frames(edits: Edits) -> list[int]:
    """Every frame a person corrected (box, status or mask)."""
    frames = {int(t) for key in ("boxes", "status") for t in edits.get(key, {})}
    return sorted(frames | {int(t) for t in edits.get("masks", [])})


def describe(edits: Edits) -> dict[int, list[str]]:
    """What was corrected on each edited frame, in words (``box``, a status, ``mask``)."""
    boxes, status = edits.get("boxes", {}), edits.get("status", {})
    masks = {int(t) for t in edits.get("masks", [])}
    out: dict[int, list[str]] = {}
    for t in edited_frames(edits):
        words = ["box"] if str(t) in boxes else []
        words += [status[str(t)]] if str(t) in status else []
        words += ["mask"] if t in masks else []
        out[t] = words
    return out


def anchor_frame(edits: Edits) -> int | None:
    """The anchor frame a person chose, if any."""
    frame = (edits.get("anchor") or {}).get("frame")
    return None if frame is None else int(frame)


def anchor_edited(edits: Edits) -> bool:
    return bool((edits.get("anchor") or {}).get("edited", False))


def propagate_box(
    boxes: np.ndarray, old_box: Iterable[float], new_box: Iterable[float], frames: Iterable[int]
) -> dict[int, list[float]]:
    """Apply one box correction (``old_box`` -> ``new_box``) to ``frames``.

    The shift of the centre and the change of size are applied to each frame's own box in
    ``boxes`` (T, 4) ``[x0, y0, x1, y1]``, so a box nudged to cover the chin on one frame
    covers it on the others while still following the face. Frames without a box (or a
    correction that drew a new box, ``old_box`` NaN) get ``new_box`` as it is.
    """
    new = np.asarray(new_box, dtype=np.float64)
    old = np.asarray(old_box, dtype=np.float64)
    out: dict[int, list[float]] = {}
    if np.isnan(old).any():
        return {int(t): new.tolist() for t in frames}
    shift = (new[:2] + new[2:]) / 2 - (old[:2] + old[2:]) / 2
    scale = (new[2:] - new[:2]) / np.maximum(old[2:] - old[:2], 1e-6)
    for t in frames:
        box = np.asarray(boxes[t], dtype=np.float64)
        if np.isnan(box).any():
            out[int(t)] = new.tolist()
            continue
        centre = (box[:2] + box[2:]) / 2 + shift
        half = (box[2:] - box[:2]) / 2 * scale
        out[int(t)] = np.concatenate([centre - half, centre + half]).tolist()
    return out
