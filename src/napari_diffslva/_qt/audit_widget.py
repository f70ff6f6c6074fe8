"""4 Audit and review: is the signer still recognisable, and what should a person check?

Runs :func:`napari_diffslva.audit.run.audit_run` (the original vs the run folder's
finished frames) in the background, shows the identity and flagged-frame plots, and
lists the result's flagged frames: a click moves the time slider there. *Side by side* shows only
the original and the anonymized layer in napari's grid, which shares the time slider, so
both always show the same frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..errors import SettingsError
from ._session import ANONYMIZED, ORIGINAL, layer_by_role, session_for
from ._worker import BackgroundJob, PathRow, notify_error, stack_layout

if TYPE_CHECKING:
    import napari

_PLOT_WIDTH = 360


class AuditWidget(QWidget):
    """Audit in the background; plots, flagged frames and a side-by-side review."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.job: BackgroundJob | None = None
        self.result: Any = None
        self._hidden: list[Any] = []

        self.stride = QSpinBox()
        self.stride.setRange(1, 1000)
        self.stride.setToolTip("audit every n-th frame (1: all)")
        self.max_frames = QSpinBox()
        self.max_frames.setRange(0, 100000)
        self.max_frames.setSpecialValueText("all")
        self.report_dir = PathRow(
            "folder", "report folder (optional: audit.json, plots, report.html)"
        )
        self.run_button = QPushButton("Run audit")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.side_by_side = QCheckBox("side by side (original | anonymized, linked time)")
        self.summary = QLabel("Anonymize the clip first (3 Anonymize).")
        self.summary.setWordWrap(True)
        self.identity_plot, self.flags_plot = QLabel(), QLabel()
        for plot in (self.identity_plot, self.flags_plot):
            plot.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.flag_list = QListWidget()
        self.flag_list.setToolTip("click a frame to go there")
        self.flag_list.itemClicked.connect(self._go_to_item)

        form = QFormLayout()
        form.addRow("Every n-th frame", self.stride)
        form.addRow("At most", self.max_frames)
        form.addRow("Report", self.report_dir)
        stack_layout(
            self,
            form,
            [self.run_button, self.cancel_button],
            [
                self.side_by_side,
                self.summary,
                self.identity_plot,
                self.flags_plot,
                QLabel("Flagged frames"),
                self.flag_list,
            ],
            stretch=False,
        )
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.side_by_side.toggled.connect(self.show_side_by_side)

    def run(self) -> BackgroundJob | None:
        from ..audit.run import audit_run

        if self.job is not None and self.job.running:
            return self.job
        try:
            prepared = self.session.require_prepared()
        except Exception as exc:  # nothing to audit yet
            notify_error(exc)
            self.summary.setText(str(exc))
            return None
        max_frames = self.max_frames.value() or None
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        stride = self.stride.value()
        self.job = BackgroundJob(
            lambda _stop: audit_run(prepared, stride=stride, max_frames=max_frames),
            description="Auditing",
            on_done=self._on_done,
            on_finished=self._idle,
            status=self.summary,
        )
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _idle(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_done(self, result: Any) -> None:
        from ..audit.report import plot_flags, plot_identity, write_report

        self.result = result
        for label, png in (
            (self.identity_plot, plot_identity(result)),
            (self.flags_plot, plot_flags(result)),
        ):
            pixmap = QPixmap()
            pixmap.loadFromData(png, "PNG")
            label.setPixmap(
                pixmap.scaledToWidth(_PLOT_WIDTH, Qt.TransformationMode.SmoothTransformation)
            )
        self.flag_list.clear()
        flags = result.flagged_frames()
        for t, why in flags:
            item = QListWidgetItem(f"frame {t}: {why}")
            item.setData(Qt.ItemDataRole.UserRole, t)
            self.flag_list.addItem(item)
        idn = result.identity.summary()
        text = [
            f"Audited {len(result.frame_indices)} of {result.frames} frames; {len(flags)} flags."
        ]
        for key, value in idn.items():
            if isinstance(value, float):
                text.append(f"{key.replace('_', ' ')}: {value:.3f}")
        folder = self.report_dir.path()
        if folder is not None:
            written = write_report(result, folder)
            text.append(f"Report written to {Path(folder)} ({len(written)} files).")
        self.summary.setText("\n".join(text))

    def _go_to_item(self, item: QListWidgetItem) -> None:
        self.go_to(int(item.data(Qt.ItemDataRole.UserRole)))

    def go_to(self, frame: int) -> None:
        self.viewer.dims.set_current_step(0, frame)

    def show_side_by_side(self, on: bool) -> None:
        """Only original and anonymized, one grid cell each; the time slider is shared."""
        if on:
            keep = [layer_by_role(self.viewer, ORIGINAL), layer_by_role(self.viewer, ANONYMIZED)]
            if any(layer is None for layer in keep):
                notify_error(
                    SettingsError(
                        "side by side needs the original and the "
                        "anonymized layer: anonymize the clip first"
                    )
                )
                self.side_by_side.setChecked(False)
                return
            self._hidden = [
                layer for layer in self.viewer.layers if layer.visible and layer not in keep
            ]
            for layer in self._hidden:
                layer.visible = False
            for layer in keep:
                layer.visible = True
            self.viewer.grid.enabled = True
        else:
            self.viewer.grid.enabled = False
            for layer in self._hidden:
                if layer in self.viewer.layers:
                    layer.visible = True
            self._hidden = []
