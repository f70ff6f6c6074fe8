"""Shared output of sub-commands: one JSON object on stdout, progress bars on stderr, and
Ctrl-C as a stop request."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..progress import Progress, ProgressGenerator, StopCheck, T, run_to_end


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


class StageBar:
    """A progress sink: one tqdm bar per stage on stderr (none when stderr is not a
    terminal: logs, CI, batch jobs)."""

    def __init__(self, desc: str, unit: str = "frame") -> None:
        self.desc, self.unit = desc, unit
        self.bar: Any = None
        self._label: str | None = None

    def __call__(self, event: Progress) -> None:
        from tqdm import tqdm

        label = self.desc if event.stage == self.desc else f"{self.desc}: {event.stage}"
        if self.bar is None or self._label != label:
            self.close()
            self.bar = tqdm(
                total=event.total,
                desc=label,
                unit=self.unit,
                disable=None,
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self._label = label
        self.bar.update(event.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# The stop request of the running command (Ctrl-C), for drivers not given one.
_interrupt: StopCheck | None = None


def drive_with_bar(
    gen: ProgressGenerator[T], desc: str, quiet: bool = False, should_stop: StopCheck | None = None
) -> T:
    """Run a progress generator under a :class:`StageBar` and return its result; it stops
    between events on ``should_stop`` (default: the command's Ctrl-C request)."""
    bar = None if quiet else StageBar(desc)
    try:
        return run_to_end(gen, bar, should_stop or _interrupt)
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def stop_on_interrupt() -> Iterator[StopCheck]:
    """Ctrl-C as a stop request: the first one asks the run to stop after the current
    denoising step (or frame), keeping every finished frame; a second one interrupts at once.
    Outside the main thread (where signals cannot be caught) nothing changes."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print(
            "\nnapari-diffslva: stopping after the current step (Ctrl-C again: at once)",
            file=sys.stderr,
        )

    global _interrupt
    previous = signal.signal(signal.SIGINT, on_interrupt)
    _interrupt = requested.is_set
    try:
        yield requested.is_set
    finally:
        _interrupt = None
        signal.signal(signal.SIGINT, previous)
