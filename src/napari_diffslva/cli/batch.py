"""``napari-diffslva batch INPUTS... -o OUTDIR``: a whole corpus on dask, resumable.

Exit code 0 when every clip is done or skipped, 1 when some failed (an identity gate
refusal included; see ``OUTDIR/batch.json``), else 3 when some result was held back as
still showing the signer (``leaking``, with ``--fail-on-leak``), 2 on a usage error before
any work starts, 130 when Ctrl-C stopped it (running clips stop within one denoising step;
rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..progress import Progress, run_to_end
from ._output import print_json
from .anonymize import add_settings_arguments, given_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="anonymize many clips on a dask cluster (resumable)",
        description="Anonymize every clip of INPUTS into OUTDIR, one dask task "
        "per clip; rerun the same command to resume. See docs/batch.md.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders (searched recursively) or glob patterns",
    )
    p.add_argument("-o", "--outdir", required=True, help="output folder (gets batch.json)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="use a running dask scheduler, e.g. tcp://host:8786"
    )
    where.add_argument(
        "--workers", type=int, metavar="N", help="local worker processes (default 1)"
    )
    p.add_argument(
        "--group-by",
        metavar="REGEX",
        help="clips whose names give the same first "
        "group of REGEX are views of one utterance, e.g. '^(.+)_cam\\d+$'",
    )
    p.add_argument(
        "--groups",
        metavar="CSV",
        help="CSV with columns clip,group (and any setting name as a per-clip override column)",
    )
    p.add_argument(
        "--hash-names",
        action="store_true",
        help="name outputs by content hash (no source names in OUTDIR)",
    )
    p.add_argument(
        "--runs-dir",
        metavar="DIR",
        help="run folders (default OUTDIR/.diffslva-runs); they hold data derived "
        "from the originals: do not publish them",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries of a clip that fails unexpectedly (default 2)",
    )
    p.add_argument("--audit", action="store_true", help="audit each output (adds a summary)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    add_settings_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import batch_client, local_gpu, plan_batch, read_config, run_batch
    from ..project import check_writable

    base, per_clip = read_config(args.config) if args.config else ({}, {})
    base.update(given_settings(args))
    plan = plan_batch(
        args.inputs,
        args.outdir,
        settings=base,
        overrides=per_clip,
        group_by=args.group_by,
        groups_csv=args.groups,
        hash_names=args.hash_names,
        audit=args.audit,
        runs_dir=args.runs_dir,
    )
    check_writable(plan.outdir)  # a read-only output folder fails before the cluster starts
    for note in plan.notes:
        print(f"napari-diffslva batch: note: {note}", file=sys.stderr)
    gpu = args.scheduler is None and local_gpu(plan)
    bar = None if args.json else ClipBar()
    try:
        with batch_client(args.scheduler, args.workers, gpu=gpu) as client:
            # the stop request goes to run_batch, which passes it on to the running clips
            gen = run_batch(plan, client, retries=args.retries, should_stop=args.should_stop)
            result = run_to_end(gen, bar)
    finally:
        if bar is not None:
            bar.close()
    counts = result.counts()
    if args.json:
        print_json(result.to_dict())
    else:
        _print_summary(result, counts)
    if result.stopped:
        print(
            "napari-diffslva batch: interrupted; rerun the same command to resume", file=sys.stderr
        )
        return 130
    return 1 if counts["failed"] else 3 if counts["leaking"] else 0


def _print_summary(result, counts: dict[str, int]) -> None:
    """The counts, then one line per failed or held-back clip."""
    refused = counts["gate_refused"]
    print(
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
        f"{f' ({refused} refused by the identity gate)' if refused else ''}, "
        f"{counts['leaking']} held back as leaking, {counts['cancelled']} stopped "
        f"in {result.seconds:.0f} s; manifest {result.manifest}"
    )
    for name, rec in result.records.items():
        if rec["status"] in ("failed", "leaking"):
            print(f"  {rec['status']} {name}: {clip_problem(rec)}")


def clip_problem(rec: dict[str, Any]) -> str:
    """One line on a failed or held-back clip."""
    if rec["status"] != "leaking":
        return str(rec.get("error"))
    audit = rec.get("self_audit", {})
    note = f" ({rec['note']})" if rec.get("note") else ""
    return (
        f"{audit.get('leak_frames')} of {audit.get('face_frames')} frames still look like the "
        f"signer; held back in {rec.get('held_back')}{note}"
    )


class ClipBar:
    """A progress sink: one tqdm bar of clips on stderr, with the counts and each failure."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, event: Progress) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=event.total, desc="batch", unit="clip", file=sys.stderr, dynamic_ncols=True
            )
        s = event.payload
        self.bar.set_postfix(
            done=s.done,
            failed=s.failed,
            leaking=s.leaking,
            skipped=s.skipped,
            running=s.running,
            refresh=False,
        )
        self.bar.update(event.done - self.bar.n)
        if s.last is not None and s.last["status"] in ("failed", "leaking"):
            self.bar.write(f"{s.last['status']}: {clip_problem(s.last)}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
