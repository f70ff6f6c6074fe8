"""Batch anonymization on dask.distributed: real clips, tiny random-weight models.

One LocalCluster (two worker processes) serves the whole module. The main run anonymizes
three real clips plus a corrupt one while a worker is killed mid-clip; its outputs must be
bit-identical (decoded) to in-process single-clip runs, and a rerun must do no work.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from napari_diffslva.batch import (
    batch_client,
    clip_names,
    discover_clips,
    plan_batch,
    read_config,
    read_groups_csv,
    run_batch,
)
from napari_diffslva.errors import SettingsError, VideoError
from napari_diffslva.export import write_video
from napari_diffslva.pipeline import AnonymizeSettings, anonymize
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder
from napari_diffslva.video import probe, read_frames

SOURCES = {"house": "asl_house.gif", "different": "asl_different.gif", "soup": "sl_soup.mp4"}
FRAMES = 5


def _cut(src: Path, dst: Path, frames: int = FRAMES) -> Path:
    return write_video(read_frames(src, 0, frames), dst, rate=probe(src).rate)


@pytest.fixture(scope="module")
def tiny(tiny_flat) -> dict:
    return tiny_flat(steps=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_clip) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, source in SOURCES.items():
        _cut(real_clip(source), folder / f"{name}.mp4")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"not a video" * 50)
    return folder


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny) -> Path:
    """Base settings plus a per-clip override (the face module on for one clip)."""
    path = tmp_path_factory.mktemp("config") / "settings.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in tiny.items()]
    lines += ["", '[clips."house"]', 'face_module = "warp"']
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def client():
    with batch_client(workers=2) as c:
        yield c


def _single_run(video: Path, flat: dict, out: Path, style_reference=None) -> np.ndarray:
    """The finished frames of an in-process run (lossless, from its run folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_to_end(
        anonymize(
            video, out, settings=AnonymizeSettings.from_flat(flat), style_reference=style_reference
        )
    )
    return _final_frames(result.run_dir)


def _final_frames(run_dir: Path) -> np.ndarray:
    """Finished frames as stored (PNG): H.264 re-encodes of equal frames can differ by a
    few grey levels, so clip equality is checked on the lossless frames."""
    run = RunFolder(run_dir)
    return np.stack([run.read_frame("final", i) for i in sorted(run.manifest("final")["done"])])


class _KillOneWorker:
    """Progress callback: SIGKILL the worker of a clip once that clip has translated frames."""

    def __init__(self, client, plan) -> None:
        self.client, self.plan = client, plan
        self.killed: tuple[str, int] | None = None
        self.kept: dict[Path, int] = {}  # frames finished before the kill, with their mtimes

    def __call__(self, event) -> None:
        if self.killed is not None or event.payload.running == 0:
            return
        for worker, keys in self.client.processing().items():
            for key in keys:
                job = next((j for j in self.plan.jobs if f"clip-{j.name}-" in str(key)), None)
                if job is None:
                    continue
                run = RunFolder(job.run_dir)
                done = run.manifest("anonymized")["done"]
                if 1 <= len(done) < FRAMES:
                    pid = self.client.run(os.getpid, workers=[worker])[worker]
                    os.kill(pid, signal.SIGKILL)
                    self.killed = (job.name, len(done))
                    self.kept = {
                        p: p.stat().st_mtime_ns
                        for p in (run.frame_path("anonymized", i) for i in done)
                    }
                    return


@pytest.fixture(scope="module")
def first_run(client, corpus, config, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("out")
    base, per_clip = read_config(config)
    plan = plan_batch([corpus], outdir, settings=base, overrides=per_clip)
    killer = _KillOneWorker(client, plan)
    started = time.perf_counter()
    result = run_to_end(run_batch(plan, client, poll=0.05), killer)
    return plan, result, killer, time.perf_counter() - started


def test_batch_matches_single_runs_despite_a_killed_worker(first_run, corpus, tiny, tmp_path):
    plan, result, killer, _ = first_run
    assert killer.killed is not None, "no worker was killed mid-clip: recovery went untested"
    records = result.records
    assert {n: r["status"] for n, r in records.items()} == {
        "house": "done",
        "different": "done",
        "soup": "done",
        "broken": "failed",
    }
    # the killed clip resumed from its run folder on the retry instead of restarting:
    # the frames it had finished were kept, not computed again
    name, finished_before = killer.killed
    assert records[name]["resumed_frames"] >= finished_before
    assert {p: p.stat().st_mtime_ns for p in killer.kept} == killer.kept
    assert records["house"]["stages"].get("face", 0) > 0
    for name in SOURCES:
        flat = {**tiny, "face_module": "warp"} if name == "house" else tiny
        expected = _single_run(corpus / f"{name}.mp4", flat, tmp_path / f"{name}.mp4")
        got = _final_frames(next(j.run_dir for j in plan.jobs if j.name == name))
        assert got.shape == expected.shape == (FRAMES, *expected.shape[1:])
        assert read_frames(records[name]["output"]).shape == got.shape
        assert np.array_equal(got, expected), f"{name}: batch output differs from a single run"
    on_disk = json.loads(plan.manifest_path.read_text())
    assert on_disk["clips"] == json.loads(json.dumps(records))
    assert on_disk["summary"] == {"done": 3, "failed": 1}


def test_corrupt_clip_is_reported_in_one_line(first_run, corpus):
    _, result, _, _ = first_run
    rec = result.records["broken"]
    assert rec["output"] is None
    assert "\n" not in rec["error"] and "broken.mp4" in rec["error"]
    assert not (Path(result.manifest).parent / "broken.mp4").exists()


def test_rerun_does_no_work(first_run, client, corpus, config):
    plan, first, _, _ = first_run
    watched = [Path(r["output"]) for r in first.records.values() if r["output"]]
    for job in plan.jobs:
        watched += sorted(RunFolder(job.run_dir).frames_dir("final").glob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in watched}
    assert len(before) == 3 + 3 * FRAMES
    base, per_clip = read_config(config)
    again = plan_batch([corpus], plan.outdir, settings=base, overrides=per_clip)
    result = run_to_end(run_batch(again, client, poll=0.05))
    assert {n: r["status"] for n, r in result.records.items()} == {
        "house": "skipped",
        "different": "skipped",
        "soup": "skipped",
        "broken": "failed",
    }
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    # a changed setting makes a clip count as unfinished again
    changed = plan_batch([corpus], plan.outdir, settings={**base, "seed": 1}, overrides=per_clip)
    assert not set(j.key for j in changed.jobs) & set(j.key for j in again.jobs)
    # a setting given at its default is no change
    assert "gate_tries" not in base and "gate_tries" not in str(per_clip)
    default = {"gate_tries": AnonymizeSettings().gate_tries}
    same = plan_batch([corpus], plan.outdir, settings={**base, **default}, overrides=per_clip)
    assert [j.key for j in same.jobs] == [j.key for j in again.jobs]


def test_cli_on_a_running_scheduler(first_run, client, corpus, config, capsys):
    from napari_diffslva.cli import main

    plan = first_run[0]
    code = main(
        [
            "batch",
            str(corpus),
            "-o",
            str(plan.outdir),
            "--config",
            str(config),
            "--scheduler",
            client.scheduler.address,
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1  # the corrupt clip failed
    assert (data["done"], data["skipped"], data["failed"]) == (0, 3, 1)
    code = main(  # a scheduler brings its own workers: a usage error
        [
            "batch",
            str(corpus),
            "-o",
            str(plan.outdir),
            "--workers",
            "1",
            "--scheduler",
            client.scheduler.address,
        ]
    )
    assert code == 2
    assert "not allowed with argument --workers" in capsys.readouterr().err


def test_group_shares_seed_anchor_and_style_and_hash_names_hide_sources(
    client, real_clip, tiny, tmp_path
):
    from napari_diffslva.engine.style import StyleReference

    tiny = {**tiny, "steps": 5}  # the last step is an AdaIN step: there is a style to share
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _cut(real_clip("asl_house.gif"), corpus / "utt1_camA.mp4", 5)
    _cut(real_clip("asl_house.gif"), corpus / "utt1_camB.mp4", 8)  # own middle anchor: 4
    outdir = tmp_path / "out"
    plan = plan_batch(
        [corpus],
        outdir,
        settings=tiny,
        overrides={"utt1_camA": {"seed": 7}},
        group_by=r"^(utt\d+)_cam",
        hash_names=True,
    )
    first, second = plan.jobs
    assert second.follows == first.name and second.settings["seed"] == 7
    records = run_to_end(run_batch(plan, client, poll=0.05)).records
    a, b = records[first.name], records[second.name]
    assert a["status"] == b["status"] == "done"
    assert b["anchor"] == a["anchor"] == 2 and b["anchor_from"] == first.name
    reference = StyleReference.load(RunFolder(first.run_dir))
    assert reference is not None and b["style_reference"] == reference.key
    assert "style_reference" not in a
    expected = _single_run(
        corpus / "utt1_camB.mp4",
        {**tiny, "seed": 7, "anchor": 2},
        tmp_path / "single" / "b.mp4",
        style_reference=reference,
    )
    assert np.array_equal(_final_frames(second.run_dir), expected)
    assert read_frames(b["output"]).shape == expected.shape
    names = [p.relative_to(outdir).as_posix() for p in outdir.rglob("*")]
    assert names and not any("utt1" in n or "cam" in n for n in names)
    text = (outdir / "batch.json").read_text() + "".join(
        p.read_text() for p in outdir.glob("*.json")
    )
    assert "utt1" not in text and "camA" not in text


def test_group_members_cannot_disagree_on_the_person(tmp_path, real_clip, tiny):
    for view in ("utt1_camA", "utt1_camB"):
        _cut(real_clip("sl_soup.mp4"), tmp_path / f"{view}.mp4", 2)
    with pytest.raises(SettingsError, match="utt1_camB: seed differs"):
        plan_batch(
            [tmp_path],
            tmp_path / "out",
            settings=tiny,
            overrides={"utt1_camB": {"seed": 3}},
            group_by=r"^(utt\d+)_cam",
        )


def test_discovery_names_and_groups_csv(tmp_path, real_clip):
    corpus = tmp_path / "corpus"
    for cam in ("cam1", "cam2"):
        (corpus / cam).mkdir(parents=True)
        _cut(real_clip("sl_soup.mp4"), corpus / cam / "utt01.mp4", 2)
    images = corpus / "cam1" / "utt02"
    images.mkdir()
    for i, frame in enumerate(read_frames(real_clip("sl_soup.mp4"), 0, 2)):
        import cv2

        cv2.imwrite(str(images / f"{i:03d}.png"), frame[..., ::-1])
    out = corpus / "out"  # an output folder inside the corpus is never an input
    out.mkdir()
    _cut(real_clip("sl_soup.mp4"), out / "old.mp4", 2)
    clips = discover_clips([corpus])
    assert clip_names(clips) == ["cam1/utt01", "cam1/utt02", "cam2/utt01", "out/old"]
    clips = discover_clips([corpus], exclude=out)
    assert clip_names(clips) == ["cam1/utt01", "cam1/utt02", "cam2/utt01"]
    assert clip_names(discover_clips([str(corpus / "cam*" / "*.mp4")])) == [
        "cam1/utt01",
        "cam2/utt01",
    ]
    with pytest.raises(VideoError, match="no file or folder matches"):
        discover_clips([str(corpus / "*.avi")])

    table = tmp_path / "groups.csv"
    table.write_text(
        "clip,group,seed,prompt,anchor\ncam1/utt01,u1,5,a man,\ncam2/utt01,u1,,,1\nmissing,u9,,,\n"
    )
    groups, overrides = read_groups_csv(table)
    assert groups == {"cam1/utt01": "u1", "cam2/utt01": "u1", "missing": "u9"}
    assert overrides == {"cam1/utt01": {"seed": 5, "prompt": "a man"}, "cam2/utt01": {"anchor": 1}}
    plan = plan_batch(
        [corpus / "cam1" / "utt01.mp4", corpus / "cam2" / "utt01.mp4"],
        tmp_path / "o",
        settings={"steps": 2},
        groups_csv=table,
    )
    one, two = plan.jobs
    assert two.settings["seed"] == 5 and two.settings["prompt"] == "a man"
    assert two.follows is None  # its own anchor was given explicitly
    assert any("missing" in note for note in plan.notes)


def test_config_reads_toml_tables_and_sidecars(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('steps = 3\n[clips."utt01"]\nprompt = "an old man"\n')
    assert read_config(toml) == ({"steps": 3}, {"utt01": {"prompt": "an old man"}})
    sidecar = tmp_path / "out.mp4.json"
    sidecar.write_text(
        json.dumps(
            {
                "tool": "napari-diffslva",
                "source": {"frames": 3},
                "anonymize": {"steps": 4, "face_weights": None},
            }
        )
    )
    assert read_config(sidecar) == ({"steps": 4}, {})
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    base, _ = read_config(bad)
    with pytest.raises(SettingsError, match="stepz"):
        plan_batch([tmp_path], tmp_path / "o", settings=base)
