"""Shared output helpers for sub-commands: one JSON object on stdout, progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..progress import Progress, ProgressGenerator, T


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def drive_with_bar(gen: ProgressGenerator[T], desc: str, quiet: bool = False) -> T:
    """Run a progress generator under a tqdm bar on stderr and return its result."""
    from tqdm import tqdm

    bar = None
    bar_label = None
    try:
        while True:
            try:
                event: Progress = next(gen)
            except StopIteration as stop:
                return stop.value
            if quiet:
                continue
            label = desc if event.stage == desc else f"{desc}: {event.stage}"
            if bar is None or bar_label != label:
                if bar is not None:
                    bar.close()
                # disable=None: no bar when stderr is not a terminal (logs, CI, batch jobs)
                bar = tqdm(
                    total=event.total,
                    desc=label,
                    unit="frame",
                    disable=None,
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
                bar_label = label
            bar.update(event.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
        gen.close()
