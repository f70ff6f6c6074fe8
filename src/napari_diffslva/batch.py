"""Corpus-scale anonymization: one dask task per clip, resumable, with a results manifest.

The unit of work is :func:`napari_diffslva.pipeline.anonymize` on one clip, with its own run
folder, so everything a single run guarantees carries over: a task that dies (a lost
worker, a killed job) is retried and *resumes* from the frames its run folder already
holds, and a rerun of the same command skips the clips ``batch.json`` records as finished
under the same settings. The client is the only writer of ``batch.json`` (atomically,
after each clip), so the manifest is always readable, even mid-run.

Clips that show one utterance from several cameras form a *group*: every view gets the
prompt, negative prompt, seed and models of the group's first view, the first view's
anchor frame index and its anchor style (the AdaIN statistics of its generated anchor, see
:mod:`.engine.style`): it runs first; the others depend on its task. What that does and does
not make consistent across views is spelled out in ``docs/batch.md``.

Qt-free and napari-free; dask.distributed is imported only by the functions that run a
batch.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import DiffslvaError, SettingsError, VideoError
from .progress import Progress, ProgressGenerator
from .project import atomic_write_json, read_json, settings_key
from .video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, sorted_images

if TYPE_CHECKING:
    from distributed import Client

MANIFEST = "batch.json"
RUNS_DIR = ".diffslva-runs"
OUTPUT_SUFFIX = ".mp4"
FINISHED = ("done", "skipped")
# Settings every view of a group takes from the group's first view (the "who" of the output).
GROUP_SHARED = ("prompt", "negative_prompt", "seed", "model", "controlnet")
GLOB_CHARS = "*?["


# -- inputs ----------------------------------------------------------------------------------
def discover_clips(
    inputs: Sequence[str | os.PathLike], *, exclude: Path | None = None
) -> list[Path]:
    """Clips named by files, folders (searched recursively) and glob patterns, in order.

    In folders, every video/GIF file is a clip, and so is every folder of images that holds
    no video (an image sequence). Hidden folders and ``exclude`` (the output folder, when it
    lies inside an input folder) are skipped. A file named explicitly is always a clip, even
    one that turns out unreadable: it is reported as failed rather than silently dropped.
    """
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.exists():
            candidates = [path]
        elif any(ch in text for ch in GLOB_CHARS):
            candidates = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not candidates:
                raise VideoError(f"{text}: no file or folder matches this pattern")
        else:
            raise VideoError(f"{text}: no such file or folder")
        for candidate in candidates:
            found.extend(
                _clips_in_folder(candidate, exclude)
                if candidate.is_dir() and not _is_image_sequence(candidate)
                else [candidate]
            )
    unique: dict[Path, Path] = {}
    for clip in found:
        unique.setdefault(clip.resolve(), clip)
    if not unique:
        raise VideoError(
            f"no clips ({', '.join(VIDEO_SUFFIXES)} or image folders) in "
            f"{', '.join(map(str, inputs))}"
        )
    return list(unique.values())


def _is_image_sequence(folder: Path) -> bool:
    names = [f for f in folder.iterdir() if f.is_file()]
    return any(f.suffix.lower() in IMAGE_SUFFIXES for f in names) and not any(
        f.suffix.lower() in VIDEO_SUFFIXES for f in names
    )


def _clips_in_folder(folder: Path, exclude: Path | None) -> list[Path]:
    clips: list[Path] = []
    skip = exclude.resolve() if exclude is not None else None
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        videos = sorted(
            f for f in files if Path(f).suffix.lower() in VIDEO_SUFFIXES and not f.startswith(".")
        )
        clips.extend(here / f for f in videos)
        if not videos and here != folder and _is_image_sequence(here):
            clips.append(here)
            dirs[:] = []
    return clips


def clip_names(clips: Sequence[Path]) -> list[str]:
    """Names relative to the clips' common folder, without suffix, ``/``-separated.

    ``corpus/cam1/utt01.mp4`` and ``corpus/cam2/utt01.mp4`` become ``cam1/utt01`` and
    ``cam2/utt01``; a flat folder gives the plain stems (the corpus's utterance ids).
    """
    parents = [str(c.resolve().parent) for c in clips]
    common = Path(os.path.commonpath(parents))
    names = []
    for clip in clips:
        rel = clip.resolve().relative_to(common)
        names.append(rel.with_suffix("").as_posix() if clip.is_file() else rel.as_posix())
    seen: dict[str, Path] = {}
    for name, clip in zip(names, clips, strict=True):
        if name in seen:
            raise VideoError(
                f"{seen[name]} and {clip} would both be written as {name}"
                f"{OUTPUT_SUFFIX}; rename one or pass --hash-names"
            )
        seen[name] = clip
    return names


def content_hash(clip: Path) -> str:
    """sha256 of a file's bytes, or of a folder's images in order (as :func:`video.probe`)."""
    digest = hashlib.sha256()
    for path in sorted_images(clip) if clip.is_dir() else [clip]:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


# -- settings --------------------------------------------------------------------------------
def read_config(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Base settings (flat keys) and per-clip overrides of a ``.toml`` or ``.json`` file.

    Per-clip overrides are a ``clips`` table: ``[clips."utt01"]`` in TOML. A sidecar written
    by the exporter or the napari widget (settings under ``anonymize``) works as well.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{p}: cannot read settings ({exc})") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{p}: expected a table of settings")
    clips = data.pop("clips", {})
    base = dict(data.get("anonymize", data))
    clips = {**clips, **base.pop("clips", {})}
    if not isinstance(clips, dict) or not all(isinstance(v, dict) for v in clips.values()):
        raise SettingsError(f"{p}: 'clips' must hold one table of settings per clip name")
    return {k: v for k, v in base.items() if v is not None}, clips


def _setting_types() -> dict[str, str]:
    """Setting name -> its annotation (text), for typing CSV cells."""
    from .engine.settings import EngineSettings
    from .prepare.pipeline import PrepareSettings

    types = {f.name: str(f.type) for f in (*fields(PrepareSettings), *fields(EngineSettings))}
    types.update(face_module="str", face_weights="str | None")
    return types


def _parse_cell(column: str, text: str, where: str) -> Any:
    """A CSV cell as the setting's type: strings stay text, anything else is JSON."""
    kind = _setting_types().get(column)
    if kind is None:
        raise SettingsError(
            f"{where}: unknown setting column {column!r} "
            "(see `napari-diffslva anonymize --help` for the valid names)"
        )
    if kind.startswith("str"):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, list) else text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"{where}: column {column}: {text!r} is not a valid value") from exc


def read_groups_csv(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``clip -> group`` and per-clip setting overrides from a CSV with columns clip, group
    and optionally any setting name (empty cells: no override)."""
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise SettingsError(f"{p}: cannot read the groups file ({exc})") from exc
    if not rows or "clip" not in rows[0]:
        raise SettingsError(f"{p}: needs a header row with a 'clip' column (and 'group')")
    groups: dict[str, str] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(rows, start=2):
        clip = (row.pop("clip") or "").strip()
        if not clip:
            raise SettingsError(f"{p}:{line}: empty clip name")
        group = (row.pop("group", "") or "").strip()
        if group:
            groups[clip] = group
        cells = {k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()}
        if cells:
            overrides[clip] = {k: _parse_cell(k, v, f"{p}:{line}") for k, v in cells.items()}
    return groups, overrides


def _matches(key: str, name: str, clip: Path) -> bool:
    """A per-clip key names a clip by its batch name, file name or stem."""
    return key in (name, clip.name, clip.stem)


# -- the plan --------------------------------------------------------------------------------
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
    from .pipeline import AnonymizeSettings

    AnonymizeSettings.from_flat(dict(settings or {}))  # a typo fails before the search
    out = Path(outdir)
    clips = discover_clips(inputs, exclude=out)
    names = clip_names(clips)
    notes: list[str] = []
    group_of: dict[str, str] = {}
    per_clip: list[tuple[str, dict[str, Any]]] = list((overrides or {}).items())
    csv_groups: dict[str, str] = {}
    if groups_csv is not None:
        csv_groups, csv_overrides = read_groups_csv(groups_csv)
        per_clip += list(csv_overrides.items())
    pattern = _compile(group_by) if group_by else None
    flats: dict[str, dict[str, Any]] = {}
    explicit: dict[str, set[str]] = {}
    for name, clip in zip(names, clips, strict=True):
        flat = dict(settings or {})
        given: set[str] = set()
        for key, values in per_clip:
            if _matches(key, name, clip):
                flat.update(values)
                given.update(values)
        flats[name], explicit[name] = flat, given
        group = next((g for k, g in csv_groups.items() if _matches(k, name, clip)), None)
        if group is None and pattern is not None and (m := pattern.search(name)):
            group = m.group(1) if pattern.groups else m.group(0)
        if group is not None:
            group_of[name] = group
    for key, _ in per_clip:
        if not any(_matches(key, n, c) for n, c in zip(names, clips, strict=True)):
            notes.append(f"settings for {key!r} match no clip of this batch")
    for key in csv_groups:
        if not any(_matches(key, n, c) for n, c in zip(names, clips, strict=True)):
            notes.append(f"group entry {key!r} matches no clip of this batch")

    first_of: dict[str, str] = {}
    for name in names:  # the group's first view, in input order
        if name in group_of:
            first_of.setdefault(group_of[name], name)
    for name, group in group_of.items():
        first = first_of[group]
        if name == first:
            continue
        for key in GROUP_SHARED:
            if key in explicit[name] and flats[name].get(key) != flats[first].get(key):
                raise SettingsError(
                    f"clip {name}: {key} differs from its group's first view {first}; "
                    f"views of one group share {', '.join(GROUP_SHARED)}"
                )
            if key in flats[first]:
                flats[name][key] = flats[first][key]
            else:
                flats[name].pop(key, None)

    runs = Path(runs_dir) if runs_dir else out / RUNS_DIR
    jobs = []
    for name, clip in zip(names, clips, strict=True):
        flat = flats[name]
        AnonymizeSettings.from_flat(flat)  # fail now, not on a worker an hour later
        stat = clip.stat()
        ident = content_hash(clip)[:16] if hash_names else name
        group = group_of.get(name)
        follows = None
        if group is not None and first_of[group] != name and "anchor" not in explicit[name]:
            follows = first_of[group]
        key = settings_key(flat, group, follows, stat.st_size, stat.st_mtime_ns)
        jobs.append(
            ClipJob(
                name=ident,
                source=str(clip),
                output=str(out / (ident + OUTPUT_SUFFIX)),
                run_dir=str(runs / (ident + ".diffslva-run")),
                settings=flat,
                key=key,
                group=group,
                follows=follows,
                audit=audit,
                hide_source=hash_names,
            )
        )
    if hash_names:  # groups and dependencies by hash name, too
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
    run_dirs = {j.name: j.run_dir for j in jobs}
    jobs = [replace(j, follows_run_dir=run_dirs[j.follows]) if j.follows else j for j in jobs]
    return BatchPlan(jobs=jobs, outdir=out, notes=notes)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SettingsError(
            f"--group-by {pattern!r}: not a valid regular expression ({exc})"
        ) from exc


# -- one clip, on a worker -------------------------------------------------------------------
def _one_line(exc: BaseException, job: ClipJob) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if job.hide_source:
        text = text.replace(job.source, job.name).replace(Path(job.source).name, job.name)
    return text


def anonymize_job(job: ClipJob, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Anonymize one clip (on a dask worker) and return its batch.json record.

    Always resumes: a retried task, or a rerun, continues from the frames in the clip's run
    folder. ``reference`` is the record of the group's first view; its anchor index and
    its style reference (``style_reference.json`` in its run folder) are used here.
    Expected errors (:class:`DiffslvaError`: a corrupt clip, a bad setting) give a
    ``failed`` record; anything else propagates so dask retries the task.
    """
    from .engine.style import StyleReference
    from .engine.translate import STAGE as TRANSLATED
    from .export import source_record
    from .pipeline import AnonymizeSettings, anonymize
    from .progress import run_to_end
    from .project import RunFolder

    started = time.time()
    record: dict[str, Any] = {
        "status": "failed",
        "output": None,
        "error": None,
        "key": job.key,
        "group": job.group,
        "worker": _worker_name(),
    }
    if not job.hide_source:
        record["input"] = job.source
    stages: dict[str, float] = {}

    def on_progress(event: Progress) -> None:
        stages[event.stage] = stages.get(event.stage, 0.0) + event.seconds

    try:
        flat = dict(job.settings)
        style = None
        if reference is not None and reference.get("anchor") is not None:
            from .video import probe

            frames = probe(job.source).frames
            flat["anchor"] = min(int(reference["anchor"]), frames - 1)
            record["anchor_from"] = job.follows
            style = StyleReference.load(RunFolder(job.follows_run_dir))
        elif job.follows is not None:
            record["note"] = f"anchor not shared: the group's first view {job.follows} failed"
        if style is not None:
            record["style_reference"] = style.key
        settings = AnonymizeSettings.from_flat(flat)
        record["resumed_frames"] = len(RunFolder(job.run_dir).manifest(TRANSLATED)["done"])
        Path(job.output).parent.mkdir(parents=True, exist_ok=True)
        result = run_to_end(
            anonymize(
                job.source,
                job.output,
                run_dir=job.run_dir,
                settings=settings,
                resume=True,
                overwrite=True,
                style_reference=style,
            ),
            on_progress,
        )
        record.update(status="done", output=job.output, frames=result.frames, anchor=result.anchor)
        source = source_record(RunFolder(job.run_dir).read_run())
        if source["deviations"]:  # a lost end, damaged frames: written down per clip
            record["source_deviations"] = source["deviations"]
        if job.audit:
            record["audit"] = _audit_summary(job)
    except DiffslvaError as exc:
        record["error"] = _one_line(exc, job)
    record.update(
        seconds=round(time.time() - started, 3),
        stages={k: round(v, 3) for k, v in stages.items()},
        started=_iso(started),
        finished=_iso(time.time()),
    )
    return record


def _audit_summary(job: ClipJob) -> dict[str, Any]:
    """The audit's headline numbers (identity, expression, hands, temporal)."""
    from .audit.run import audit_videos
    from .progress import run_to_end

    try:
        data = run_to_end(audit_videos(job.source, job.output)).to_json()
    except DiffslvaError as exc:
        return {"error": _one_line(exc, job)}
    identity = data["identity"]
    return {
        "identity": {
            **identity["summary"],
            "leak_frames": len(identity["leak_frames"]),
            "no_face_frames": len(identity["no_face_frames"]),
        },
        "expression": data["expression"]["summary"],
        "hands": data["hands"]["summary"],
        "temporal": {k: v for k, v in data["temporal"].items() if not isinstance(v, list)},
        "notes": data["notes"],
    }


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- the manifest ----------------------------------------------------------------------------
class BatchManifest:
    """``OUTDIR/batch.json``: one record per clip, rewritten atomically after each change."""

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

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.clips.values():
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out

    def record(self, name: str, rec: dict[str, Any]) -> None:
        self.clips[name] = rec
        self.save()

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "tool": "napari-diffslva",
                "version": __version__,
                "updated": _iso(time.time()),
                "summary": self.counts(),
                "clips": self.clips,
            },
        )


# -- the dask run ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchStatus:
    """Counts at one moment of a batch (the payload of its progress events)."""

    done: int
    failed: int
    skipped: int
    running: int
    waiting: int
    last: dict[str, Any] | None = None  # the record that just finished, if any


@dataclass
class BatchResult:
    manifest: Path
    records: dict[str, dict[str, Any]]
    notes: list[str]
    seconds: float

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "failed": 0, "skipped": 0}
        for rec in self.records.values():
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "seconds": round(self.seconds, 3),
            **self.counts(),
            "notes": self.notes,
            "clips": self.records,
        }


def needs_gpu(device: str, gpu_workers: bool) -> bool:
    """Should a clip with this ``device`` setting take a ``GPU`` resource?

    ``cuda`` always does (and needs workers that declare one); ``auto`` does when workers
    declare GPUs, since it then picks CUDA; ``cpu`` and ``mps`` never do.
    """
    if device.startswith("cuda"):
        if not gpu_workers:
            raise SettingsError(
                "device 'cuda' but no dask worker declares a GPU; start workers "
                "with `--resources GPU=1` (one per GPU) or use device 'auto'"
            )
        return True
    return device == "auto" and gpu_workers


def gpu_workers(client: Client) -> bool:
    info = client.scheduler_info(n_workers=-1)
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in info["workers"].values())


def run_batch(
    plan: BatchPlan, client: Client, *, retries: int = 2, poll: float = 1.0
) -> ProgressGenerator[BatchResult]:
    """Run every unfinished clip of ``plan`` on ``client``'s cluster; yields progress.

    Yields ``Progress("batch", finished, total, seconds, BatchStatus)`` when a clip ends and
    every ``poll`` seconds. Clips finished earlier under the same key are ``skipped``. A
    clip's error is recorded and the others go on. Tasks that raise unexpectedly are
    retried ``retries`` times; tasks of a lost worker are rescheduled by dask (up to
    ``distributed.scheduler.allowed-failures`` times).
    """
    from distributed import wait

    plan.outdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = BatchManifest(plan.manifest_path)
    gpus = gpu_workers(client)
    by_name = {job.name: job for job in plan.jobs}
    records: dict[str, dict[str, Any]] = {}
    futures: dict[Any, str] = {}
    for job in plan.jobs:  # input order: a group's first view comes before the others
        earlier = manifest.finished(job)
        if job.follows is not None and job.follows not in records:
            earlier = None  # the first view runs again: its style reference may change
        if earlier is not None:
            records[job.name] = {**earlier, "status": "skipped"}
            manifest.clips[job.name] = records[job.name]
        else:
            manifest.clips[job.name] = {
                **manifest.clips.get(job.name, {}),
                "status": "pending",
                "key": job.key,
            }
    todo = [job for job in plan.jobs if job.name not in records]
    gpu = {job.name: needs_gpu(str(job.settings.get("device", "auto")), gpus) for job in todo}
    manifest.save()
    submitted: dict[str, Any] = {}
    for job in todo:  # input order: a group's first view is submitted before the others
        reference: Any = None
        if job.follows is not None:
            reference = submitted.get(job.follows) or records.get(job.follows)
        future = client.submit(
            anonymize_job,
            job,
            reference,
            key=f"clip-{job.name}-{job.key}-{time.time_ns()}",
            retries=retries,
            pure=False,
            resources={"GPU": 1} if gpu[job.name] else None,
        )
        submitted[job.name] = future
        futures[future] = job.name
    # Hold each future only until collected: a held result pins its worker's memory, and a
    # result lost with its worker would be computed again.
    submitted.clear()
    total = len(plan.jobs)

    def status(last: dict[str, Any] | None = None) -> BatchStatus:
        counts = {"done": 0, "failed": 0, "skipped": 0}
        for rec in records.values():
            counts[rec["status"]] += 1
        keys = {f.key for f in futures}
        running = sum(1 for ks in client.processing().values() for k in ks if k in keys)
        return BatchStatus(
            **counts, running=running, waiting=total - len(records) - running, last=last
        )

    tick = time.perf_counter()
    yield Progress("batch", len(records), total, 0.0, status())
    pending = set(futures)
    try:
        while pending:
            try:
                done, _ = wait(list(pending), timeout=poll, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for future in done:
                pending.discard(future)
                name = futures.pop(future)
                rec = _collect(future, by_name[name])
                records[name] = rec
                manifest.record(name, rec)
                now = time.perf_counter()
                yield Progress("batch", len(records), total, now - tick, status(rec))
                tick = now
            if not done:
                yield Progress("batch", len(records), total, 0.0, status())
    finally:
        for future in futures:
            future.cancel()
    return BatchResult(
        manifest=plan.manifest_path,
        records=records,
        notes=plan.notes,
        seconds=time.perf_counter() - started,
    )


def _collect(future: Any, job: ClipJob) -> dict[str, Any]:
    """A finished future's record; a task that failed for good becomes a ``failed`` one."""
    if future.status == "finished":
        return future.result()
    exc = future.exception()
    rec = {
        "status": "failed",
        "output": None,
        "key": job.key,
        "group": job.group,
        "error": f"{type(exc).__name__}: {_one_line(exc, job)}",
    }
    if not job.hide_source:
        rec["input"] = job.source
    return rec


@contextmanager
def batch_client(
    scheduler: str | None = None, workers: int | None = None, gpu: bool = False
) -> Iterator[Client]:
    """A client on ``scheduler`` (an address), or on a new local cluster of processes.

    The local cluster has ``workers`` worker processes (default one), each running one
    clip at a time with one torch thread (dask's default: several OpenMP threads per worker
    collapse when the cores are shared; more workers use more cores, at one copy of the
    models each). With ``gpu`` each worker declares ``GPU=1``.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if workers is not None:
            raise SettingsError(
                "give --scheduler or --workers, not both (the scheduler's "
                "workers are started where the cluster runs)"
            )
        with Client(scheduler) as client:
            yield client
        return
    n = workers or 1
    if n < 1:
        raise SettingsError(f"--workers {n}: needs at least one worker")
    import dask

    # No heartbeat deadline: dask drops a worker that misses heartbeats for 5 minutes, and a
    # worker on a loaded machine (a clip holding the GIL, swapping) can, so the same batch
    # would fail or not depending on machine speed. A local worker that really dies is
    # seen at once by its nanny; a hung one is the user's to stop.
    with dask.config.set({"distributed.scheduler.worker-ttl": None}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            resources={"GPU": 1} if gpu else None,
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def local_gpu(plan: BatchPlan) -> bool:
    """Should a local cluster declare GPUs? Yes when CUDA is here and some clip may use it."""
    devices = {str(job.settings.get("device", "auto")) for job in plan.jobs}
    if devices <= {"cpu", "mps"}:
        return False
    import torch

    return torch.cuda.is_available()
