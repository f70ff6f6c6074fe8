"""Running a batch plan on a dask cluster: one task per clip, the client keeps the manifest.

The client is the only writer of ``batch.json`` (atomically, after each clip), so the
manifest is always readable, even mid-run. A rerun of the same plan skips the clips the
manifest records as finished under the same settings. A stop request (Ctrl-C in the CLI)
sets a cluster-wide dask ``Event`` that running clips check between denoising steps;
clips not started yet are dropped; all of them resume on the next run. dask.distributed
is an optional dependency (the ``batch`` extra), imported only by the functions that run
a batch.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SettingsError
from ..progress import Progress, ProgressGenerator, StopCheck
from ..project import check_writable
from .job import anonymize_job, base_record, one_line
from .manifest import GATE_REFUSED, LEAKING, BatchManifest, status_counts, summary
from .plan import BatchPlan, ClipJob

if TYPE_CHECKING:
    from distributed import Client


_SAME_LEAK = (
    "held back earlier with these settings and not run again: change the prompt, strength "
    "or seed to try again"
)
# The statuses a collected clip can have.
_COUNTED = ("done", "failed", "skipped", "cancelled", LEAKING)


@dataclass(frozen=True)
class BatchStatus:
    """Counts at one moment of a batch (the payload of its progress events)."""

    done: int
    failed: int
    skipped: int
    running: int
    waiting: int
    last: dict[str, Any] | None = None  # the record that just finished, if any
    cancelled: int = 0
    leaking: int = 0  # held back: the self-audit found the signer (fail_on_leak)


@dataclass
class BatchResult:
    manifest: Path
    records: dict[str, dict[str, Any]]
    notes: list[str]
    seconds: float
    stopped: bool = False  # a stop request ended the run early

    def counts(self) -> dict[str, int]:
        """Clips per status, and the failures the identity gate refused (``gate_refused``)."""
        return {**dict.fromkeys(_COUNTED, 0), GATE_REFUSED: 0, **summary(self.records)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
            **self.counts(),
            "notes": self.notes,
            "clips": self.records,
        }


def require_distributed() -> None:
    """dask.distributed is the ``batch`` extra: say so when it is missing."""
    if importlib.util.find_spec("distributed") is None:
        raise SettingsError(
            "the batch runner needs dask.distributed, which is not installed: "
            "pip install 'napari-diffslva[batch]'"
        )


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
    plan: BatchPlan,
    client: Client,
    *,
    retries: int = 2,
    poll: float = 1.0,
    should_stop: StopCheck | None = None,
) -> ProgressGenerator[BatchResult]:
    """Run every unfinished clip of ``plan`` on ``client``'s cluster; yields progress.

    Yields ``Progress("batch", finished, total, seconds, BatchStatus)`` when a clip ends and
    every ``poll`` seconds. Clips finished earlier under the same key are ``skipped``. A
    clip's error is recorded and the others go on. Tasks that raise unexpectedly are
    retried ``retries`` times; tasks of a lost worker are rescheduled by dask (up to
    ``distributed.scheduler.allowed-failures`` times). When ``should_stop()`` turns true
    (asked every ``poll`` seconds), running clips stop within one denoising step and the
    others are not started: their records say ``cancelled`` and a rerun resumes them.
    """
    require_distributed()
    check_writable(plan.outdir)
    started = time.perf_counter()
    manifest = BatchManifest(plan.manifest_path)
    records = _skip_finished(plan, manifest)
    todo = [job for job in plan.jobs if job.name not in records]
    stop = _StopRequest(client, plan.stop_event, should_stop)
    futures = _submit(client, todo, records, retries, stop.name)
    try:
        yield from _collect_all(client, futures, plan, manifest, records, poll, stop)
    finally:
        for future in futures:
            future.cancel()
    return BatchResult(
        manifest=plan.manifest_path,
        records=records,
        notes=plan.notes,
        seconds=time.perf_counter() - started,
        stopped=stop.sent,
    )


class _StopRequest:
    """A front's stop request passed on to the workers as the dask event ``name``."""

    def __init__(self, client: Client, name: str, should_stop: StopCheck | None) -> None:
        from distributed import Event

        self.name, self.should_stop, self.sent = name, should_stop, False
        self.event = Event(name, client=client)
        self.event.clear()  # a stop of an earlier, interrupted run of this batch is over

    def due(self) -> bool:
        """True once, when the request arrives: the event is then set for the workers."""
        if self.sent or self.should_stop is None or not self.should_stop():
            return False
        self.event.set()
        self.sent = True
        return True


def _skip_finished(plan: BatchPlan, manifest: BatchManifest) -> dict[str, dict[str, Any]]:
    """Records of the clips finished earlier (``skipped``) or held back as leaking under the
    same settings (``leaking`` again, not rerun); the others become ``pending``."""
    records: dict[str, dict[str, Any]] = {}
    for job in plan.jobs:  # input order: a group's first view comes before the others
        earlier = manifest.finished(job) or manifest.held_back(job)
        if job.follows is not None and job.follows not in records:
            earlier = None  # the first view runs again: its style reference may change
        if earlier is not None:
            if earlier["status"] == LEAKING:
                records[job.name] = {**earlier, "note": _SAME_LEAK}
            else:
                records[job.name] = {**earlier, "status": "skipped"}
            manifest.clips[job.name] = records[job.name]
        else:
            manifest.clips[job.name] = {
                **manifest.clips.get(job.name, {}),
                "status": "pending",
                "key": job.key,
            }
    manifest.save()
    return records


def _submit(
    client: Client,
    todo: list[ClipJob],
    records: dict[str, dict[str, Any]],
    retries: int,
    stop_event: str,
) -> dict[Any, str]:
    """One task per clip; a view of a group depends on its first view's task."""
    gpus = gpu_workers(client)
    gpu = {job.name: needs_gpu(str(job.settings.get("device", "auto")), gpus) for job in todo}
    submitted: dict[str, Any] = {}
    futures: dict[Any, str] = {}
    for job in todo:  # input order: a group's first view is submitted before the others
        reference: Any = None
        if job.follows is not None:
            reference = submitted.get(job.follows) or records.get(job.follows)
        future = client.submit(
            anonymize_job,
            job,
            reference,
            stop_event,
            key=f"clip-{job.name}-{job.key}-{time.time_ns()}",
            retries=retries,
            pure=False,
            resources={"GPU": 1} if gpu[job.name] else None,
        )
        submitted[job.name] = future
        futures[future] = job.name
    # Hold each future only until collected (the caller pops it): a held result pins its
    # worker's memory, and a result lost with its worker would be computed again.
    return futures


def _collect_all(
    client: Client,
    futures: dict[Any, str],
    plan: BatchPlan,
    manifest: BatchManifest,
    records: dict[str, dict[str, Any]],
    poll: float,
    stop: _StopRequest,
) -> ProgressGenerator[None]:
    """Record each clip as its task ends; yield progress then and every ``poll`` seconds."""
    from distributed import wait

    by_name = {job.name: job for job in plan.jobs}
    total = len(plan.jobs)

    def status(last: dict[str, Any] | None = None) -> BatchStatus:
        counts = {**dict.fromkeys(_COUNTED, 0), **status_counts(records)}
        keys = {f.key for f in futures}
        running = sum(1 for ks in client.processing().values() for k in ks if k in keys)
        waiting = total - len(records) - running
        return BatchStatus(**counts, running=running, waiting=waiting, last=last)

    tick = time.perf_counter()
    yield Progress("batch", len(records), total, 0.0, status())
    while futures:
        if stop.due():
            for name in _drop_queued(client, futures):
                records[name] = base_record(
                    by_name[name], status="cancelled", note="stopped before it started"
                )
                manifest.record(name, records[name])
        try:
            done, _ = wait(list(futures), timeout=poll, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        for future in done:
            name = futures.pop(future)
            records[name] = _collect(future, by_name[name])
            manifest.record(name, records[name])
            now = time.perf_counter()
            yield Progress("batch", len(records), total, now - tick, status(records[name]))
            tick = now
        if not done:
            yield Progress("batch", len(records), total, 0.0, status())


def _drop_queued(client: Client, futures: dict[Any, str]) -> list[str]:
    """Cancel the tasks no worker has started (they resume on the next run); their names."""
    running = {k for keys in client.processing().values() for k in keys}
    queued = [f for f in futures if f.key not in running and f.status == "pending"]
    for future in queued:
        future.cancel()
    return [futures.pop(future) for future in queued]


def _collect(future: Any, job: ClipJob) -> dict[str, Any]:
    """A finished future's record; a task that failed for good becomes a ``failed`` one."""
    if future.status == "finished":
        return future.result()
    exc = future.exception()
    return base_record(job, error=f"{type(exc).__name__}: {one_line(exc, job)}")


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
    require_distributed()
    from distributed import Client

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
    cluster = _local_cluster(n, gpu)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _local_cluster(workers: int, gpu: bool):
    import dask
    from distributed import LocalCluster

    # No heartbeat deadline: dask drops a worker that misses heartbeats for 5 minutes, and a
    # worker on a loaded machine (a clip holding the GIL, swapping) can, so the same batch
    # would fail or not depending on machine speed. A local worker that really dies is
    # seen at once by its nanny; a hung one is the user's to stop.
    with dask.config.set({"distributed.scheduler.worker-ttl": None}):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            resources={"GPU": 1} if gpu else None,
        )


def local_gpu(plan: BatchPlan) -> bool:
    """Should a local cluster declare GPUs? Yes when CUDA is here and some clip may use it."""
    devices = {str(job.settings.get("device", "auto")) for job in plan.jobs}
    if devices <= {"cpu", "mps"}:
        return False
    import torch

    return torch.cuda.is_available()
