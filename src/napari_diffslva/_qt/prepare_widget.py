"""1 Prepare: faces, edges and optical flow of a clip, computed in the background.

The video is chosen as a file (layers keep no file names, see :mod:`._session`); the
layer showing it is found by content hash, or opened with our reader. One call of
:func:`~napari_diffslva.prepare.pipeline.prepare_clip` does the work; each stage it
finishes becomes layers at once: face boxes, landmarks, mask and anchor first, then
edges with the control map and face sketch (what ControlNet is told about the face),
then flow and occlusion. The settings fields come from the declarations of
:class:`~napari_diffslva.prepare.pipeline.PrepareSettings`. *Open run folder* restores a
prepared clip, its edits and any anonymized frames without computing what is cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QCheckBox, QFormLayout, QLabel, QPushButton, QWidget

from .. import napari_layers as nl
from ..errors import SettingsError
from ._session import ANONYMIZED, ORIGINAL, layer_by_role, put_layer, session_for
from ._worker import BackgroundJob, PathRow, notify_error, stack_layout
from .settings_form import SettingsForm

if TYPE_CHECKING:
    import napari

# Layers hidden when first added (they are for checking, not for every look at the clip).
_HIDDEN_AT_FIRST = ("flow", "occlusion", "flow vectors", "landmarks")
# Shown at once; the other prepare settings are under "Advanced settings".
MAIN_SETTINGS = (
    "edges",
    "safe_edges",
    "hed_weights",
    "flow",
    "short_side",
    "face_parser",
    "parser_weights",
    "on_damaged_frame",
)


class _LayersReady:
    """A worker event: a (partial) prepared clip and layer data computed in the worker."""

    def __init__(self, prepared: Any, layers: list[tuple]) -> None:
        self.prepared, self.layers = prepared, layers


def face_layers(prepared: Any) -> list[tuple]:
    """Mask (eager: computed in the worker), landmarks, boxes, anchor."""
    return [
        layer
        for layer in nl.prepared_layers(prepared)
        if layer[2] in ("labels", "points", "shapes")
    ]


def stage_layers(stage: str, prepared: Any, vectors: bool) -> list[tuple]:
    """The layers of one finished prepare stage (their data is computed in the worker)."""
    if stage == "faces":
        return face_layers(prepared)
    if stage == "edges":  # with what ControlNet is told about the face beside them
        return [nl.edges_layer(prepared), *nl.control_layers(prepared)]
    flow = [nl.flow_layer(prepared), nl.occlusion_layer(prepared)]
    if vectors:
        flow.append(nl.flow_vectors_layer(prepared))
    return flow


def _prepare_job(video: Path, run_dir: Path, settings: Any, vectors: bool):
    """prepare_clip, with each finished stage's layers added to its event."""
    from ..prepare.pipeline import Prepared, prepare_clip

    gen = prepare_clip(video, run_dir, settings)
    while True:
        try:
            event = next(gen)
        except StopIteration as finished:
            return finished.value
        if isinstance(event.payload, Prepared):
            yield _LayersReady(event.payload, stage_layers(event.stage, event.payload, vectors))
        else:
            yield event


def _open_job(video: Path, run_dir: Path):
    from ..pipeline import FINAL
    from ..prepare.pipeline import open_prepared
    from ..project import RunFolder

    run = RunFolder(run_dir)
    if not run.read_run():
        raise SettingsError(f"{run_dir}: not a run folder (no run.json); run Prepare first")
    prepared = open_prepared(run_dir, video)
    layers = nl.prepared_layers(prepared)
    if len(run.missing_frames(FINAL, prepared.info.frames)) < prepared.info.frames:
        layers.append(anonymized_layer(prepared))
    yield _LayersReady(prepared, layers)
    return prepared


def anonymized_layer(prepared: Any) -> tuple:
    """The run folder's finished frames as a lazy layer with the source's timing."""
    info = prepared.info
    return nl.run_frames_layer(
        prepared.run.root,
        info.frames,
        (info.height, info.width),
        name=ANONYMIZED,
        timing=info.timing.to_dict(),
    )


def settings_form() -> SettingsForm:
    """Every declared prepare setting."""
    from ..options import declared
    from ..prepare.pipeline import PrepareSettings
    from .anonymize_widget import available_devices

    names = [f.name for f, _ in declared(PrepareSettings)]
    return SettingsForm(
        [PrepareSettings],
        MAIN_SETTINGS,
        advanced=[n for n in names if n not in MAIN_SETTINGS],
        choices={"device": available_devices()},
    )


def ensure_original_layer(viewer: napari.viewer.Viewer, video: Path) -> Any:
    """The layer showing ``video`` (matched by content hash), opened with our reader if none."""
    from napari.layers import Layer

    from .._reader import read_video
    from ..video import probe

    content_hash = probe(video).content_hash
    session = session_for(viewer)
    for layer in viewer.layers:
        source = layer.metadata.get("diffslva", {}).get("source", {})
        if source.get("content_hash") == content_hash:
            session.layers[ORIGINAL] = layer
            return layer
    data, kwargs, kind = read_video(str(video))[0]
    layer = Layer.create(data, kwargs, kind)
    viewer.add_layer(layer)
    viewer.layers.move(viewer.layers.index(layer), 0)
    session.layers[ORIGINAL] = layer
    return layer


class PrepareWidget(QWidget):
    """Choose the clip and the run folder; compute or reopen the prepared data."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.job: BackgroundJob | None = None

        self.video = PathRow(
            "open",
            "video file (.mp4, .mov, .gif, ...)",
            "Videos (*.mp4 *.mov *.avi *.mkv *.webm *.gif *.m4v);;All (*)",
        )
        self.run_dir = PathRow("folder", "run folder (created if missing)")
        self.form = settings_form()
        self.vectors = QCheckBox("flow arrows (Vectors layer)")
        self.prepare_button = QPushButton("Prepare")
        self.open_button = QPushButton("Open run folder")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = QLabel("Choose a video and a run folder.")
        self.status.setWordWrap(True)

        paths = QFormLayout()
        paths.addRow("Video", self.video)
        paths.addRow("Run folder", self.run_dir)
        stack_layout(
            self,
            [paths, self.form, self.vectors],
            [self.prepare_button, self.open_button, self.cancel_button],
            [self.status],
        )

        self.prepare_button.clicked.connect(self.prepare)
        self.open_button.clicked.connect(self.open_run)
        self.cancel_button.clicked.connect(self.cancel)

    # -- actions -------------------------------------------------------------------------
    def settings(self) -> Any:
        from ..prepare.pipeline import PrepareSettings

        return PrepareSettings(**self.form.values())

    def _paths(self) -> tuple[Path, Path]:
        video, run_dir = self.video.path(), self.run_dir.path()
        if video is None:
            raise SettingsError("choose the video file first")
        if run_dir is None:
            raise SettingsError("choose a run folder (a new or an existing one)")
        return video, run_dir

    def prepare(self) -> BackgroundJob | None:
        """Compute (or reuse) faces, edges and flow in the background."""
        try:
            settings = self.settings()
        except Exception as exc:  # a setting the user can fix becomes a notification
            notify_error(exc)
            self.status.setText(str(exc))
            return None
        vectors = self.vectors.isChecked()
        return self._start(
            lambda video, run_dir: _prepare_job(video, run_dir, settings, vectors), "Preparing"
        )

    def open_run(self) -> BackgroundJob | None:
        """Reopen a run folder: prepared layers, edits and finished frames come back."""
        return self._start(_open_job, "Opening the run folder")

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _start(self, make, description: str) -> BackgroundJob | None:
        if self.job is not None and self.job.running:
            return self.job
        try:
            video, run_dir = self._paths()
            ensure_original_layer(self.viewer, video)
        except Exception as exc:  # bad paths and unreadable videos become notifications
            notify_error(exc)
            self.status.setText(str(exc))
            return None
        self.session.video, self.session.run_dir = video, run_dir
        self._busy(True)
        self.status.setText(f"{description}...")
        self.job = BackgroundJob(
            lambda _stop: make(video, run_dir),
            description=description,
            on_event=self._on_event,
            on_done=self._on_done,
            on_finished=lambda: self._busy(False),
            status=self.status,
        )
        return self.job

    def _busy(self, busy: bool) -> None:
        self.prepare_button.setEnabled(not busy)
        self.open_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _on_event(self, event: Any) -> None:
        if not isinstance(event, _LayersReady):
            return
        original = self.session.layers.get(ORIGINAL)
        for data, kwargs, kind in event.layers:
            new = layer_by_role(self.viewer, kwargs["name"]) is None
            layer = put_layer(self.viewer, kwargs["name"], (data, kwargs, kind))
            if kind == "image" and kwargs["name"] != ANONYMIZED and original in self.viewer.layers:
                # working-size images sit just above the original, under the overlays
                self.viewer.layers.move(
                    self.viewer.layers.index(layer), self.viewer.layers.index(original) + 1
                )
            if new and kwargs["name"].startswith(_HIDDEN_AT_FIRST):
                layer.visible = False
        self.session.set_prepared(event.prepared)

    def _on_done(self, prepared: Any) -> None:
        self.form.set_values(prepared.settings.to_dict())  # a reopened run's own settings
        s = prepared.summary()
        lost = len(s["lost_frames"])
        self.status.setText(
            f"Prepared {s['frames']} frames: face on {s['face_frames']}, lost on {lost}, "
            f"anchor frame {s['anchor']}, {s['edge_model']} edges. "
            "Check the face boxes in 2 Correct."
        )
