"""``OUTDIR/batch.json``: what became of every clip, readable at any moment of a run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..project import atomic_write_json, read_json

if TYPE_CHECKING:
    from .plan import ClipJob

MANIFEST = "batch.json"
FINISHED = ("done", "skipped")
LEAKING = "leaking"  # the self-audit found the signer and fail_on_leak kept it back
GATE_REFUSED = "gate_refused"  # a summary count: failed clips the identity gate refused


def iso_time(seconds: float) -> str:
    """UTC time stamp of a record."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def status_counts(records: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many records have each status."""
    out: dict[str, int] = {}
    for rec in records.values():
        out[rec["status"]] = out.get(rec["status"], 0) + 1
    return out


def summary(records: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The status counts, plus how many failures were identity gate refusals (if any)."""
    counts = status_counts(records)
    refused = sum(
        1
        for rec in records.values()
        if rec["status"] == "failed" and rec.get("identity_gate", {}).get("verdict") == "leak"
    )
    return {**counts, GATE_REFUSED: refused} if refused else counts


class BatchManifest:
    """One record per clip, rewritten atomically after each change (by the client only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clips: dict[str, dict[str, Any]] = read_json(path, {}).get("clips", {})

    def finished(self, job: ClipJob) -> dict[str, Any] | None:
        """The earlier record of ``job`` when it finished under the same key, output there."""
        rec = self.clips.get(job.name)
        if (
            rec
            and rec.get("status") in FINISHED
            and rec.get("key") == job.key
            and Path(job.output).is_file()
        ):
            return rec
        return None

    def held_back(self, job: ClipJob) -> dict[str, Any] | None:
        """The earlier record of ``job`` when its result was held back as leaking under the
        same key and still lies in its run folder: running it again would only repeat that
        (the settings that decide the result are in the key)."""
        rec = self.clips.get(job.name)
        if (
            rec
            and rec.get("status") == LEAKING
            and rec.get("key") == job.key
            and Path(rec.get("held_back") or "").is_file()
        ):
            return rec
        return None

    def record(self, name: str, rec: dict[str, Any]) -> None:
        self.clips[name] = rec
        self.save()

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "tool": "napari-diffslva",
                "version": __version__,
                "updated": iso_time(time.time()),
                "summary": summary(self.clips),
                "clips": self.clips,
            },
        )
