"""Progress events shared by every long computation in the core, and the one relay that
drives them for every front end.

Long computations are generators that yield :class:`Progress` after each unit of work
(a frame, a step) and ``return`` their result. :func:`relay` (and :func:`run_to_end`, built
on it) is the only driver: the CLI gives it a tqdm bar as sink, the napari widgets run it
in a ``thread_worker`` that forwards each event to the GUI thread, the batch runner sums
stage times. A stop request (``should_stop``, a callable) is honoured twice: the relay
checks it between two events (a frame), and the core functions that take it check it
between denoising steps; either way :class:`~napari_diffslva.errors.Cancelled` is raised
and every finished frame stays on disk, so the run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import Cancelled

T = TypeVar("T")
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class Progress:
    """One unit of work finished: ``done`` of ``total`` in ``stage``."""

    stage: str
    done: int
    total: int
    seconds: float = 0.0  # wall time of the unit just finished
    payload: Any = None  # e.g. ``(frame_index, rgb_frame)`` for streamed results


ProgressGenerator = Generator[Progress, None, T]


def relay(gen: ProgressGenerator[T], should_stop: StopCheck | None = None) -> ProgressGenerator[T]:
    """Yield ``gen``'s events and return its result; stop between events when asked.

    ``should_stop()`` is asked before each event; when it is true ``gen`` is closed (its
    ``finally`` blocks run: files are closed, processors restored) and :class:`Cancelled`
    is raised. ``gen`` is closed whatever happens.
    """
    try:
        while True:
            if should_stop is not None and should_stop():
                raise Cancelled("stopped on request; finished frames are kept")
            try:
                event = next(gen)
            except StopIteration as finished:
                return finished.value
            yield event
    finally:
        gen.close()


def run_to_end(
    gen: ProgressGenerator[T],
    on_progress: Callable[[Progress], Any] | None = None,
    should_stop: StopCheck | None = None,
) -> T:
    """Drive a progress generator to its end (see :func:`relay`) and return its result."""
    events = relay(gen, should_stop)
    while True:
        try:
            event = next(events)
        except StopIteration as finished:
            return finished.value
        if on_progress is not None:
            on_progress(event)


class StageSeconds(dict):
    """A sink summing the wall time of each stage (``{"translate": 12.3, ...}``)."""

    def __call__(self, event: Progress) -> None:
        self[event.stage] = self.get(event.stage, 0.0) + event.seconds


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


class ProgressText:
    """Frames done, seconds per frame (running mean of the stage) and time left."""

    def __init__(self) -> None:
        self.stage = ""
        self._spent = 0.0
        self._count = 0

    def update(self, event: Progress) -> str:
        if event.stage != self.stage:
            self.stage, self._spent, self._count = event.stage, 0.0, 0
        self._spent += event.seconds
        self._count += 1
        per_frame = self._spent / self._count
        left = per_frame * max(event.total - event.done, 0)
        return (
            f"{event.stage}: {event.done}/{event.total} frames, "
            f"{per_frame:.2f} s/frame, {format_eta(left)} left"
        )
