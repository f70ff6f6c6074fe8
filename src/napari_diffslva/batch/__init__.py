"""Corpus-scale anonymization: one dask task per clip, resumable, with a results manifest.

One module per concept: :mod:`.discovery` (which clips, their names), :mod:`.config`
(config files and the groups CSV), :mod:`.plan` (every clip's output, run folder,
settings and group, all checked before work starts), :mod:`.job` (one clip on a worker),
:mod:`.manifest` (``batch.json``) and :mod:`.run` (the dask run). What a group of camera
views shares, and what that does and does not make consistent, is in ``docs/batch.md``.

Qt-free and napari-free; dask.distributed is imported only by the functions that run a
batch.
"""

from __future__ import annotations

from .config import read_config, read_groups_csv
from .discovery import OUTPUT_SUFFIX, clip_names, content_hash, discover_clips
from .job import anonymize_job
from .manifest import FINISHED, MANIFEST, BatchManifest
from .plan import GROUP_SHARED, RUNS_DIR, BatchPlan, ClipJob, plan_batch
from .run import (
    BatchResult,
    BatchStatus,
    batch_client,
    gpu_workers,
    local_gpu,
    needs_gpu,
    run_batch,
)

__all__ = [
    "FINISHED",
    "GROUP_SHARED",
    "MANIFEST",
    "OUTPUT_SUFFIX",
    "RUNS_DIR",
    "BatchManifest",
    "BatchPlan",
    "BatchResult",
    "BatchStatus",
    "ClipJob",
    "anonymize_job",
    "batch_client",
    "clip_names",
    "content_hash",
    "discover_clips",
    "gpu_workers",
    "local_gpu",
    "needs_gpu",
    "plan_batch",
    "read_config",
    "read_groups_csv",
    "run_batch",
]
