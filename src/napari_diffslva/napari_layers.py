"""Conversion between the core's data and napari layer data, without Qt or napari.

Every ``*_layer`` function returns a napari *layer data tuple* ``(data, kwargs, type)``
so the widgets add it with ``viewer._add_layer_from_data`` / ``Layer.create`` and the
tests check it without a viewer. Conventions:

- Time is the first axis of every layer; points and vertices are ``(t, y, x)``. The core
  keeps dlib/OpenCV ``(x, y)`` order (boxes ``[x0, y0, x1, y1]``, landmarks ``(68, 2)``).
- Pixel ``(y, x)`` of the source frame has its centre at world ``(y, x)``, so a box
  covering pixel columns ``x0 .. x1-1`` has its rectangle edges at ``x0 - 0.5`` and
  ``x1 - 0.5``. Working-size layers (edges, flow) get the ``scale``/``translate`` that
  lays each working pixel over the source pixels it was resized from.
- Manual corrections go back to the run folder's ``edits.json`` (format and operations:
  :mod:`napari_diffslva.prepare.edits`); the ``edited`` column of the features tables
  says which frames a person changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

LayerDataTuple = tuple[Any, dict[str, Any], str]

# Edge colours of face boxes by track status (RGBA): the eye finds edited and guessed boxes.
STATUS_COLORS = {
    "lost": (0.5, 0.5, 0.5, 1.0),
    "detected": (0.1, 0.9, 0.2, 1.0),
    "interpolated": (1.0, 0.8, 0.0, 1.0),
    "edited": (1.0, 0.2, 0.9, 1.0),
}
# Above this many mask pixels (T x H x W) the mask layer stays a lazy, read-only dask array.
EAGER_MASK_PIXELS = 200_000_000


# -- geometry ------------------------------------------------------------------------------


def work_to_source_transform(geometry) -> dict[str, tuple[float, ...]]:
    """``scale``/``translate`` (t, y, x) placing a working-size layer over the source frame."""
    sy = geometry.source_hw[0] / geometry.work_hw[0]
    sx = geometry.source_hw[1] / geometry.work_hw[1]
    return {"scale": (1.0, sy, sx), "translate": (0.0, (sy - 1) / 2, (sx - 1) / 2)}


def box_to_rectangle(t: int, box: Iterable[float]) -> np.ndarray:
    """(4, 3) rectangle vertices ``(t, y, x)`` for a ``[x0, y0, x1, y1]`` source-pixel box."""
    x0, y0, x1, y1 = (float(v) - 0.5 for v in box)
    return np.array([[t, y0, x0], [t, y0, x1], [t, y1, x1], [t, y1, x0]], dtype=np.float64)


def rectangle_to_box(vertices: np.ndarray) -> tuple[int, list[float]]:
    """``(t, [x0, y0, x1, y1])`` of one Shapes rectangle (its bounding box if rotated)."""
    v = np.asarray(vertices, dtype=np.float64)
    t = int(round(float(v[0, 0])))
    y0, x0 = v[:, 1].min() + 0.5, v[:, 2].min() + 0.5
    y1, x1 = v[:, 1].max() + 0.5, v[:, 2].max() + 0.5
    return t, [float(x0), float(y0), float(x1), float(y1)]


def shapes_to_boxes(data: Iterable[np.ndarray]) -> dict[int, list[float]]:
    """Boxes per frame from Shapes data; with several shapes on a frame the largest wins."""
    boxes: dict[int, list[float]] = {}
    for vertices in data:
        t, box = rectangle_to_box(vertices)
        area = (box[2] - box[0]) * (box[3] - box[1])
        old = boxes.get(t)
        if old is None or area > (old[2] - old[0]) * (old[3] - old[1]):
            boxes[t] = box
    return boxes


# -- face track -> layers ------------------------------------------------------------------


def _status_names(track) -> list[str]:
    from .prepare.faces import STATUS_NAMES

    return [STATUS_NAMES[int(s)] for s in track.status]


def track_to_shapes(track, name: str = "face boxes") -> LayerDataTuple:
    """The face track as Shapes rectangles ``(t, y, x)``, one per frame that has a box.

    Features: ``frame``, ``status`` (detected / interpolated / edited), ``edited``.
    """
    from .prepare.faces import EDITED

    names = _status_names(track)
    frames = [t for t in range(len(track)) if not np.isnan(track.boxes[t]).any()]
    data = [box_to_rectangle(t, track.boxes[t]) for t in frames]
    features = {
        "frame": np.array(frames, dtype=int),
        "status": np.array([names[t] for t in frames], dtype=object),
        "edited": np.array([bool(track.status[t] == EDITED) for t in frames], dtype=bool),
    }
    colors = np.array([STATUS_COLORS[names[t]] for t in frames]).reshape(-1, 4)
    kwargs = {
        "name": name,
        "ndim": 3,
        "shape_type": "rectangle",
        "features": features,
        "edge_color": colors if len(frames) else "magenta",
        "face_color": "transparent",
        "edge_width": 2,
        "metadata": {"diffslva": {"kind": "face_boxes"}},
    }
    return data, kwargs, "shapes"


def landmarks_to_points(track, name: str = "landmarks") -> LayerDataTuple:
    """The 68 landmarks of every frame that has them as Points ``(t, y, x)``."""
    rows, frames = [], []
    for t in range(len(track)):
        lm = track.landmarks[t]
        if np.isnan(lm).any():
            continue
        rows.append(np.column_stack([np.full(len(lm), t, np.float64), lm[:, 1], lm[:, 0]]))
        frames.append(np.full(len(lm), t, int))
    data = np.concatenate(rows) if rows else np.zeros((0, 3))
    kwargs = {
        "name": name,
        "ndim": 3,
        "size": 3,
        "face_color": "cyan",
        "border_width": 0,
        "features": {"frame": np.concatenate(frames) if frames else np.zeros(0, int)},
        "metadata": {"diffslva": {"kind": "landmarks"}},
    }
    return data, kwargs, "points"


def anchor_to_points(
    anchor: int, track, source_hw: tuple[int, int], edited: bool, name: str = "anchor"
) -> LayerDataTuple:
    """The anchor frame as one star ``(t, y, x)`` on the face (frame centre if no face)."""
    box = track.boxes[anchor]
    if np.isnan(box).any():
        y, x = source_hw[0] / 2, source_hw[1] / 2
    else:
        y, x = (box[1] + box[3]) / 2, (box[0] + box[2]) / 2
    kwargs = {
        "name": name,
        "ndim": 3,
        "symbol": "star",
        "size": max(12.0, min(source_hw) / 12),
        "face_color": "yellow",
        "border_color": "black",
        "features": {"frame": np.array([anchor]), "edited": np.array([bool(edited)])},
        "metadata": {"diffslva": {"kind": "anchor"}},
    }
    return np.array([[float(anchor), float(y), float(x)]]), kwargs, "points"


# -- per-frame images ----------------------------------------------------------------------


def _provenance(prepared, what: str) -> dict[str, Any]:
    return {
        "diffslva": {
            "kind": what,
            "content_hash": prepared.info.content_hash,
            "working_hw": list(prepared.geometry.work_hw),
            "prepare": prepared.settings.to_dict(),
        }
    }


def edges_layer(prepared, name: str = "edges") -> LayerDataTuple:
    """Working-size edges (the ControlNet condition), lazy, laid over the source frame;
    its metadata names the edge model that made them ("hed-bsds500", "soft", ...)."""
    data = prepared.edges.as_dask("edges", prepared.geometry.work_hw, np.uint8)
    metadata = _provenance(prepared, "edges")
    metadata["diffslva"]["edge_model"] = prepared.edge_model
    kwargs = {
        "name": name,
        "contrast_limits": (0, 255),
        "colormap": "gray",
        "blending": "additive",
        "metadata": metadata,
        **work_to_source_transform(prepared.geometry),
    }
    return data, kwargs, "image"


def _control_image(prepared, array: str, name: str, colormap: str) -> LayerDataTuple:
    data = prepared.controls.as_dask(array, prepared.geometry.work_hw, np.uint8)
    kwargs = {
        "name": name,
        "contrast_limits": (0, 255),
        "colormap": colormap,
        "blending": "additive",
        "metadata": _provenance(prepared, array),
        **work_to_source_transform(prepared.geometry),
    }
    return data, kwargs, "image"


def face_sketch_layer(prepared, name: str = "face sketch") -> LayerDataTuple:
    """What ControlNet is told about the face: the template face drawn with the signer's
    expression and head pose, over the face region (lazy, laid over the source frame)."""
    return _control_image(prepared, "sketch", name, "cyan")


def control_map_layer(prepared, name: str = "control map") -> LayerDataTuple:
    """The map ControlNet reads: the edges with the face region replaced by the sketch."""
    return _control_image(prepared, "control", name, "gray")


def control_layers(prepared) -> list[LayerDataTuple]:
    """The control map and the face sketch, once every frame's are cached (none with
    ``face_control = "edges"``: the engine then reads the edges layer's maps)."""
    if prepared.controls is None or not prepared.controls.complete:
        return []
    return [control_map_layer(prepared), face_sketch_layer(prepared)]


def new_anchor_face_layer(
    prepared, gate, margin: float = 0.5, name: str = "new anchor face"
) -> LayerDataTuple | None:
    """The identity gate's new anchor face: the new anchor (the seed the clip uses) around
    the signer's face box grown by ``margin`` of its size on each side, laid over that
    place of the anchor frame only; toggle it to compare. None when the gate kept no new
    anchor (off, refused, no face in the original anchor frame)."""
    from .audit.gate import NO_FACE, PASSED
    from .privacy import new_anchor

    box = prepared.track.box(gate.anchor)
    if gate.verdict not in (PASSED, NO_FACE) or box is None:
        return None
    frame = new_anchor(prepared.run, gate.anchor)
    if frame is None:
        return None
    h, w = frame.shape[:2]
    dx, dy = box.width * margin, box.height * margin
    x0, y0 = max(0, int(box.x0 - dx)), max(0, int(box.y0 - dy))
    x1, y1 = min(w, int(np.ceil(box.x1 + dx))), min(h, int(np.ceil(box.y1 + dy)))
    kwargs = {
        "name": name,
        "rgb": True,
        "translate": (float(gate.anchor), float(y0), float(x0)),
        "metadata": {"diffslva": {"kind": "new_anchor_face", "gate": gate.to_dict()}},
    }
    return frame[None, y0:y1, x0:x1], kwargs, "image"


def clip_flow_magnitude(prepared, kind: str = "prev", samples: int = 5) -> float:
    """A clip-wide flow magnitude (pixels) for colour coding: the 99th percentile of a few
    evenly spaced frames, so brightness means the same speed on every frame."""
    frames = np.unique(np.linspace(0, prepared.info.frames - 1, samples).round().astype(int))
    mags = [
        np.hypot(
            *np.moveaxis(prepared.flows.read(int(i))[f"{kind}_flow"].astype(np.float32), -1, 0)
        )
        for i in frames
    ]
    return max(float(np.percentile(np.concatenate([m.ravel() for m in mags]), 99)), 1e-3)


def flow_layer(
    prepared, kind: str = "prev", max_magnitude: float | None = None, name: str | None = None
) -> LayerDataTuple:
    """Flow (``prev``: from the previous frame; ``anchor``: from the anchor) as a lazy
    HSV-coded RGB image: hue = direction, brightness = speed (same scale on every frame)."""
    from .prepare.flow import flow_to_rgb

    if max_magnitude is None:
        max_magnitude = clip_flow_magnitude(prepared, kind)
    h, w = prepared.geometry.work_hw
    flows = prepared.flows.as_dask(f"{kind}_flow", (h, w, 2), np.float16)
    data = flows.map_blocks(
        lambda b: flow_to_rgb(b[0], max_magnitude)[None],
        dtype=np.uint8,
        chunks=((1,) * flows.shape[0], (h,), (w,), (3,)),
    )
    meta = _provenance(prepared, f"{kind}_flow")
    meta["diffslva"]["max_magnitude"] = max_magnitude
    kwargs = {
        "name": name or f"flow ({kind})",
        "rgb": True,
        "contrast_limits": (0, 255),
        "blending": "additive",
        "metadata": meta,
        **work_to_source_transform(prepared.geometry),
    }
    return data, kwargs, "image"


def occlusion_layer(prepared, kind: str = "prev", name: str | None = None) -> LayerDataTuple:
    """Occlusion (1 = the flow cannot be trusted there) as a lazy image, 0..255."""
    data = prepared.flows.as_dask(f"{kind}_occlusion", prepared.geometry.work_hw, np.uint8)
    kwargs = {
        "name": name or f"occlusion ({kind})",
        "contrast_limits": (0, 255),
        "colormap": "red",
        "blending": "additive",
        "opacity": 0.6,
        "metadata": _provenance(prepared, f"{kind}_occlusion"),
        **work_to_source_transform(prepared.geometry),
    }
    return data, kwargs, "image"


def flow_vectors_layer(
    prepared,
    kind: str = "prev",
    step: int = 16,
    frames: Iterable[int] | None = None,
    min_magnitude: float = 0.5,
    name: str | None = None,
) -> LayerDataTuple:
    """Sparse flow arrows ``(N, 2, 3)`` = ``[[t, y, x], [0, dy, dx]]`` in source pixels.

    Reads every requested frame's flow (eager): pass ``frames`` for long clips.
    """
    from .prepare.flow import flow_vectors

    sy, sx = work_to_source_transform(prepared.geometry)["scale"][1:]
    rows = []
    for t in range(prepared.info.frames) if frames is None else frames:
        v = flow_vectors(
            prepared.flows.read(t)[f"{kind}_flow"], step=step, min_magnitude=min_magnitude
        )
        if len(v):
            out = np.zeros((len(v), 2, 3))
            out[:, 0, 0] = t
            out[:, :, 1] = v[:, :, 0] * sy
            out[:, :, 2] = v[:, :, 1] * sx
            out[:, 0, 1] += (sy - 1) / 2
            out[:, 0, 2] += (sx - 1) / 2
            rows.append(out)
    data = np.concatenate(rows) if rows else np.zeros((0, 2, 3))
    kwargs = {
        "name": name or f"flow vectors ({kind})",
        "ndim": 3,
        "edge_color": "white",
        "edge_width": 1,
        "length": 1.0,
        "metadata": _provenance(prepared, "flow_vectors"),
    }
    return data, kwargs, "vectors"


def face_mask_layer(prepared, name: str = "face mask") -> LayerDataTuple:
    """Face masks ``(T, H, W)`` uint8 labels (1 = face) at source size; painted masks win.

    In memory (and paintable) up to :data:`EAGER_MASK_PIXELS` pixels, else a lazy dask array.
    """
    t, h, w = prepared.info.frames, prepared.info.height, prepared.info.width

    def one(i: int) -> np.ndarray:
        return (prepared.face_mask(i) >= 0.5).astype(np.uint8)

    if t * h * w <= EAGER_MASK_PIXELS:
        data: Any = np.stack([one(i) for i in range(t)]) if t else np.zeros((0, h, w), np.uint8)
    else:
        import dask.array as da
        from dask import delayed

        data = da.stack([da.from_delayed(delayed(one)(i), (h, w), np.uint8) for i in range(t)])
    kwargs = {"name": name, "opacity": 0.4, "metadata": _provenance(prepared, "face_mask")}
    return data, kwargs, "labels"


def prepared_layers(
    prepared, *, flow_kind: str = "prev", vectors: bool = False, vector_step: int = 16
) -> list[LayerDataTuple]:
    """Every prepare result that exists on disk, images first so the overlays stay on top."""
    from .prepare.edits import anchor_edited

    layers: list[LayerDataTuple] = []
    if prepared.edges.complete:
        layers.append(edges_layer(prepared))
    layers += control_layers(prepared)
    if prepared.flows.complete:
        layers.append(flow_layer(prepared, flow_kind))
        layers.append(occlusion_layer(prepared, flow_kind))
        if vectors:
            layers.append(flow_vectors_layer(prepared, flow_kind, vector_step))
    layers.append(face_mask_layer(prepared))
    layers.append(landmarks_to_points(prepared.track))
    layers.append(track_to_shapes(prepared.track))
    edited = anchor_edited(prepared.run.read_edits())
    layers.append(
        anchor_to_points(
            prepared.anchor, prepared.track, (prepared.info.height, prepared.info.width), edited
        )
    )
    return layers


# -- box edits made in the Shapes layer ---------------------------------------------------


def changed_boxes(
    data: Iterable[np.ndarray], track, tolerance: float = 0.5
) -> tuple[dict[int, list[float]], list[int]]:
    """Compare Shapes data with the track: ``(boxes that moved or are new, frames whose
    box was deleted)``. Moves smaller than ``tolerance`` pixels are not edits."""
    boxes = shapes_to_boxes(data)
    moved = {}
    for t, box in boxes.items():
        if not 0 <= t < len(track):
            continue
        old = track.boxes[t]
        if np.isnan(old).any() or np.abs(np.asarray(box) - old).max() > tolerance:
            moved[t] = box
    had = {t for t in range(len(track)) if not np.isnan(track.boxes[t]).any()}
    return moved, sorted(had - set(boxes))


# -- finished frames -----------------------------------------------------------------------


def run_frames_layer(
    run_root: str | Path,
    frames: int,
    source_hw: tuple[int, int],
    stage: str = "final",
    name: str = "anonymized",
    timing: dict[str, Any] | None = None,
) -> LayerDataTuple:
    """Finished frames of a run folder as a lazy RGB layer; frames not done yet are black.

    Reads a frame from the run folder when it is displayed, so reopening a long run costs
    nothing until you look at it. ``timing`` (``VideoTiming.to_dict()``) lets napari's
    *Save layer* keep the source's timing, as for layers opened by our reader.
    """
    import dask.array as da
    from dask import delayed

    from .project import RunFolder

    run = RunFolder(run_root)
    h, w = source_hw

    def one(i: int) -> np.ndarray:
        if run.frame_path(stage, i).is_file():
            return run.read_frame(stage, i)
        return np.zeros((h, w, 3), np.uint8)

    data = da.stack([da.from_delayed(delayed(one)(i), (h, w, 3), np.uint8) for i in range(frames)])
    kwargs = {
        "name": name,
        "rgb": True,
        "contrast_limits": (0, 255),
        "metadata": {"diffslva": {"kind": "anonymized", "stage": stage}},
    }
    if timing is not None:
        kwargs["metadata"]["diffslva"]["timing"] = timing
    return data, kwargs, "image"
