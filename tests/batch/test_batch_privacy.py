"""What a batch does with privacy per clip (issue 12), on real clips with the tiny models
and a forced leak (as in tests/test_privacy.py): every "translated" frame is the original
one, so the self-audit finds the signer everywhere; one clip's anchor is the original on
every seed, so its identity gate refuses. An in-process cluster lets the test patch the
engine the workers use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import napari_diffslva.engine.translate as engine_translate
from napari_diffslva.batch import plan_batch, run_batch
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder, read_json
from napari_diffslva.testing.leaks import original_clip

REFUSED_SEED = 100  # the seeds from here on give the original anchor back


@pytest.fixture
def leaky_engine(monkeypatch):
    """The clip's frames stay the originals; anchors of REFUSED_SEED and up too."""
    real_anchor = engine_translate.translate_anchor

    def translate_anchor(inputs, models, settings, **kwargs):
        if settings.seed >= REFUSED_SEED:
            return inputs.source_frame(settings.anchor_index(inputs.num_frames))
        return real_anchor(inputs, models, settings, **kwargs)

    monkeypatch.setattr(engine_translate, "translate_anchor", translate_anchor)
    monkeypatch.setattr(engine_translate, "translate_clip", original_clip)


@pytest.fixture
def corpus(clip_head, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(clip_head("face_talking.mp4", 4), folder / "leaky.mp4")
    shutil.copy(clip_head("face_talking.mp4", 5), folder / "warned.mp4")
    shutil.copy(clip_head("sl_soup.mp4", 4), folder / "refused.mp4")
    return folder


def test_leaking_clips_are_held_back_and_gate_refusals_fail(
    in_process_client, corpus, tiny_flat, tmp_path, leaky_engine, capsys
):
    base = tiny_flat(steps=2)  # at 64 px the tiny models' anchor holds no face: it passes
    outdir = tmp_path / "out"
    refused = {"refused": {"seed": REFUSED_SEED}}
    plan = plan_batch([corpus], outdir, settings=base, overrides=refused)
    first = run_to_end(run_batch(plan, in_process_client, poll=0.05)).records
    # without fail_on_leak a leaking result is exported, and its record says it leaks
    assert first["leaky"]["status"] == "done" and (outdir / "leaky.mp4").is_file()
    assert first["leaky"]["self_audit"] == {
        "leaking": True,
        "leak_frames": 4,
        "face_frames": 4,
        "no_face_frames": 0,
    }
    assert first["leaky"]["identity_gate"]["verdict"] == "no face found"

    # with fail_on_leak the same result is held back: out of the output folder (the
    # earlier export there goes too), into its run folder, marked in batch.json
    warned = {"warned": {"fail_on_leak": False}}
    plan = plan_batch(
        [corpus], outdir, settings={**base, "fail_on_leak": True}, overrides={**refused, **warned}
    )
    records = run_to_end(run_batch(plan, in_process_client, poll=0.05)).records
    leaky = records["leaky"]
    job = next(j for j in plan.jobs if j.name == "leaky")
    assert leaky["status"] == "leaking" and leaky["output"] is None
    assert leaky["held_back"] == f"{job.run_dir}/LEAKING-IDENTITY-leaky.mp4"
    assert leaky["self_audit"]["leak_frames"] == 4
    held = Path(leaky["held_back"])
    sidecar = json.loads(held.with_name(held.name + ".json").read_text())
    assert sidecar["privacy"]["self_audit"]["leaking"] is True
    assert sorted(p.name for p in outdir.glob("leaky*")) == []
    # fail_on_leak off for it (at its default): its settings are the first run's, so its
    # exported result stands
    assert records["warned"]["status"] == "skipped"
    assert (outdir / "warned.mp4").is_file() and records["warned"]["self_audit"]["leaking"]

    # a gate refusal is a failed clip with its one-line message; nothing was translated
    rec = records["refused"]
    assert rec["status"] == "failed" and rec["output"] is None and "\n" not in rec["error"]
    assert "still the signer with every seed tried (100, 101, 102" in rec["error"]
    assert rec["identity_gate"]["verdict"] == "leak"
    refused_run = RunFolder(next(j.run_dir for j in plan.jobs if j.name == "refused"))
    assert not (outdir / "refused.mp4").exists()
    assert not refused_run.frames_dir("anonymized").exists()
    assert read_json(plan.manifest_path)["summary"] == {
        "skipped": 1,
        "leaking": 1,
        "failed": 1,
        "gate_refused": 1,
    }

    # run again unchanged, the held-back clip is not redone (its result would be the same)
    held_at = held.stat().st_mtime_ns
    again = run_to_end(run_batch(plan, in_process_client, poll=0.05)).records["leaky"]
    assert again["status"] == "leaking" and again["held_back"] == leaky["held_back"]
    assert "not run again" in again["note"] and held.stat().st_mtime_ns == held_at

    # the CLI counts them and says where the held-back result is; exit 3 without failures
    from napari_diffslva.cli import main

    address = in_process_client.scheduler.address
    config = tmp_path / "settings.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in {**base, "fail_on_leak": True}.items()]
    lines += ['[clips."refused"]', f"seed = {REFUSED_SEED}", '[clips."warned"]']
    config.write_text("\n".join([*lines, "fail_on_leak = false", ""]))
    args = ["batch", str(corpus / "leaky.mp4"), "-o", str(outdir), "--config", str(config)]
    assert main([*args, "--scheduler", address]) == 3
    out = capsys.readouterr().out
    assert "1 held back as leaking" in out
    assert f"leaking leaky: 4 of 4 frames still look like the signer; held back in {held}" in out
    assert held.stat().st_mtime_ns == held_at  # the same settings: not redone
    args[1] = str(corpus)
    assert main([*args, "--scheduler", address]) == 1  # the refused clip failed
    out = capsys.readouterr().out
    assert (
        "0 done, 1 skipped, 1 failed (1 refused by the identity gate), 1 held back as leaking"
        in out
    )
