"""3 Anonymize: the diffusion run in the background, frames appearing as they finish.

Runs :func:`napari_diffslva.pipeline.anonymize_clip` on the prepared clip of
1 Prepare, with every prepare setting chosen there (nothing is recomputed except what the
edits changed) and the engine, face and run settings of this form, whose fields come from
the settings declarations. Finished frames are written to the run folder one by one, so a
cancelled or crashed run continues with *Resume*; *Run* starts over. Cancel lands within
one denoising step.

Privacy is shown in its own line. The anchor's identity gate runs first: its verdict
(distance of each seed's new face to the signer, the threshold) and the new anchor face
(a layer over the anchor frame) appear as soon as it is known, while the clip goes on;
*Check anchor* runs the gate alone, and *Run* then reuses its result. A refusal (every
seed still the signer) stops before any frame is translated. After the run the line
gives the self-audit's count of frames that still look like the signer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QLabel, QPushButton, QWidget

from ._session import ANONYMIZED, drop_layer, layer_by_role, put_layer, session_for
from ._worker import BackgroundJob, notify_error, stack_layout
from .settings_form import SettingsForm

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
# Shown at once; every other engine, face and run setting is under "Advanced settings".
MAIN_SETTINGS = (
    "prompt",
    "negative_prompt",
    "seed",
    "strength",
    "steps",
    "guidance",
    "control_scale",
    "face_module",
    "device",
    "model",
    "controlnet",
    "offline",
)
# Above this many bytes the live layer is not kept in memory: frames are read from disk.
LIVE_LAYER_BYTES = 1 << 30
NEW_ANCHOR_FACE = "new anchor face"  # the identity gate's new anchor face (layer name)


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


def settings_form() -> SettingsForm:
    """Every declared engine, face and run setting (prepare settings are 1 Prepare's)."""
    from ..engine.settings import EngineSettings
    from ..options import declared
    from ..pipeline import AnonymizeSettings

    classes = (EngineSettings, AnonymizeSettings)
    names = [f.name for cls in classes for f, s in declared(cls) if s.stage != "prepare"]
    return SettingsForm(
        classes,
        MAIN_SETTINGS,
        advanced=[n for n in names if n not in MAIN_SETTINGS],
        suggestions={"prompt": PROMPT_PRESETS},
        choices={"device": available_devices()},
    )


class AnonymizeWidget(QWidget):
    """Settings of the diffusion run, Run / Resume / Cancel, and the live result layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.job: BackgroundJob | None = None
        self.frames_done: list[int] = []
        self._buffer: np.ndarray | None = None

        self.form = settings_form()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("anonymize every frame anew")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("keep frames already finished with these settings")
        self.check_button = QPushButton("Check anchor")
        self.check_button.setToolTip(
            "translate the anchor frame alone and check that its new face is not the "
            "signer (the identity gate); Run then reuses the result"
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = QLabel("Prepare a clip first (1 Prepare).")
        self.status.setWordWrap(True)
        self.privacy = QLabel("")
        self.privacy.setWordWrap(True)
        stack_layout(
            self,
            self.form,
            [self.check_button, self.run_button, self.resume_button, self.cancel_button],
            [self.status, self.privacy],
        )

        self.check_button.clicked.connect(self.check_anchor)
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
        lines = self._show_privacy(prepared.run)
        self.privacy.setText("Last run in this folder:\n" + "\n".join(lines) if lines else "")

    def settings(self) -> Any:
        """:class:`AnonymizeSettings`: the prepare settings in use and this form's."""
        from ..pipeline import AnonymizeSettings

        prepared = self.session.require_prepared()
        return AnonymizeSettings.for_prepared(prepared.settings, self.form.values())

    def run(self, resume: bool = False) -> BackgroundJob | None:
        """Start (or resume) the run in the background: the identity gate, then the clip."""
        from ..pipeline import anonymize_clip

        def start(video, run_dir, settings) -> BackgroundJob:
            self._start_layer(self.session.prepared, resume)
            self.frames_done = []
            return self._start_job(
                lambda stop: anonymize_clip(
                    video, run_dir, settings, resume=resume, should_stop=stop
                ),
                "Anonymizing",
                on_done=self._on_done,
                on_cancelled=self._on_cancelled,
            )

        return self._begin(start)

    def check_anchor(self) -> BackgroundJob | None:
        """Run the identity gate alone: the new anchor face and its verdict, no clip."""
        from ..pipeline import check_anchor

        def start(video, run_dir, settings) -> BackgroundJob:
            return self._start_job(
                lambda stop: check_anchor(video, run_dir, settings, should_stop=stop),
                "Checking the anchor",
                on_done=self._on_checked,
            )

        return self._begin(start)

    def _begin(self, start) -> BackgroundJob | None:
        """``start(video, run_dir, settings)`` unless a job runs or the settings are wrong."""
        if self.job is not None and self.job.running:
            return self.job
        try:
            settings = self.settings()
            video, run_dir = self.session.video, self.session.run_dir
        except Exception as exc:  # settings a user can fix become notifications
            notify_error(exc)
            self.status.setText(str(exc))
            return None
        self.privacy.setText("")
        self._busy(True)
        self.job = start(video, run_dir, settings)
        return self.job

    def _start_job(self, make, description: str, **callbacks: Any) -> BackgroundJob:
        return BackgroundJob(
            make,
            description=description,
            on_event=self._on_event,
            on_error=self._on_error,
            on_finished=lambda: self._busy(False),
            status=self.status,
            **callbacks,
        )

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _busy(self, busy: bool) -> None:
        self.check_button.setEnabled(not busy)
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
        from ..audit.gate import STAGE as GATE
        from ..audit.gate import GateResult

        if event.stage == GATE and isinstance(event.payload, GateResult):
            self._show_gate(event.payload)
            return
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

    # -- privacy: the identity gate and the self-audit --------------------------------------
    def _show_gate(self, gate: Any) -> None:
        """The gate's verdict in the privacy line, its new anchor face as a layer."""
        from ..napari_layers import new_anchor_face_layer

        self.privacy.setText(gate.message())
        layer = new_anchor_face_layer(self.session.prepared, gate, name=NEW_ANCHOR_FACE)
        if layer is None:
            drop_layer(self.viewer, NEW_ANCHOR_FACE)
        else:
            put_layer(self.viewer, NEW_ANCHOR_FACE, layer)

    def _on_error(self, exc: BaseException) -> None:
        from ..audit.gate import AnchorLeakError

        if isinstance(exc, AnchorLeakError):  # refused: nothing of the clip was translated
            drop_layer(self.viewer, NEW_ANCHOR_FACE)
            self.privacy.setText(f"Refused by the identity gate: {exc}")

    def _on_checked(self, gate: Any) -> None:
        self.status.setText("Anchor checked: Run translates the clip with this seed.")

    def _on_done(self, result: Any) -> None:
        self.session.frames_changed.emit()
        seconds = result.stats.get("seconds_per_frame")
        timing = f", {seconds:.2f} s/frame" if isinstance(seconds, float) else ""
        self.status.setText(
            f"Done: {result.frames} frames{timing}. Review them in "
            "4 Audit and review, then export in 5 Export."
        )
        from ..project import RunFolder

        self.privacy.setText("\n".join(self._show_privacy(RunFolder(result.run_dir))))

    def _show_privacy(self, run: Any) -> list[str]:
        """The privacy lines of the run folder's last run (its gate verdict, self-audit and
        what became of a leaking result); its new anchor face as a layer."""
        from ..pipeline import held_back
        from ..privacy import recorded_checks

        gate, lines = recorded_checks(run)
        if gate is not None:
            self._show_gate(gate)  # its new anchor face layer, when one was kept
        else:
            drop_layer(self.viewer, NEW_ANCHOR_FACE)
        if held_back(run.root):
            lines.append(
                "Held back (fail_on_leak): 5 Export writes it into the run folder "
                f"{run.root} as LEAKING-IDENTITY-<output name>, not to the output file."
            )
        elif run.read_privacy().get("self_audit", {}).get("leaking"):
            lines.append("Check those frames before sharing the clip.")
        return lines

    def _on_cancelled(self) -> None:
        self.session.frames_changed.emit()
        self.status.setText(
            f"Cancelled after {len(set(self.frames_done))} frames; press "
            "Resume to continue where it stopped."
        )
