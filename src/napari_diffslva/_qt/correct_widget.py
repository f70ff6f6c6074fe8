"""2 Correct: fix the face track, paint masks, choose the anchor frame.

Every correction is written to the run folder's ``edits.json`` at once (format and
operations in :mod:`napari_diffslva.prepare.edits`), so it survives closing napari and
every later stage (anonymize, CLI, batch) honours it. What the widget watches:

- the *face boxes* Shapes layer: move, resize, draw or delete a box (napari's own
  select / rectangle tools) and the change is saved for that frame;
- the *face mask* Labels layer: each paint stroke saves the frame's mask as a PNG;
- its buttons (and shortcuts) for a frame or the chosen range of frames.

Shortcuts use Alt+Shift, which napari leaves free in every layer mode.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import napari_layers as nl
from ..prepare import edits as ed
from ._session import layer_by_role, session_for
from ._worker import notify_error

if TYPE_CHECKING:
    import napari

BOXES, MASK, ANCHOR, LANDMARKS = "face boxes", "face mask", "anchor", "landmarks"

# (shortcut, button text, method name, tooltip)
ACTIONS = (
    (
        "Alt-Shift-R",
        "Apply last box change to range",
        "apply_last_change_to_range",
        "move/resize the other boxes of the range the same way as the last edited box",
    ),
    ("Alt-Shift-N", "No face", "mark_no_face", "no face on this frame (or the range)"),
    (
        "Alt-Shift-O",
        "Face occluded",
        "mark_occluded",
        "the face is hidden (e.g. by a hand): no new face is blended over it",
    ),
    ("Alt-Shift-F", "Face OK", "mark_face", "confirm the box of this frame (or the range)"),
    (
        "Alt-Shift-A",
        "Anchor = this frame",
        "set_anchor",
        "the anchor frame every frame takes its look from",
    ),
    (
        "Alt-Shift-M",
        "Save mask of this frame",
        "save_current_mask",
        "keep the painted face mask of this frame",
    ),
    (
        "Alt-Shift-U",
        "Undo edits",
        "undo_edits",
        "remove every correction of this frame (or the range)",
    ),
)


class CorrectWidget(QWidget):
    """Corrections of the prepared clip, saved to the run folder as they are made."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self._syncing = False
        self._bound: dict[str, Any] = {}
        self.last_change: tuple[np.ndarray, np.ndarray] | None = None  # (old box, new box)

        self.frame_info = QLabel("Prepare a clip first (1 Prepare).")
        self.frame_info.setWordWrap(True)
        self.range_start, self.range_stop = QSpinBox(), QSpinBox()
        self.use_range = QCheckBox("buttons act on the range")
        range_row = QHBoxLayout()
        range_row.addWidget(QLabel("Range"))
        range_row.addWidget(self.range_start)
        range_row.addWidget(QLabel("to"))
        range_row.addWidget(self.range_stop)
        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for n, (key, text, method, tip) in enumerate(ACTIONS):
            button = QPushButton(text)
            button.setToolTip(f"{tip} [{key}]")
            button.clicked.connect(getattr(self, method))
            grid.addWidget(button, n // 2, n % 2)
            self.buttons[method] = button
        self.edited_list = QListWidget()
        self.edited_list.setToolTip("frames a person corrected; click to go there")
        self.edited_list.itemClicked.connect(self._go_to_item)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        keys = QLabel(
            "Shortcuts: "
            + ", ".join(f"{k.replace('-', '+')} {t.lower()}" for k, t, _, _ in ACTIONS)
        )
        keys.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.frame_info)
        layout.addLayout(range_row)
        layout.addWidget(self.use_range)
        layout.addLayout(grid)
        layout.addWidget(QLabel("Edited frames"))
        layout.addWidget(self.edited_list)
        layout.addWidget(self.status)
        layout.addWidget(keys)

        for key, _, method, _ in ACTIONS:
            napari_viewer.bind_key(key, self._key_handler(method), overwrite=True)
        napari_viewer.dims.events.current_step.connect(self._update_frame_info)
        self.session.prepared_changed.connect(self._bind)
        if self.session.prepared is not None:
            self._bind(self.session.prepared)

    def _key_handler(self, method: str):
        def handler(viewer: Any) -> None:
            getattr(self, method)()

        return handler

    # -- binding to the prepared clip's layers ----------------------------------------------
    def _bind(self, prepared: Any) -> None:
        n = prepared.info.frames
        for spin in (self.range_start, self.range_stop):
            spin.setRange(0, max(n - 1, 0))
        if self.range_stop.value() == 0:
            self.range_stop.setValue(n - 1)
        boxes, mask = layer_by_role(self.viewer, BOXES), layer_by_role(self.viewer, MASK)
        if boxes is not None and self._bound.get(BOXES) is not boxes:
            boxes.events.data.connect(self._on_boxes_changed)
        if mask is not None and self._bound.get(MASK) is not mask:
            mask.events.paint.connect(self._on_paint)
        self._bound = {BOXES: boxes, MASK: mask}
        self._refresh_lists()

    @property
    def prepared(self) -> Any:
        return self.session.require_prepared()

    def current_frame(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def targets(self) -> list[int]:
        """The frames a button acts on: the current one, or the range when ticked."""
        if self.use_range.isChecked():
            lo, hi = sorted((self.range_start.value(), self.range_stop.value()))
            return list(range(lo, hi + 1))
        return [self.current_frame()]

    # -- edits ---------------------------------------------------------------------------
    def _on_boxes_changed(self, event: Any) -> None:
        from napari.layers.base._base_constants import ActionType

        if self._syncing or event.action not in (
            ActionType.ADDED,
            ActionType.CHANGED,
            ActionType.REMOVED,
        ):
            return
        self._guard(self._boxes_changed)

    def _boxes_changed(self) -> None:
        prepared = self.prepared
        moved, deleted = nl.changed_boxes(self._bound[BOXES].data, prepared.track)
        if not moved and not deleted:
            return
        for t, box in moved.items():
            self.last_change = (prepared.track.boxes[t].copy(), np.asarray(box))
        edits = ed.with_boxes(prepared.run.read_edits(), moved)
        edits = ed.with_status(edits, deleted, "lost")
        self._save(edits, set(moved) | set(deleted))
        self.status.setText(
            f"Saved box edits of frames {_frames_text(sorted(moved))}"
            + (f"; no face on {_frames_text(deleted)}" if deleted else "")
        )

    def apply_last_change_to_range(self) -> None:
        """Move/resize every box of the range as the last edited box was moved/resized."""

        def run() -> None:
            if self.last_change is None:
                self.status.setText("Edit a box first (move or resize it), then apply it.")
                return
            lo, hi = sorted((self.range_start.value(), self.range_stop.value()))
            prepared = self.prepared
            old, new = self.last_change
            boxes = ed.propagate_box(prepared.track.boxes, old, new, range(lo, hi + 1))
            self._save(ed.with_boxes(prepared.run.read_edits(), boxes), set(boxes))
            self.status.setText(f"Applied the box change to frames {lo}-{hi}")

        self._guard(run)

    def mark_no_face(self) -> None:
        self._guard(lambda: self._mark("lost"))

    def mark_occluded(self) -> None:
        self._guard(lambda: self._mark("occluded"))

    def mark_face(self) -> None:
        self._guard(lambda: self._mark("face"))

    def _mark(self, status: str) -> None:
        frames = self.targets()
        if status == "face":
            frames = [t for t in frames if not np.isnan(self.prepared.track.boxes[t]).any()]
            if not frames:
                self.status.setText("No box to confirm here: draw one with the rectangle tool.")
                return
        edits = ed.with_status(self.prepared.run.read_edits(), frames, status)
        self._save(edits, set(frames))
        label = {"lost": "no face", "occluded": "face occluded", "face": "face OK"}[status]
        self.status.setText(f"Marked {label}: frames {_frames_text(frames)}")

    def set_anchor(self) -> None:
        """Make the current frame the anchor (flow to it is recomputed on the next run)."""

        def run() -> None:
            t = self.current_frame()
            edits = ed.with_anchor(self.prepared.run.read_edits(), t)
            self.prepared.run.write_edits(edits)
            self.session.prepared = replace(self.prepared, anchor=t)
            self._refresh_anchor()
            self.session.track_changed.emit(self.session.prepared)
            self.status.setText(f"Anchor frame {t} (its flow is computed on the next run)")

        self._guard(run)

    def save_current_mask(self) -> None:
        self._guard(lambda: self._save_masks([self.current_frame()]))

    def _on_paint(self, event: Any) -> None:
        if not self._syncing:
            self._guard(lambda: self._save_masks([self.current_frame()]))

    def _save_masks(self, frames: list[int]) -> None:
        mask = self._bound.get(MASK)
        if mask is None or mask not in self.viewer.layers:
            self.status.setText("No face mask layer: prepare or open the run folder again.")
            return
        prepared = self.prepared
        for t in frames:
            prepared.run.write_mask(t, np.asarray(mask.data[t]))
        prepared.run.write_edits(ed.with_masks(prepared.run.read_edits(), frames))
        self._refresh_lists()
        self.status.setText(f"Saved the painted mask of frame {_frames_text(frames)}")

    def undo_edits(self) -> None:
        """Remove the corrections of the frame (or range); the detector's result returns."""

        def run() -> None:
            from ..prepare.pipeline import open_prepared

            frames = self.targets()
            prepared = self.prepared
            edits = ed.without_frame_edits(prepared.run.read_edits(), frames)
            prepared.run.remove_masks(frames)
            prepared.run.write_edits(edits)
            fresh = open_prepared(prepared.run.root, prepared.info.path, prepared.settings)
            self.session.prepared = replace(prepared, track=fresh.track, anchor=fresh.anchor)
            self._refresh_layers(frames)
            self.status.setText(f"Removed the corrections of frames {_frames_text(frames)}")

        self._guard(run)

    def _save(self, edits: dict[str, Any], frames: set[int]) -> None:
        """Write ``edits``, apply the corrections of ``frames`` to the track, refresh."""
        from ..prepare.faces import apply_edits
        from ..prepare.pipeline import anchor_of

        prepared = self.prepared
        prepared.run.write_edits(edits)
        track = apply_edits(
            prepared.track, ed.track_edits_of(edits, frames), frames=prepared.reader
        )
        anchor = anchor_of(edits, prepared.settings, track, prepared.info.frames)
        self.session.prepared = replace(prepared, track=track, anchor=anchor)
        self._refresh_layers(sorted(frames))

    def _guard(self, action) -> None:
        """Run an edit; a failure becomes a notification, never a half-updated view."""
        try:
            action()
        except Exception as exc:  # user errors are notified; bugs keep their traceback
            notify_error(exc)

    # -- views ---------------------------------------------------------------------------
    def _refresh_layers(self, frames: list[int]) -> None:
        prepared = self.session.prepared
        self._syncing = True
        try:
            boxes = self._bound.get(BOXES)
            if boxes is not None and boxes in self.viewer.layers:
                data, kwargs, _ = nl.track_to_shapes(prepared.track)
                boxes.selected_data = set()
                boxes.data = []
                if data:
                    boxes.add(data, shape_type="rectangle")
                    boxes.features = kwargs["features"]
                    boxes.edge_color = kwargs["edge_color"]
            landmarks = layer_by_role(self.viewer, LANDMARKS)
            if landmarks is not None:
                data, kwargs, _ = nl.landmarks_to_points(prepared.track)
                landmarks.data = data
                landmarks.features = kwargs["features"]
            mask = self._bound.get(MASK)
            if mask is not None and isinstance(mask.data, np.ndarray):
                for t in frames:
                    mask.data[t] = (prepared.face_mask(t) >= 0.5).astype(mask.data.dtype)
                mask.refresh()
            self._refresh_anchor()
        finally:
            self._syncing = False
        self._refresh_lists()
        self.session.track_changed.emit(prepared)

    def _refresh_anchor(self) -> None:
        from napari.layers import Points

        prepared = self.session.prepared
        layer = layer_by_role(self.viewer, ANCHOR)
        if isinstance(layer, Points):
            edited = ed.anchor_edited(prepared.run.read_edits())
            data, kwargs, _ = nl.anchor_to_points(
                prepared.anchor, prepared.track, (prepared.info.height, prepared.info.width), edited
            )
            layer.data = data
            layer.features = kwargs["features"]
        self._update_frame_info()

    def _refresh_lists(self) -> None:
        prepared = self.session.prepared
        if prepared is None:
            return
        self.edited_list.clear()
        for t, what in ed.describe(prepared.run.read_edits()).items():
            item = QListWidgetItem(f"frame {t}: {', '.join(what)}")
            item.setData(256, t)  # Qt.UserRole
            self.edited_list.addItem(item)
        self._update_frame_info()

    def _go_to_item(self, item: QListWidgetItem) -> None:
        self.viewer.dims.set_current_step(0, int(item.data(256)))

    def _update_frame_info(self, event: Any = None) -> None:
        from ..prepare.faces import STATUS_NAMES

        prepared = self.session.prepared
        if prepared is None:
            return
        t = self.current_frame()
        if not 0 <= t < prepared.info.frames:
            return
        status = STATUS_NAMES[int(prepared.track.status[t])]
        if prepared.track.occluded[t]:
            status = "occluded"
        self.frame_info.setText(
            f"Frame {t} of {prepared.info.frames}: face {status}; anchor frame {prepared.anchor}"
        )


def _frames_text(frames: list[int]) -> str:
    if not frames:
        return "none"
    if len(frames) > 2 and frames == list(range(frames[0], frames[-1] + 1)):
        return f"{frames[0]}-{frames[-1]}"
    return ", ".join(map(str, frames))
