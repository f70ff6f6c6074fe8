"""A run checks its own privacy (issue 12): the identity gate on the anchor before the clip
is translated, and the identity audit of the result, through the CLI and the pipeline, on
a real talking-head clip with the tiny random models."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace

import numpy as np
import pytest

import napari_diffslva.engine.translate as engine_translate
from napari_diffslva.audit.gate import LEAK, NO_FACE, PASSED
from napari_diffslva.cli import main
from napari_diffslva.engine.models import load_models
from napari_diffslva.errors import Cancelled
from napari_diffslva.pipeline import AnonymizeSettings, anonymize, anonymize_clip
from napari_diffslva.prepare.faces import detect_faces, face_landmarks
from napari_diffslva.prepare.pipeline import prepare_clip
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder
from napari_diffslva.testing.leaks import anchor_as, original_anchor, original_clip, pasted_face
from napari_diffslva.video import read_frames


@pytest.fixture(scope="module")
def tiny(tiny_flat):
    """The tiny models at a working size where a face survives the round trip."""
    return tiny_flat(short_side=256, steps=2, prompt="a person is talking")


@pytest.fixture(scope="module")
def clip(clip_head):
    """6 frames of a real talking head (a face of about 200 px)."""
    return clip_head("face_talking.mp4", 6)


def _cli(tiny, clip, out, *extra):
    args = ["anonymize", str(clip), "-o", str(out)]
    for key, value in tiny.items():
        flag = f"--{key.replace('_', '-')}"
        args += [flag] if value is True else [flag, str(value)]
    return main(args + list(extra))


def test_translate_anchor_gives_the_clips_anchor_frame(tiny, clip, tmp_path):
    settings = AnonymizeSettings.from_flat(tiny)
    prepared = run_to_end(prepare_clip(clip, tmp_path / "run", settings.prepare))
    engine = replace(settings.engine, anchor=prepared.anchor)
    models = load_models(engine)
    alone = engine_translate.translate_anchor(prepared, models, engine)
    first = next(engine_translate.translate_clip(prepared, models, engine))
    assert first.payload[0] == prepared.anchor and np.array_equal(alone, first.payload[1])


def test_tiny_models_give_no_face_and_the_run_goes_on(tiny, clip, tmp_path, capsys):
    out = tmp_path / "anon.mp4"
    assert _cli(tiny, clip, out, "--short-side", "64") == 0
    printed = capsys.readouterr().out
    assert "no face found in the new anchor, the run goes on" in printed
    assert "self-audit: 0 of 6 frames with the signer's face still look like" in printed
    assert re.search(r"UNet evaluations per frame, peak memory \(RSS\) [1-9]\d* MB", printed)
    record = RunFolder(tmp_path / "anon.diffslva-run").read_privacy()
    assert record["gate"]["verdict"] == NO_FACE and len(record["gate"]["tries"]) == 1
    assert record["self_audit"]["leaking"] is False
    sidecar = json.loads((tmp_path / "anon.mp4.json").read_text())["privacy"]
    assert sidecar["gate"]["seed"] == 0 and "key" not in sidecar["gate"]
    assert sidecar["self_audit"]["summary"]["frames_with_original_face"] == 6
    assert sidecar["face_control"] == "sketch" and sidecar["safe_edges"] is True


def test_an_anchor_that_stays_the_signer_stops_the_run(tiny, clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(engine_translate, "translate_anchor", original_anchor)
    out = tmp_path / "anon.mp4"
    assert _cli(tiny, clip, out, "--seed", "5") == 3
    err = capsys.readouterr().err
    assert "is still the signer with every seed tried (5, 6, 7" in err
    assert "--prompt" in err and "--strength, now 0.75" in err and "--gate-tries" in err
    run = RunFolder(tmp_path / "anon.diffslva-run")
    assert not out.exists() and not run.frames_dir("anonymized").exists()  # nothing translated
    gate = run.read_privacy()["gate"]
    assert gate["verdict"] == LEAK and [t["seed"] for t in gate["tries"]] == [5, 6, 7]
    assert all(t["distance"] < 0.6 for t in gate["tries"])


@pytest.fixture(scope="module")
def biden(real_clip):
    photo = read_frames(real_clip("faces/biden_1.jpg"))[0]
    return photo, face_landmarks(photo, max(detect_faces(photo), key=lambda b: b.area))


def test_a_leaking_seed_is_retried_and_the_clip_uses_the_next(
    tiny, clip, biden, tmp_path, monkeypatch
):
    def looks(seed, inputs, i):  # the signer on seed 0, another real person on seed 1
        return inputs.source_frame(i) if seed == 0 else pasted_face(*biden)(seed, inputs, i)

    monkeypatch.setattr(engine_translate, "translate_anchor", anchor_as(looks))
    settings = AnonymizeSettings.from_flat(tiny)
    result = run_to_end(anonymize(clip, tmp_path / "anon.mp4", settings=settings))
    assert result.gate.verdict == PASSED and result.gate.seeds == [0, 1]
    assert result.gate.distances[0] < 0.6 < result.gate.distances[1]
    assert RunFolder(result.run_dir).read_settings("anonymize")["seed"] == 1
    assert result.output.exists() and not result.leaking
    # a resumed run reuses the gate's answer: the anchor is not translated again
    monkeypatch.setattr(engine_translate, "translate_anchor", lambda *a, **k: 1 / 0)
    again = run_to_end(
        anonymize(clip, tmp_path / "anon.mp4", settings=settings, resume=True, overwrite=True)
    )
    assert again.gate == result.gate


def test_a_leaking_result_is_held_back_with_fail_on_leak(tiny, clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(engine_translate, "translate_clip", original_clip)
    out = tmp_path / "anon.mp4"
    assert _cli(tiny, clip, out, "--fail-on-leak", "--no-self-audit") == 3  # audits anyway
    captured = capsys.readouterr()
    assert "held back" in captured.err and "self-audit: 6 of 6 frames" in captured.out
    held = RunFolder(tmp_path / "anon.diffslva-run").held_back_export(out)
    assert held.name == "LEAKING-IDENTITY-anon.mp4"
    assert not out.exists() and held.exists()
    sidecar = json.loads(held.with_name(held.name + ".json").read_text())
    assert sidecar["privacy"]["self_audit"]["leaking"] is True
    assert sidecar["privacy"]["self_audit"]["leak_frames"] == list(range(6))
    assert not list(tmp_path.glob(".partial*")) and not list(held.parent.glob(".partial*"))
    # without --fail-on-leak the result is exported, with a warning
    assert _cli(tiny, clip, tmp_path / "plain.mp4") == 0
    assert (tmp_path / "plain.mp4").exists() and "warning" in capsys.readouterr().err


def test_self_audit_off_says_what_is_lost(tiny, clip, tmp_path, capsys):
    off = ("--no-self-audit", "--gate-tries", "0", "--short-side", "64")
    assert _cli(tiny, clip, tmp_path / "anon.mp4", *off) == 0
    printed = capsys.readouterr().out
    assert "self-audit off" in printed and "identity gate off" in printed


def test_a_stop_during_the_gate_lands_within_one_step(tiny, clip, tmp_path, count_steps):
    """The gate's anchor translation honours the run's stop request like the clip does:
    nothing is translated and nothing recorded; the next run gates again and finishes."""
    flat = {**tiny, "short_side": 64, "steps": 4}
    settings = AnonymizeSettings.from_flat(flat)
    assert settings.engine.steps - settings.engine.start_step == 3
    steps = count_steps(flat)
    stop = threading.Event()
    steps.at(2, stop.set)  # inside the gate's anchor translation, one step before its end
    run_dir = tmp_path / "run"
    with pytest.raises(Cancelled):
        run_to_end(anonymize_clip(clip, run_dir, settings, should_stop=stop.is_set))
    assert steps.calls == 2
    run = RunFolder(run_dir)
    assert "gate" not in run.read_privacy() and not run.frames_dir("anonymized").exists()
    result = run_to_end(anonymize_clip(clip, run_dir, settings, resume=True))
    assert result.gate.verdict == NO_FACE and len(run.manifest("final")["done"]) == 6
