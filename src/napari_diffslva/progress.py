"""Progress events shared by every long computation in the core.

Long computations are generators that yield :class:`Progress` after each unit of work
(a frame, a step) and ``return`` their result. The front ends decide what to do with the
events: napari's ``thread_worker`` turns them into progress bars and can stop the
generator between yields; the CLI feeds them to tqdm; the batch runner logs them. Closing
the generator (``gen.close()``) is how a run is cancelled: finished frames stay on disk.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One unit of work finished: ``done`` of ``total`` in ``stage``."""

    stage: str
    done: int
    total: int
    seconds: float = 0.0  # wall time of the unit just finished
    payload: Any = None  # e.g. ``(frame_index, rgb_frame)`` for streamed results


ProgressGenerator = Generator[Progress, None, T]


def run_to_end(gen: ProgressGenerator[T], on_progress=None) -> T:
    """Drive a progress generator to completion and return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)
