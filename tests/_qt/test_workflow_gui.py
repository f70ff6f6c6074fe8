"""The whole napari workflow through the five dock widgets, on a real clip, tiny models.

Open the clip with our reader, prepare, correct a box and spread the change over a
range, move the anchor, anonymize (Cancel once, Resume), audit, export, and reopen the
run folder in a fresh viewer: every edit is back. The GUI must stay responsive while
the diffusion run works in the background.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from napari_diffslva._sample_data import sample_path
from napari_diffslva.export import write_video
from napari_diffslva.video import probe, read_frames

pytestmark = pytest.mark.gui
WAIT = 180_000  # ms; the machine is shared, keep generous
PLUGIN = "napari-diffslva"
TICK_MS = 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The first 6 frames of the bundled sample clip (real signer, 320x240, 25 fps)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    src = sample_path()
    write_video(read_frames(src, 0, 6), path, rate=probe(src).rate)
    return path


@pytest.fixture(scope="module")
def tiny_models(tiny_models_dir):
    """(sd folder, controlnet folder) of the session's tiny random-weight models."""
    return tiny_models_dir / "sd", tiny_models_dir / "controlnet"


def _dock(viewer, name):
    """Dock one of our widgets as the Plugins menu does (through napari.yaml)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _finish(qtbot, job):
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error


def _set_tiny_models(anonymize, tiny_models, steps: int) -> None:
    sd_dir, controlnet_dir = tiny_models
    anonymize.form.set_values(
        {
            "model": str(sd_dir),
            "controlnet": str(controlnet_dir),
            "offline": True,
            "steps": steps,
            "device": "cpu",
        }
    )


class _Ticks:
    """Counts Qt event-loop ticks: a frozen GUI shows as few ticks and a long gap."""

    def __init__(self, interval_ms: int = TICK_MS) -> None:
        from qtpy.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))
        self.timer.start()

    def stop(self) -> tuple[int, float]:
        """(ticks, longest gap in seconds)."""
        self.timer.stop()
        gaps = np.diff(self.times) if len(self.times) > 1 else np.array([np.inf])
        return len(self.times), float(gaps.max())


def test_full_workflow(make_napari_viewer, qtbot, clip, tiny_models, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(clip), plugin=PLUGIN)
    prepare, correct = _dock(viewer, "1 Prepare"), _dock(viewer, "2 Correct")
    anonymize, audit = _dock(viewer, "3 Anonymize"), _dock(viewer, "4 Audit and review")
    export = _dock(viewer, "5 Export")
    run_dir = tmp_path / "project"

    # 1 prepare (the opened layer is the original: found by content, not opened again)
    prepare.video.set_path(clip)
    prepare.run_dir.set_path(run_dir)
    prepare.form.set_values({"short_side": 64})
    prepare.prepare_button.click()
    _finish(qtbot, prepare.job)
    assert [layer.name for layer in viewer.layers].count("original") == 1
    track = correct.session.prepared.track
    assert not np.isnan(track.boxes).any()  # the detector found the signer on every frame

    # 2 correct: widen the box of frame 1 by 4 px each side, spread it over 1..3, anchor 4
    boxes = viewer.layers["face boxes"]
    data = [v.copy() for v in boxes.data]
    data[1][:, 2] += np.where(data[1][:, 2] > data[1][:, 2].mean(), 4, -4)
    boxes.data = data  # what dragging a corner with napari's select tool does
    correct.range_start.setValue(1)
    correct.range_stop.setValue(3)
    correct.buttons["apply_last_change_to_range"].click()
    viewer.dims.set_current_step(0, 4)
    correct.buttons["set_anchor"].click()
    edits = json.loads((run_dir / "edits.json").read_text())
    assert sorted(map(int, edits["boxes"])) == [1, 2, 3] and edits["anchor"]["frame"] == 4
    widened = track.boxes[2] + [-4, 0, 4, 0]  # (x0, y0, x1, y1)
    np.testing.assert_allclose(edits["boxes"]["2"], widened, atol=0.01)

    # 3 anonymize with tiny models: Cancel once the first frame arrived, then Resume
    _set_tiny_models(anonymize, tiny_models, steps=2)
    on_event = anonymize._on_event

    def cancel_at_first_frame(event):
        on_event(event)
        if event.stage == "translate" and anonymize.cancel_button.isEnabled():
            anonymize.cancel_button.click()

    anonymize._on_event = cancel_at_first_frame
    anonymize.run_button.click()
    _finish(qtbot, anonymize.job)
    assert "Cancelled" in anonymize.status.text() and anonymize.resume_button.isEnabled()
    translated = sorted((run_dir / "frames" / "anonymized").glob("*.png"))
    assert 1 <= len(translated) < 6
    assert (
        not (run_dir / "frames" / "final").is_dir()
        or len(list((run_dir / "frames" / "final").glob("*.png"))) < 6
    )

    anonymize._on_event = on_event
    kept = {p.name: p.stat().st_mtime_ns for p in translated}
    results = []
    on_done = anonymize._on_done
    anonymize._on_done = lambda result: (results.append(result), on_done(result))
    anonymize.resume_button.click()
    _finish(qtbot, anonymize.job)
    (result,) = results
    assert result.anchor == 4 and result.frames == 6 and "Done" in anonymize.status.text()
    # the resumed run kept the frames finished before the cancel and added the rest
    assert len(list((run_dir / "frames" / "anonymized").glob("*.png"))) == 6
    assert {p.name: p.stat().st_mtime_ns for p in translated} == kept
    layer = viewer.layers["anonymized"]
    assert layer.data.shape == (6, 240, 320, 3) and all(layer.data[i].any() for i in range(6))

    # 4 audit and review: the run is audited; original and anonymized side by side
    audit.run_button.click()
    _finish(qtbot, audit.job)
    assert audit.result.frames == 6 and not audit.identity_plot.pixmap().isNull()
    audit.side_by_side.setChecked(True)
    assert viewer.grid.enabled
    assert [lay.name for lay in viewer.layers if lay.visible] == ["original", "anonymized"]
    audit.side_by_side.setChecked(False)

    # 5 export at the source's frame count and rate, with the settings in a sidecar
    out = tmp_path / "exported" / "anonymized.mp4"
    out.parent.mkdir()
    export.output.set_path(out)
    export.export_button.click()
    _finish(qtbot, export.job)
    src, got = probe(clip), probe(out)
    assert (got.frames, got.rate, got.width, got.height) == (src.frames, src.rate, 320, 240)
    assert got.duration == pytest.approx(src.duration)
    sidecar = json.loads((out.parent / "anonymized.mp4.json").read_text())
    settings = sidecar["anonymize"]
    assert settings["steps"] == 2 and settings["model"] == str(tiny_models[0])
    assert settings["short_side"] == 64 and settings["offline"] is True
    assert sidecar["source"]["frames"] == 6 and "clip.mp4" not in json.dumps(sidecar)

    # a fresh napari: choosing the same video and run folder brings everything back
    fresh = make_napari_viewer()
    again = _dock(fresh, "1 Prepare")
    _dock(fresh, "2 Correct")
    again.video.set_path(clip)
    again.run_dir.set_path(run_dir)
    again.open_button.click()
    _finish(qtbot, again.job)
    reopened = again.session.prepared
    assert reopened.anchor == 4 and reopened.track.edited_frames == [1, 2, 3]
    np.testing.assert_allclose(reopened.track.boxes[2], widened, atol=0.01)
    assert fresh.layers["face boxes"].features["edited"].tolist() == [
        False,
        True,
        True,
        True,
        False,
        False,
    ]
    assert fresh.layers["anchor"].data[0, 0] == 4
    reloaded = np.asarray(fresh.layers["anonymized"].data[5])
    assert np.array_equal(reloaded, np.asarray(viewer.layers["anonymized"].data[5]))


@pytest.fixture(scope="module")
def prepared_dir(clip, tmp_path_factory):
    from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip
    from napari_diffslva.progress import run_to_end

    run = tmp_path_factory.mktemp("prepared") / "run"
    run_to_end(prepare_clip(clip, run, PrepareSettings(short_side=64)))
    return run


def test_gui_stays_responsive_during_a_run(
    make_napari_viewer, qtbot, clip, tiny_models, prepared_dir, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_dir, run_dir)
    viewer = make_napari_viewer()
    prepare, anonymize = _dock(viewer, "1 Prepare"), _dock(viewer, "3 Anonymize")
    prepare.video.set_path(clip)
    prepare.run_dir.set_path(run_dir)
    _finish(qtbot, prepare.open_run())
    _set_tiny_models(anonymize, tiny_models, steps=4)

    ticks = _Ticks()
    started = time.perf_counter()
    job = anonymize.run()
    _finish(qtbot, job)
    seconds = time.perf_counter() - started
    count, worst_gap = ticks.stop()
    assert "Done: 6 frames" in anonymize.status.text()
    expected = seconds / (TICK_MS / 1000)
    print(
        f"run {seconds:.2f} s, {count} ticks of {expected:.0f} expected, "
        f"longest gap {worst_gap * 1000:.0f} ms"
    )
    # A frozen GUI shows almost no ticks and a long gap. The identity gate and the
    # self-audit call dlib, which holds the GIL for about 0.2 s per face embedding: with
    # them the ratio measured 0.55-0.58 on a loaded 2-core machine (0.72 without), so the
    # bound leaves room for load and still fails a GUI blocked by the run.
    assert count >= 0.4 * expected, (count, expected)
    assert worst_gap < 1.0, worst_gap
