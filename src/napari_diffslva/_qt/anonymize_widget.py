"""3 Anonymize: the diffusion run in the background, frames appearing as they finish.

Runs :func:`napari_diffslva.pipeline.anonymize_clip` on the prepared clip of
1 Prepare (same prepare settings, so nothing is recomputed except what the edits
changed). Finished frames are written to the run folder one by one, so a cancelled or
crashed run continues with *Resume*; *Run* starts over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ._session import ANONYMIZED, layer_by_role, put_layer, session_for
from ._worker import BackgroundJob, notify_error, stack_layout

if TYPE_CHECKING:
    import napari

# The prompts of the DiffSLVA paper's examples (its README), the default first.
PROMPT_PRESETS = (
    "a woman in CG style, brown hair, is making gestures, best quality",
    "a beautiful woman in CG style, brown hair, is making gestures",
    "a handsome man in CG style, blonde hair, is making gestures",
    "a superman in blue uniform is making gestures",
    "a Chinese man in Chinese ink wash painting is making gestures",
)
# Above this many bytes the live layer is not kept in memory: frames are read from disk.
LIVE_LAYER_BYTES = 1 << 30


def available_devices() -> list[str]:
    """ "auto" plus the devices torch can use here."""
    devices = ["auto"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append("mps")
    except ImportError:
        pass
    return devices + ["cpu"]


def _spin(lo: float, hi: float, value: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class AnonymizeWidget(QWidget):
    """Settings of the diffusion run, Run / Resume / Cancel, and the live result layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from ..engine.settings import (
            DEFAULT_CONTROLNET,
            DEFAULT_MODEL,
            DEFAULT_NEGATIVE_PROMPT,
            EngineSettings,
        )

        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.job: BackgroundJob | None = None
        self.frames_done: list[int] = []
        self._buffer: np.ndarray | None = None
        defaults = EngineSettings()

        self.prompt = QComboBox()
        self.prompt.setEditable(True)
        self.prompt.addItems(PROMPT_PRESETS)
        self.prompt.setToolTip("who the signer becomes; pick an example or type your own")
        # sized by a few words, not by the longest preset: the dock leaves room for the video
        self.prompt.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.prompt.setMinimumContentsLength(16)
        self.negative_prompt = QLineEdit(DEFAULT_NEGATIVE_PROMPT)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(defaults.seed)
        self.strength = _spin(0.05, 1.0, defaults.strength, 0.05)
        self.strength.setToolTip(
            "share of the diffusion schedule that is redone (higher: further from the original)"
        )
        self.steps = QSpinBox()
        self.steps.setRange(1, 200)
        self.steps.setValue(defaults.steps)
        self.guidance = _spin(0.0, 30.0, defaults.guidance, 0.5, 1)
        self.control_scale = _spin(0.0, 2.0, defaults.control_scale, 0.1)
        self.face_module = QComboBox()
        self.face_module.addItems(["warp", "reenact", "off"])
        self.face_module.setToolTip("how the signer's facial expressions are carried over")
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.model = QLineEdit(DEFAULT_MODEL)
        self.model.setToolTip("Stable Diffusion 1.5: a hub id or a local folder")
        self.controlnet = QLineEdit(DEFAULT_CONTROLNET)
        self.controlnet.setToolTip("ControlNet HED: a hub id or a local folder")
        self.offline = QCheckBox("offline (use only models already on this computer)")
        self.offline.setChecked(defaults.offline)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("anonymize every frame anew")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("keep frames already finished with these settings")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = QLabel("Prepare a clip first (1 Prepare).")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative prompt", self.negative_prompt)
        form.addRow("Seed", self.seed)
        form.addRow("Strength", self.strength)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Control scale", self.control_scale)
        form.addRow("Face module", self.face_module)
        form.addRow("Device", self.device)
        form.addRow("Model", self.model)
        form.addRow("ControlNet", self.controlnet)
        form.addRow("", self.offline)
        stack_layout(
            self, form, [self.run_button, self.resume_button, self.cancel_button], [self.status]
        )

        self.run_button.clicked.connect(lambda: self.run(resume=False))
        self.resume_button.clicked.connect(lambda: self.run(resume=True))
        self.cancel_button.clicked.connect(self.cancel)
        self.session.prepared_changed.connect(self._on_prepared)
        if self.session.prepared is not None:
            self._on_prepared(self.session.prepared)

    def _on_prepared(self, prepared: Any) -> None:
        self.status.setText(
            f"Ready: {prepared.info.frames} frames, anchor frame {prepared.anchor}."
        )

    def settings(self) -> Any:
        """:class:`AnonymizeSettings` from the form and the prepare settings in use."""
        from ..pipeline import AnonymizeSettings

        prepared = self.session.require_prepared()
        p = prepared.settings
        flat = {
            "prompt": self.prompt.currentText().strip(),
            "negative_prompt": self.negative_prompt.text(),
            "seed": self.seed.value(),
            "strength": round(self.strength.value(), 4),
            "steps": self.steps.value(),
            "guidance": round(self.guidance.value(), 4),
            "control_scale": round(self.control_scale.value(), 4),
            "face_module": self.face_module.currentText(),
            "device": self.device.currentText(),
            "model": self.model.text().strip(),
            "controlnet": self.controlnet.text().strip(),
            "offline": self.offline.isChecked(),
            "short_side": p.short_side,
            "edges": p.edges,
            "safe_edges": p.safe_edges,
            "hed_weights": p.hed_weights,
            "flow": p.flow,
            "face_upsample": p.face_upsample,
            "max_gap": p.max_gap,
        }
        return AnonymizeSettings.from_flat(flat)

    def run(self, resume: bool = False) -> BackgroundJob | None:
        """Start (or resume) the run in the background."""
        from ..pipeline import anonymize_clip

        if self.job is not None and self.job.running:
            return self.job
        try:
            settings = self.settings()
            video, run_dir = self.session.video, self.session.run_dir
            prepared = self.session.prepared
        except Exception as exc:  # settings a user can fix become notifications
            notify_error(exc)
            self.status.setText(str(exc))
            return None
        self._start_layer(prepared, resume)
        self.frames_done = []
        self._busy(True)
        self.job = BackgroundJob(
            lambda stop: anonymize_clip(video, run_dir, settings, resume=resume, should_stop=stop),
            description="Anonymizing",
            on_event=self._on_event,
            on_done=self._on_done,
            on_cancelled=self._on_cancelled,
            on_finished=lambda: self._busy(False),
            status=self.status,
        )
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.resume_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # -- the live layer --------------------------------------------------------------------
    def _start_layer(self, prepared: Any, resume: bool) -> None:
        """An in-memory layer filled as frames arrive (a lazy one for very long clips)."""
        from .prepare_widget import anonymized_layer

        info = prepared.info
        shape = (info.frames, info.height, info.width, 3)
        if int(np.prod(shape)) > LIVE_LAYER_BYTES:
            self._buffer = None
            put_layer(self.viewer, ANONYMIZED, anonymized_layer(prepared))
            return
        data, kwargs, kind = anonymized_layer(prepared)
        self._buffer = np.asarray(data) if resume else np.zeros(shape, np.uint8)
        put_layer(self.viewer, ANONYMIZED, (self._buffer, kwargs, kind))

    def _on_event(self, event: Any) -> None:
        if event.payload is None or event.stage not in ("translate", "face"):
            return
        index, frame = event.payload
        self.frames_done.append(int(index))
        layer = layer_by_role(self.viewer, ANONYMIZED)
        if layer is None:
            return
        if self._buffer is not None and layer.data is self._buffer:
            self._buffer[index] = frame
        if int(self.viewer.dims.current_step[0]) == index:
            layer.refresh()

    def _on_done(self, result: Any) -> None:
        self.session.frames_changed.emit()
        seconds = result.stats.get("seconds_per_frame")
        timing = f", {seconds:.2f} s/frame" if isinstance(seconds, float) else ""
        self.status.setText(
            f"Done: {result.frames} frames{timing}. Review them in "
            "4 Audit and review, then export in 5 Export."
        )

    def _on_cancelled(self) -> None:
        self.session.frames_changed.emit()
        self.status.setText(
            f"Cancelled after {len(set(self.frames_done))} frames; press "
            "Resume to continue where it stopped."
        )
