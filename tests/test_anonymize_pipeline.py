"""The whole job (prepare, translate, face module, export) with the tiny random models."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from conftest import REAL_CLIPS, unet_calls
from napari_diffslva.cli import main
from napari_diffslva.errors import Cancelled, SettingsError
from napari_diffslva.pipeline import AnonymizeSettings, anonymize, anonymize_clip
from napari_diffslva.prepare.edges import choose_edge_model
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder
from napari_diffslva.video import probe, read_frames


@pytest.fixture(scope="module")
def tiny(tiny_flat):
    flat = tiny_flat(prompt="a person is signing")
    del flat["face_module"]  # these tests run the default face module unless they say
    return flat


@pytest.fixture(scope="module")
def short_clip(clip_head):
    """6 frames of a real clip under a corpus-style name (must not leak into exports)."""
    return clip_head("sl_soup.mp4", 6, "utterance_0042.mp4")


def test_anonymize_cli_json_sidecar_and_side_by_side(tiny, short_clip, tmp_path, capsys):
    out, sbs = tmp_path / "anon.mp4", tmp_path / "compare.mp4"
    args = ["anonymize", str(short_clip), "-o", str(out), "--json", "--side-by-side", str(sbs)]
    for key in ("model", "controlnet", "short_side", "steps", "prompt"):
        args += [f"--{key.replace('_', '-')}", str(tiny[key])]
    assert main(args + ["--offline", "--device", "cpu"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in (
        "frames",
        "rate",
        "output",
        "unet_evals_per_frame",
        "seconds_per_frame",
        "peak_memory_mb",
    ):
        assert key in d, key
    src, anon = probe(short_clip), probe(out)
    assert d["frames"] == anon.frames == src.frames == 6 and d["rate"] == "2997/100"
    assert (anon.width, anon.height) == (src.width, src.height) and anon.rate == src.rate
    assert 0 < d["unet_evals_per_frame"] <= 80
    assert probe(sbs).width == 2 * src.width
    sidecar = json.loads((tmp_path / "anon.mp4.json").read_text())
    assert sidecar["anonymize"]["prompt"] == "a person is signing"
    assert sidecar["source"]["frames"] == 6
    assert sidecar["edge_model"] == choose_edge_model("auto").identity  # the default path
    assert "utterance_0042" not in json.dumps(sidecar)  # no source name in exports
    assert b"utterance_0042" not in out.read_bytes()
    assert not np.array_equal(read_frames(out)[3], read_frames(short_clip)[3])


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_every_real_clip_keeps_frames_rate_and_size(tiny, real_clip, tmp_path, name):
    src = real_clip(name)
    # timing and size only: the self-audit (0.2 s a frame) is tested in test_privacy.py
    settings = AnonymizeSettings.from_flat(
        {**tiny, "steps": 2, "strength": 0.5, "face_module": "off", "self_audit": False}
    )
    result = run_to_end(anonymize(src, tmp_path / "out.mp4", settings=settings))
    a, b = probe(src), probe(result.output)
    assert b.frames == a.frames
    assert (b.width, b.height) == (a.width, a.height)
    np.testing.assert_allclose(b.timing.timestamps, a.timing.timestamps, atol=1e-3)
    assert b.duration == pytest.approx(a.duration, abs=1e-3)


def test_killed_run_resumes_to_the_same_clip(tiny, short_clip, tmp_path):
    settings = AnonymizeSettings.from_flat(tiny)
    full = run_to_end(anonymize(short_clip, tmp_path / "full.mp4", settings=settings))
    gen = anonymize(
        short_clip, tmp_path / "resumed.mp4", run_dir=tmp_path / "run", settings=settings
    )
    for event in gen:
        if event.stage == "translate" and event.done == 3:
            gen.close()  # killed mid-run
            break
    assert not (tmp_path / "resumed.mp4").exists()
    done_before = {p.name for p in (tmp_path / "run/frames/anonymized").glob("*.png")}
    assert len(done_before) == 3
    mtimes = {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / "run/frames/anonymized").glob("*.png")
    }
    run_to_end(
        anonymize(
            short_clip,
            tmp_path / "resumed.mp4",
            run_dir=tmp_path / "run",
            settings=settings,
            resume=True,
        )
    )
    for p in (tmp_path / "run/frames/anonymized").glob("*.png"):
        if p.name in mtimes:
            assert p.stat().st_mtime_ns == mtimes[p.name], "finished frame recomputed"
    from napari_diffslva.project import RunFolder

    a, b = RunFolder(full.run_dir), RunFolder(tmp_path / "run")
    for i in range(6):  # the finished frames are bit-identical (lossless PNGs) ...
        assert np.array_equal(a.read_frame("final", i), b.read_frame("final", i)), i
    # ... and so are the clips up to H.264 coding noise (x264 output can differ by a few
    # grey levels between two encodes of the same frames in one process)
    diff = np.abs(read_frames(full.output).astype(int) - read_frames(tmp_path / "resumed.mp4"))
    assert diff.mean() < 1.0


def test_resume_after_changing_the_control_maps_starts_over(tiny, short_clip, tmp_path):
    """Translated and final frames are keyed by the caches they were made from: resuming
    with another face-region treatment (or edge model, or flow) must not keep frames made
    from the old control maps."""
    flat = {**tiny, "face_module": "off", "self_audit": False, "gate_tries": 0}
    run_dir = tmp_path / "run"
    first = run_to_end(anonymize_clip(short_clip, run_dir, AnonymizeSettings.from_flat(flat)))
    assert first.stats["frames"] == 6
    same = run_to_end(
        anonymize_clip(short_clip, run_dir, AnonymizeSettings.from_flat(flat), resume=True)
    )
    assert same.stats["frames"] == 1  # nothing changed: only the anchor (its states) again
    from napari_diffslva.project import RunFolder

    run = RunFolder(run_dir)
    final_mtimes = [run.frame_path("final", i).stat().st_mtime_ns for i in range(6)]
    changed = AnonymizeSettings.from_flat({**flat, "safe_edges": False})
    again = run_to_end(anonymize_clip(short_clip, run_dir, changed, resume=True))
    assert again.stats["frames"] == 6  # other control maps: every frame translated again
    assert len(run.manifest("final")["done"]) == 6
    for i, before in enumerate(final_mtimes):  # and every final frame made again from them
        assert run.frame_path("final", i).stat().st_mtime_ns != before, i


def test_stop_lands_within_one_denoising_step_and_the_run_resumes(
    tiny, short_clip, tmp_path, count_steps
):
    # no identity gate: its anchor translation has steps of its own (test_privacy.py)
    flat = {**tiny, "face_module": "off", "gate_tries": 0}
    settings = AnonymizeSettings.from_flat(flat)
    anchor_steps, frame_steps = unet_calls(settings.engine)
    assert anchor_steps >= 3  # a stop after 2 steps of a pass is mid-pass
    steps = count_steps(flat)
    stop = threading.Event()
    asked_at = anchor_steps + frame_steps + 2  # 2 steps into the second translated frame
    steps.at(asked_at, stop.set)
    run_dir = tmp_path / "run"
    with pytest.raises(Cancelled):
        run_to_end(anonymize_clip(short_clip, run_dir, settings, should_stop=stop.is_set))
    assert steps.calls == asked_at  # the step in progress finished, no other started
    run = RunFolder(run_dir)
    done = run.manifest("anonymized")["done"]
    assert len(done) == 2 and not run.frames_dir("final").exists()
    kept = {i: run.frame_path("anonymized", i).stat().st_mtime_ns for i in done}

    steps.reset()
    result = run_to_end(anonymize_clip(short_clip, run_dir, settings, resume=True))
    assert result.frames == 6
    # the anchor is recomputed (it is not stored as state), finished frames are not, but
    # for any the engine reports it recomputed to rebuild attention states (none when the
    # first unfinished frame follows the anchor); their stored outputs are not rewritten
    rebuilt = result.stats["resumed_frames"]
    assert steps.calls == anchor_steps + frame_steps * (6 - 2 + rebuilt)
    assert result.stats["resume_mismatches"] == 0
    assert {i: run.frame_path("anonymized", i).stat().st_mtime_ns for i in done} == kept
    assert len(run.manifest("final")["done"]) == 6


def test_config_file_and_bad_keys(tiny, tmp_path, short_clip, capsys):
    cfg = tmp_path / "settings.toml"
    cfg.write_text(
        'prompt = "a superman in blue uniform is making gestures"\nseed = 3\nface_module = "off"\n'
    )
    s = AnonymizeSettings.from_file(cfg, steps=5)
    assert s.engine.seed == 3 and s.engine.steps == 5 and s.face_module == "off"
    assert "superman" in s.engine.prompt
    cfg.write_text("promt = 'typo'\n")
    with pytest.raises(SettingsError, match="promt"):
        AnonymizeSettings.from_file(cfg)
    code = main(["anonymize", str(short_clip), "-o", str(tmp_path / "x.mp4"), "--config", str(cfg)])
    assert code == 2 and "promt" in capsys.readouterr().err


def test_missing_model_offline_fails_fast_and_leaves_no_output(short_clip, tmp_path, capsys):
    start = time.perf_counter()
    code = main(
        [
            "anonymize",
            str(short_clip),
            "-o",
            str(tmp_path / "x.mp4"),
            "--offline",
            "--model",
            "nobody/no-such-model",
            "--short-side",
            "64",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and "Traceback" not in err
    assert time.perf_counter() - start < 60  # prepare runs first; no 25 s hub retries
    assert not (tmp_path / "x.mp4").exists()


def test_selftest_command(tmp_path, capsys):
    code = main(["selftest", "--frames", "4", "--json", "--save-models", str(tmp_path / "m")])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["passed"] and all(d["checks"].values())
    assert (tmp_path / "m" / "sd" / "model_index.json").is_file()
    assert (tmp_path / "m" / "controlnet" / "config.json").is_file()


def test_painted_mask_decides_where_the_face_module_blends(tiny, short_clip, tmp_path):
    """A mask painted in the Correct widget replaces the landmark blend region."""
    import cv2

    from napari_diffslva.prepare.pipeline import prepare_clip

    settings = AnonymizeSettings.from_flat({**tiny, "face_module": "warp"})
    run = tmp_path / "run"
    prepared = run_to_end(prepare_clip(short_clip, run, settings.prepare, stages=("faces",)))
    x0, y0, x1, y1 = prepared.track.boxes[4].astype(int)
    painted = np.zeros((240, 320), np.uint8)
    painted[y0 : (y0 + y1) // 2, x0:x1] = 255  # only the upper half of the face box
    (run / "masks").mkdir()
    cv2.imwrite(str(run / "masks" / "000004.png"), painted)
    run_to_end(anonymize(short_clip, tmp_path / "out.mp4", run_dir=run, settings=settings))
    from napari_diffslva.project import RunFolder

    rf = RunFolder(run)
    final = rf.read_frame("final", 4).astype(int)
    generated = cv2.resize(
        rf.read_frame("anonymized", 4), (320, 240), interpolation=cv2.INTER_CUBIC
    ).astype(int)
    changed = np.abs(final - generated).max(axis=2) > 8
    lower = np.zeros_like(changed)
    lower[(y0 + y1) // 2 + 8 : y1 + 20, x0:x1] = True
    assert changed[y0 + 4 : (y0 + y1) // 2 - 4, x0 + 4 : x1 - 4].mean() > 0.3
    assert changed[lower].mean() < 0.02  # nothing blended where the user did not paint
