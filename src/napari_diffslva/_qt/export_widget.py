"""5 Export: the anonymized clip for SignStream / ELAN, frame for frame like the original.

Writes the run folder's finished frames as .mp4 or .mov at the source's size, frame
count, rate and duration (every frame keeps its timestamp), a JSON sidecar (settings,
model ids, tool version; never the source's file name) and, when asked, a side-by-side
comparison video. There is no default output name: a name derived from the source could
identify the signer, so the user chooses it. A result the run's self-audit found leaking,
made with ``fail_on_leak``, is held back: it goes into the run folder as
``LEAKING-IDENTITY-<name>`` (see :func:`napari_diffslva.pipeline.export_result`), and the
status line says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from ..errors import SettingsError
from ._session import session_for
from ._worker import BackgroundJob, PathRow, notify_error, stack_layout

if TYPE_CHECKING:
    import napari

_FILTER = "Video (*.mp4 *.mov)"


class ExportWidget(QWidget):
    """Choose the output name(s) and export in the background."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.job: BackgroundJob | None = None
        self.exported: Path | None = None
        self._requested: Path | None = None  # the output asked for

        self.output = PathRow("save", "output file (.mp4 or .mov)", _FILTER)
        self.sidecar = QCheckBox("JSON sidecar (settings, models, tool version)")
        self.sidecar.setChecked(True)
        self.with_side_by_side = QCheckBox("also a side-by-side comparison video")
        self.side_by_side = PathRow("save", "comparison file (.mp4 or .mov)", _FILTER)
        self.side_by_side.setEnabled(False)
        self.with_side_by_side.toggled.connect(self.side_by_side.setEnabled)
        self.overwrite = QCheckBox("replace existing files")
        self.export_button = QPushButton("Export")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = QLabel("Anonymize the clip first (3 Anonymize).")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Output", self.output)
        form.addRow("", self.sidecar)
        form.addRow("", self.with_side_by_side)
        form.addRow("Comparison", self.side_by_side)
        form.addRow("", self.overwrite)
        stack_layout(self, form, [self.export_button, self.cancel_button], [self.status])
        self.export_button.clicked.connect(self.export)
        self.cancel_button.clicked.connect(self.cancel)
        self.session.frames_changed.connect(
            lambda: self.status.setText("Frames ready: choose an output file and export.")
        )

    def export(self) -> BackgroundJob | None:
        from ..pipeline import export_result

        if self.job is not None and self.job.running:
            return self.job
        try:
            run_dir, video = self.session.run_dir, self.session.video
            if run_dir is None:
                raise SettingsError("no run folder: prepare and anonymize a clip first")
            output = self.output.path()
            if output is None:
                raise SettingsError("choose the output file name (.mp4 or .mov)")
            side = self.side_by_side.path() if self.with_side_by_side.isChecked() else None
            if self.with_side_by_side.isChecked() and side is None:
                raise SettingsError("choose the comparison file name, or untick it")
        except Exception as exc:  # missing choices become notifications
            notify_error(exc)
            self.status.setText(str(exc))
            return None
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._requested = output
        self.job = BackgroundJob(
            lambda _stop: export_result(
                run_dir,
                output,
                overwrite=self.overwrite.isChecked(),
                side_by_side=side,
                sidecar=self.sidecar.isChecked(),
                source=video,
            ),
            description="Exporting",
            on_done=self._on_done,
            on_finished=self._idle,
            status=self.status,
        )
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _idle(self) -> None:
        self.export_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_done(self, output: Any) -> None:
        from ..pipeline import held_back
        from ..project import RunFolder
        from ..video import probe

        self.exported = Path(output)
        info = probe(output)
        text = (
            f"Wrote {self.exported.name}: {info.frames} frames, {info.width}x{info.height}, "
            f"{info.rate.numerator}/{info.rate.denominator} fps, {info.duration:.3f} s."
        )
        run_dir = self.session.run_dir
        audit = RunFolder(run_dir).read_privacy().get("self_audit", {})
        if held_back(run_dir):  # export_result wrote it into the run folder
            text = (
                f"Held back: some frames still look like the signer and the run was made "
                f"with fail_on_leak, so nothing was written to {self._requested.name}; the "
                f"result is in the run folder as {self.exported}. {audit.get('message', '')}"
            )
        elif audit.get("leaking"):
            text += f" Warning: {audit.get('message', '')}"
        self.status.setText(text)
