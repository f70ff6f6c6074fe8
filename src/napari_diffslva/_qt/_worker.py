"""Running the core's progress generators from a widget, and small shared Qt pieces.

:class:`BackgroundJob` drives a :class:`~napari_diffslva.progress.Progress` generator with
the core's :func:`~napari_diffslva.progress.relay` in a napari ``thread_worker``, so the
viewer never freezes. Cancel sets the job's stop flag, which the relay checks between two
events and the core (given it as ``should_stop``) between denoising steps; the worker
thread then closes the core generator itself, with every finished frame already on disk.
Progress goes to a napari progress bar (the activity dock) and to a status label in the
widget; errors become notifications: a :class:`~napari_diffslva.errors.DiffslvaError`
shows its one-line message, anything else the exception with its traceback.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any

from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled, DiffslvaError
from ..progress import Progress, ProgressText, StopCheck, relay


class _Cancelled:
    """Returned by the worker instead of a result when the user cancelled."""


CANCELLED = _Cancelled()


def notify_error(exc: BaseException) -> None:
    """Show ``exc`` in napari: user errors as their message, bugs with their traceback."""
    from napari.utils.notifications import notification_manager, show_error

    if isinstance(exc, DiffslvaError):
        show_error(str(exc))
    else:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)


def _drive(make_generator: Callable[[StopCheck], Generator], stop: threading.Event):
    """Worker-thread generator: the core's relay, with a cancel as the CANCELLED result."""
    try:
        return (yield from relay(make_generator(stop.is_set), stop.is_set))
    except Cancelled:
        return CANCELLED


class BackgroundJob:
    """One background run of a progress generator, with a progress bar and Cancel.

    ``make_generator(should_stop)`` makes the generator in the worker thread; pass
    ``should_stop`` on to core functions that take it, so Cancel lands within a denoising
    step instead of after a whole frame. ``on_event(event)`` runs in the GUI thread for
    every yielded event (``Progress`` or whatever else the generator yields),
    ``on_done(result)`` with the generator's return value, ``on_cancelled()`` after a
    cancel, ``on_error(exc)`` after a failure (shown as a notification in any case),
    ``on_finished()`` always at the end.
    """

    def __init__(
        self,
        make_generator: Callable[[StopCheck], Generator],
        *,
        description: str,
        on_event: Callable[[Any], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        status: QLabel | None = None,
    ) -> None:
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.stop = threading.Event()
        self._on_event, self._on_done = on_event, on_done
        self._on_cancelled, self._on_finished = on_cancelled, on_finished
        self._on_error = on_error
        self._status = status
        self._text = ProgressText()
        self.started_at = time.perf_counter()
        self.error: BaseException | None = None
        self.running = True
        self._pending: deque[tuple[str, Any]] = deque()
        self._draining = False
        self._returned = False
        self.pbar = progress(total=0, desc=description)
        self.worker = create_worker(
            _drive,
            make_generator,
            self.stop,
            _start_thread=False,
            _connect={
                "yielded": partial(self._queue, "yielded"),
                "returned": partial(self._queue, "returned"),
                "aborted": partial(self._queue, "returned", CANCELLED),
                "errored": partial(self._queue, "errored"),
                "finished": partial(self._queue, "finished"),
            },
        )
        # A thread of its own per job, never a reused pool thread: dlib's Python bindings
        # keep a pointer to the thread's Python state, which a pooled thread drops between
        # jobs; the next dlib call on that thread then crashes the process (seen in tests).
        self._pool = QThreadPool()
        self._pool.setMaxThreadCount(1)
        self._pool.setExpiryTimeout(0)
        self._pool.start(self.worker)

    def cancel(self) -> None:
        """Ask the run to stop (after the denoising step or frame in progress)."""
        self.stop.set()
        if self._status is not None:
            self._status.setText("Cancelling after the current step...")

    # Worker signals are handled strictly in order. Adding layers or updating the progress
    # bar can process pending Qt events, which would run later handlers (even ``returned``)
    # inside earlier ones; re-entrant calls only queue their work for the outer loop.
    def _queue(self, kind: str, value: Any = None) -> None:
        self._pending.append((kind, value))
        if self._draining:
            return
        self._draining = True
        try:
            while self._pending:
                kind, value = self._pending.popleft()
                getattr(self, f"_handle_{kind}")(value)
        finally:
            self._draining = False

    def _handle_yielded(self, event: Any) -> None:
        if isinstance(event, Progress):
            text = self._text.update(event)
            if self._status is not None:
                self._status.setText(text)
            if self.pbar.total != event.total:
                self.pbar.total = event.total
                self.pbar.n = 0
            self.pbar.set_description(text)
            self.pbar.update(event.done - self.pbar.n)
        if self._on_event is not None:
            self._on_event(event)

    def _handle_returned(self, value: Any) -> None:
        if self._returned:
            return
        self._returned = True
        if value is CANCELLED or self.worker.abort_requested:
            if self._status is not None:
                self._status.setText("Cancelled; finished frames are kept in the run folder.")
            if self._on_cancelled is not None:
                self._on_cancelled()
        elif self._on_done is not None:
            self._on_done(value)

    def _handle_errored(self, exc: BaseException) -> None:
        self.error = exc
        if self._status is not None:
            self._status.setText(f"Failed: {exc}")
        notify_error(exc)
        if self._on_error is not None:
            self._on_error(exc)

    def _handle_finished(self, _: Any = None) -> None:
        self.pbar.close()
        if self._on_finished is not None:
            self._on_finished()
        self.running = False


def stack_layout(
    widget: QWidget,
    form: QLayout | QWidget | list[QLayout | QWidget],
    buttons: list[QWidget],
    below: list[QWidget],
    stretch: bool = True,
) -> QVBoxLayout:
    """The layout every dock widget shares: settings form(s), a row of buttons, then
    ``below`` (status text, plots) top to bottom."""
    row = QHBoxLayout()
    for button in buttons:
        row.addWidget(button)
    layout = QVBoxLayout(widget)
    for part in form if isinstance(form, list) else [form]:
        if isinstance(part, QLayout):
            layout.addLayout(part)
        else:
            layout.addWidget(part)
    layout.addLayout(row)
    for item in below:
        layout.addWidget(item)
    if stretch:
        layout.addStretch(1)
    return layout


class PathRow(QWidget):
    """A path field with a Browse button (file to open, file to save, or folder)."""

    def __init__(
        self,
        mode: str = "open",
        placeholder: str = "",
        filter: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(browse)

    def _browse(self) -> None:
        if self.mode == "folder":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.edit.text())
        elif self.mode == "save":
            path, _ = QFileDialog.getSaveFileName(self, "Save as", self.edit.text(), self.filter)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Open", self.edit.text(), self.filter)
        if path:
            self.edit.setText(path)

    def path(self) -> Path | None:
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: str | Path | None) -> None:
        self.edit.setText("" if path is None else str(path))
