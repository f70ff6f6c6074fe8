"""The plan of a batch: every clip's output, run folder, settings, group and dependency.

Clips that show one utterance from several cameras form a *group*: every view gets the
prompt, negative prompt, seed and models of the group's first view and follows its anchor
(see :mod:`.job`). Everything a user can get wrong is checked here, before any work starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import SettingsError, VideoError
from ..project import RUN_SUFFIX, settings_key
from .config import matches, read_groups_csv
from .discovery import OUTPUT_SUFFIX, clip_names, content_hash, discover_clips
from .manifest import MANIFEST

RUNS_DIR = ".diffslva-runs"
# Settings every view of a group takes from the group's first view (the "who" of the output).
GROUP_SHARED = ("prompt", "negative_prompt", "seed", "model", "controlnet")

Overrides = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class ClipJob:
    """One clip's work order (plain data: it is pickled to a worker)."""

    name: str  # key in batch.json: the clip's name, or its content hash with hash names
    source: str
    output: str
    run_dir: str
    settings: dict[str, Any]  # flat settings, overrides applied
    key: str  # settings + source identity: decides whether an earlier result still counts
    group: str | None = None
    follows: str | None = None  # name of the group's first view, whose anchor this one takes
    follows_run_dir: str | None = None  # that view's run folder: its style reference
    audit: bool = False
    hide_source: bool = False  # hash names: keep source names out of messages and batch.json


@dataclass
class BatchPlan:
    jobs: list[ClipJob]
    outdir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        return self.outdir / MANIFEST

    @property
    def stop_event(self) -> str:
        """Name of the cluster-wide event that asks this batch's running clips to stop."""
        return f"diffslva-stop-{settings_key(str(self.outdir.resolve()))}"


@dataclass
class _Clip:
    """A clip while it is planned: its settings and which of them were given for it."""

    name: str
    path: Path
    flat: dict[str, Any]
    explicit: set[str]
    group: str | None = None


def plan_batch(
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    settings: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    group_by: str | None = None,
    groups_csv: str | os.PathLike | None = None,
    hash_names: bool = False,
    audit: bool = False,
    runs_dir: str | os.PathLike | None = None,
) -> BatchPlan:
    """Find the clips and fix each one's output, run folder and settings.

    Settings: ``settings`` (flat keys), then ``overrides`` (per clip, e.g. a config file's
    ``[clips."NAME"]`` tables), then the setting columns of ``groups_csv``. Groups come
    from ``groups_csv`` or from ``group_by``, a regular expression searched in each clip's
    name whose first group (or whole match) is the group id. Every setting is validated
    here, before any work starts.
    """
    from ..pipeline import AnonymizeSettings

    AnonymizeSettings.from_flat(dict(settings or {}))  # a typo fails before the search
    out = Path(outdir)
    paths = discover_clips(inputs, exclude=out)
    per_clip: Overrides = list((overrides or {}).items())
    csv_groups: dict[str, str] = {}
    if groups_csv is not None:
        csv_groups, csv_overrides = read_groups_csv(groups_csv)
        per_clip += list(csv_overrides.items())
    pattern = _compile(group_by) if group_by else None
    clips = [
        _planned(name, path, settings or {}, per_clip, csv_groups, pattern)
        for name, path in zip(clip_names(paths), paths, strict=True)
    ]
    notes = _unmatched(clips, per_clip, "settings for {!r} match no clip of this batch")
    notes += _unmatched(clips, csv_groups.items(), "group entry {!r} matches no clip of this batch")
    first_of = _share_group_settings(clips)
    runs = Path(runs_dir) if runs_dir else out / RUNS_DIR
    jobs = [_job(clip, first_of, out, runs, hash_names, audit) for clip in clips]
    if hash_names:
        jobs = _by_hash_names(jobs, [clip.name for clip in clips])
    run_dirs = {j.name: j.run_dir for j in jobs}
    jobs = [replace(j, follows_run_dir=run_dirs[j.follows]) if j.follows else j for j in jobs]
    return BatchPlan(jobs=jobs, outdir=out, notes=notes)


def _planned(
    name: str,
    path: Path,
    base: dict[str, Any],
    per_clip: Overrides,
    csv_groups: dict[str, str],
    pattern: re.Pattern[str] | None,
) -> _Clip:
    """A clip's settings (base, then every override that names it) and its group."""
    clip = _Clip(name, path, dict(base), set())
    for key, values in per_clip:
        if matches(key, name, path):
            clip.flat.update(values)
            clip.explicit.update(values)
    clip.group = next((g for k, g in csv_groups.items() if matches(k, name, path)), None)
    if clip.group is None and pattern is not None and (m := pattern.search(name)):
        clip.group = m.group(1) if pattern.groups else m.group(0)
    return clip


def _unmatched(clips: list[_Clip], entries: Any, message: str) -> list[str]:
    """A note for every per-clip entry that names no clip of the batch."""
    return [
        message.format(key)
        for key, _ in entries
        if not any(matches(key, c.name, c.path) for c in clips)
    ]


def _share_group_settings(clips: list[_Clip]) -> dict[str, str]:
    """Give every view its group's first view's :data:`GROUP_SHARED` settings; returns
    ``group -> name of its first view`` (input order). A view that sets one of them to
    another value is an error."""
    first_of: dict[str, _Clip] = {}
    for clip in clips:
        if clip.group is not None:
            first_of.setdefault(clip.group, clip)
    for clip in clips:
        first = first_of.get(clip.group) if clip.group is not None else None
        if first is None or first is clip:
            continue
        for key in GROUP_SHARED:
            if key in clip.explicit and clip.flat.get(key) != first.flat.get(key):
                raise SettingsError(
                    f"clip {clip.name}: {key} differs from its group's first view {first.name}; "
                    f"views of one group share {', '.join(GROUP_SHARED)}"
                )
            if key in first.flat:
                clip.flat[key] = first.flat[key]
            else:
                clip.flat.pop(key, None)
    return {group: clip.name for group, clip in first_of.items()}


def _job(
    clip: _Clip, first_of: dict[str, str], out: Path, runs: Path, hash_names: bool, audit: bool
) -> ClipJob:
    """The work order of one planned clip (its settings validated now, not on a worker)."""
    from ..pipeline import AnonymizeSettings

    # fail now, not on a worker an hour later; the key holds every setting's value, so a
    # setting given at its default keeps the key of a clip that does not give it
    effective = AnonymizeSettings.from_flat(clip.flat).to_flat()
    stat = clip.path.stat()
    ident = content_hash(clip.path)[:16] if hash_names else clip.name
    follows = None
    if (
        clip.group is not None
        and first_of[clip.group] != clip.name
        and "anchor" not in clip.explicit
    ):
        follows = first_of[clip.group]
    return ClipJob(
        name=ident,
        source=str(clip.path),
        output=str(out / (ident + OUTPUT_SUFFIX)),
        run_dir=str(runs / (ident + RUN_SUFFIX)),
        settings=clip.flat,
        key=settings_key(effective, clip.group, follows, stat.st_size, stat.st_mtime_ns),
        group=clip.group,
        follows=follows,
        audit=audit,
        hide_source=hash_names,
    )


def _by_hash_names(jobs: list[ClipJob], names: list[str]) -> list[ClipJob]:
    """Groups and dependencies by hash name, too; identical clips are an error."""
    rename = {n: j.name for n, j in zip(names, jobs, strict=True)}
    jobs = [
        replace(
            j,
            follows=rename.get(j.follows) if j.follows else None,
            group=settings_key(j.group)[:8] if j.group else None,
        )
        for j in jobs
    ]
    if len({j.name for j in jobs}) < len(jobs):
        raise VideoError("two input clips have identical content; remove the duplicate")
    return jobs


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SettingsError(
            f"--group-by {pattern!r}: not a valid regular expression ({exc})"
        ) from exc
