"""The dock widgets in a real napari viewer (Xvfb) on a real clip."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import unet_calls
from napari_diffslva._qt._session import ANONYMIZED, ORIGINAL, session_for
from napari_diffslva._qt.prepare_widget import PrepareWidget
from napari_diffslva.prepare.faces import EDITED, LOST
from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import probe, read_frames

pytestmark = pytest.mark.gui
WAIT = 120_000  # ms; the machine is shared, keep generous


@pytest.fixture(scope="module")
def clip(clip_head):
    """The first 6 frames of a real ASL clip (320x240, 25 fps) as their own file."""
    return clip_head("asl_house.gif", 6, "signer.mp4")


@pytest.fixture(scope="module")
def prepared_dir(clip, tmp_path_factory):
    run = tmp_path_factory.mktemp("prepared") / "run"
    run_to_end(prepare_clip(clip, run, PrepareSettings(short_side=64)))
    return run


def _finish(qtbot, job):
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None, job.error


def _open(viewer, qtbot, clip, run_dir):
    """A Prepare widget that reopened ``run_dir`` (nothing is recomputed: all cached)."""
    widget = PrepareWidget(viewer)
    widget.video.set_path(clip)
    widget.run_dir.set_path(run_dir)
    _finish(qtbot, widget.open_run())
    return widget


def _on_copy(make_napari_viewer, qtbot, clip, prepared_dir, tmp_path):
    """A new viewer with a copy of ``prepared_dir`` reopened in it: ``(viewer, run_dir)``."""
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_dir, run_dir)
    viewer = make_napari_viewer()
    _open(viewer, qtbot, clip, run_dir)
    return viewer, run_dir


def test_prepare_adds_layers_stage_by_stage_and_cancels(make_napari_viewer, qtbot, clip, tmp_path):
    viewer = make_napari_viewer()
    widget = PrepareWidget(viewer)
    widget.video.set_path(clip)
    widget.run_dir.set_path(tmp_path / "run")
    widget.form.set_values({"short_side": 64})
    widget.vectors.setChecked(True)
    seen = []  # which layers exist whenever a progress event of a stage arrives
    on_event = widget._on_event
    widget._on_event = lambda e: (
        seen.append((getattr(e, "stage", None), "edges" in viewer.layers)),
        on_event(e),
        seen.append(("after", {layer.name for layer in viewer.layers})),
    )
    _finish(qtbot, widget.prepare())
    names = [layer.name for layer in viewer.layers]
    assert names[0] == ORIGINAL and viewer.layers[0].data.shape == (6, 240, 320, 3)
    assert set(names) == {
        ORIGINAL,
        "edges",
        "control map",
        "face sketch",
        "flow (prev)",
        "occlusion (prev)",
        "face mask",
        "landmarks",
        "face boxes",
        "anchor",
        "flow vectors (prev)",
    }
    # the face layers came before the edges were computed, the edges before the flow,
    # and the face sketch and control map with the edges, before the flow
    assert ("edges", False) in seen and ("flow", True) in seen
    with_edges = next(names for kind, names in seen if kind == "after" and "edges" in names)
    assert {"control map", "face sketch"} <= with_edges and "flow (prev)" not in with_edges
    prepared = session_for(viewer).prepared
    sketch, control = viewer.layers["face sketch"], viewer.layers["control map"]
    assert sketch.scale[1] == viewer.layers["edges"].scale[1]
    for i in (0, 5):  # what the engine reads, and a sketch drawn over the signer's face
        assert np.array_equal(np.asarray(control.data[i]), prepared.controls.read(i)["control"])
        x0, y0, x1, y1 = prepared.track.boxes[i] / np.tile(sketch.scale[:0:-1], 2)  # work px
        assert np.asarray(sketch.data[i])[int(y0) : int(y1), int(x0) : int(x1)].any()
        edges = np.asarray(viewer.layers["edges"].data[i])
        assert not np.array_equal(np.asarray(control.data[i]), edges)
    boxes = viewer.layers["face boxes"]
    assert boxes.ndim == 3 and len(boxes.data) == 6
    assert viewer.layers["edges"].scale[1] == pytest.approx(240 / 64)
    assert "Prepared 6 frames" in widget.status.text()
    assert session_for(viewer).prepared.info.frames == 6
    model = session_for(viewer).prepared.edge_model  # which edge model made the edges layer
    assert f"{model} edges" in widget.status.text()
    assert viewer.layers["edges"].metadata["diffslva"]["edge_model"] == model
    # the layer of the same file is found by content, not opened twice
    again = widget.prepare()
    _finish(qtbot, again)
    assert [layer.name for layer in viewer.layers].count(ORIGINAL) == 1

    # cancelling stops between frames: a new run folder, cancel at the first event
    widget.run_dir.set_path(tmp_path / "run2")
    widget._on_event = lambda e: widget.cancel()
    job = widget.prepare()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None and "Cancelled" in widget.status.text()
    assert not list((tmp_path / "run2" / "cache").glob("edges-*/complete"))


def test_prepare_errors_become_notifications(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = PrepareWidget(viewer)
    assert widget.prepare() is None and "video" in widget.status.text()
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    widget.video.set_path(bad)
    widget.run_dir.set_path(tmp_path / "run")
    assert widget.prepare() is None
    assert "broken.mp4" in widget.status.text()
    assert len(viewer.layers) == 0


def test_an_automatic_anchor_follows_the_corrected_track(
    make_napari_viewer, qtbot, clip, prepared_dir, tmp_path
):
    """No face on the automatic anchor frame: the anchor moves to where the run will put
    it (the star never disagrees with the run); an anchor set by hand would stay."""
    from napari_diffslva._qt.correct_widget import CorrectWidget
    from napari_diffslva.prepare.pipeline import open_prepared

    viewer, run_dir = _on_copy(make_napari_viewer, qtbot, clip, prepared_dir, tmp_path)
    widget = CorrectWidget(viewer)
    before = session_for(viewer).prepared.anchor
    viewer.dims.set_current_step(0, before)
    widget.mark_no_face()
    after = session_for(viewer).prepared.anchor
    assert after != before and after == open_prepared(run_dir, clip).anchor
    assert viewer.layers["anchor"].data[0, 0] == after


def test_correct_edits_are_saved_and_come_back(
    make_napari_viewer, qtbot, clip, prepared_dir, tmp_path
):
    from napari_diffslva._qt.correct_widget import ACTIONS, CorrectWidget

    viewer, run_dir = _on_copy(make_napari_viewer, qtbot, clip, prepared_dir, tmp_path)
    widget = CorrectWidget(viewer)
    track = session_for(viewer).prepared.track
    boxes = viewer.layers["face boxes"]

    # move the box of frame 1 by 6 px to the right, as the select tool does
    data = [v.copy() for v in boxes.data]
    data[1][:, 2] += 6
    boxes.data = data
    edits = json.loads((run_dir / "edits.json").read_text())
    np.testing.assert_allclose(edits["boxes"]["1"], track.boxes[1] + [6, 0, 6, 0], atol=0.01)
    assert session_for(viewer).prepared.track.status[1] == EDITED
    assert boxes.features["edited"].tolist() == [False, True, False, False, False, False]

    # the same change for frames 1..4
    widget.range_start.setValue(1)
    widget.range_stop.setValue(4)
    widget.apply_last_change_to_range()
    edits = json.loads((run_dir / "edits.json").read_text())
    assert sorted(map(int, edits["boxes"])) == [1, 2, 3, 4]
    np.testing.assert_allclose(edits["boxes"]["3"], track.boxes[3] + [6, 0, 6, 0], atol=0.01)

    # no face on frame 5 (shortcut), anchor on frame 2
    viewer.dims.set_current_step(0, 5)
    from napari.utils.key_bindings import KeyBinding

    key = next(k for k, _, method, _ in ACTIONS if method == "mark_no_face")
    viewer.keymap[KeyBinding.from_str(key)](viewer)  # what napari calls on Alt+Shift+N
    assert len(boxes.data) == 5 and session_for(viewer).prepared.track.status[5] == LOST
    viewer.dims.set_current_step(0, 2)
    widget.set_anchor()
    assert viewer.layers["anchor"].data[0, 0] == 2
    assert viewer.layers["anchor"].features["edited"].tolist() == [True]

    # paint the mask of frame 2 and save it
    mask = viewer.layers["face mask"]
    mask.data[2, 5:25, 5:25] = 1
    widget.save_current_mask()
    assert (run_dir / "masks" / "000002.png").is_file()
    listed = [widget.edited_list.item(i).text() for i in range(widget.edited_list.count())]
    assert listed[1] == "frame 2: box, mask" and listed[-1] == "frame 5: lost"
    widget.edited_list.itemClicked.emit(widget.edited_list.item(0))
    assert viewer.dims.current_step[0] == 1

    # a fresh viewer (as after closing napari) gets every edit back from the run folder
    fresh = make_napari_viewer()
    _open(fresh, qtbot, clip, run_dir)
    reopened = session_for(fresh).prepared
    assert reopened.anchor == 2 and reopened.track.status[5] == LOST
    assert reopened.track.status[1:5].tolist() == [EDITED] * 4
    assert fresh.layers["face boxes"].features["edited"].tolist() == [False] + [True] * 4
    assert fresh.layers["face mask"].data[2, 5:25, 5:25].all()

    # undo brings the detector's box of frame 3 back
    viewer.dims.set_current_step(0, 3)
    widget.undo_edits()
    assert "3" not in json.loads((run_dir / "edits.json").read_text())["boxes"]
    np.testing.assert_allclose(session_for(viewer).prepared.track.boxes[3], track.boxes[3])


def test_anonymize_form_and_a_clear_error(make_napari_viewer, qtbot, clip, prepared_dir, tmp_path):
    from napari_diffslva._qt.anonymize_widget import PROMPT_PRESETS, AnonymizeWidget

    viewer, run_dir = _on_copy(make_napari_viewer, qtbot, clip, prepared_dir, tmp_path)
    widget = AnonymizeWidget(viewer)
    assert "a superman in blue uniform is making gestures" in PROMPT_PRESETS
    fields = widget.form.fields
    device = fields["device"].widget
    assert [device.itemText(i) for i in range(device.count())][0] == "auto"
    fields["prompt"].widget.setCurrentIndex(3)
    fields["steps"].widget.setValue(3)
    fields["face_module"].widget.setCurrentText("off")
    fields["offline"].widget.setChecked(True)
    fields["model"].widget.setText(str(tmp_path / "no-such-model"))
    flat = widget.settings().to_flat()
    assert flat["prompt"] == PROMPT_PRESETS[3] and flat["steps"] == 3
    assert flat["short_side"] == 64 and flat["face_module"] == "off" and flat["offline"]
    job = widget.run()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    from napari_diffslva.errors import DiffslvaError

    assert isinstance(job.error, DiffslvaError) and "no-such-model" in str(job.error)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


@pytest.fixture
def fake_run(clip, prepared_dir, tmp_path):
    """A run folder whose 'anonymized' frames are the original ones: a total identity leak."""
    from napari_diffslva.project import RunFolder

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_dir, run_dir)
    run = RunFolder(run_dir)
    for i, frame in enumerate(read_frames(clip)):
        run.write_frame("final", i, frame)
        run.mark_done("final", i, "copy")
    run.write_settings("anonymize", {"prompt": "none: a copy for the test"})
    return run_dir


def test_audit_flags_a_copy_and_reviews_side_by_side(make_napari_viewer, qtbot, clip, fake_run):
    from napari_diffslva._qt.audit_widget import AuditWidget

    viewer = make_napari_viewer()
    _open(viewer, qtbot, clip, fake_run)
    assert ANONYMIZED in viewer.layers  # finished frames come back with the run folder
    widget = AuditWidget(viewer)
    _finish(qtbot, widget.run())
    leaks = widget.result.identity.leak_frames
    assert leaks == list(range(6))  # the "anonymized" clip is the signer: all frames leak
    assert widget.flag_list.count() >= 6 and not widget.identity_plot.pixmap().isNull()
    widget.flag_list.itemClicked.emit(widget.flag_list.item(4))
    assert viewer.dims.current_step[0] == int(widget.flag_list.item(4).data(256))
    widget.side_by_side.setChecked(True)
    assert viewer.grid.enabled
    assert [layer.name for layer in viewer.layers if layer.visible] == [ORIGINAL, ANONYMIZED]
    widget.side_by_side.setChecked(False)
    assert not viewer.grid.enabled and viewer.layers["face boxes"].visible


def test_export_keeps_timing_and_writes_sidecar(
    make_napari_viewer, qtbot, clip, fake_run, tmp_path
):
    from napari_diffslva._qt.export_widget import ExportWidget

    viewer = make_napari_viewer()
    _open(viewer, qtbot, clip, fake_run)
    widget = ExportWidget(viewer)
    assert widget.export() is None and "output" in widget.status.text()  # no default name
    out = tmp_path / "exported" / "anon.mov"
    out.parent.mkdir()
    widget.output.set_path(out)
    widget.with_side_by_side.setChecked(True)
    widget.side_by_side.set_path(tmp_path / "exported" / "compare.mp4")
    _finish(qtbot, widget.export())
    src, got = probe(clip), probe(out)
    assert (got.frames, got.rate, got.width, got.height) == (6, src.rate, 320, 240)
    assert got.duration == pytest.approx(src.duration)
    assert probe(tmp_path / "exported" / "compare.mp4").width == 640
    sidecar = json.loads((tmp_path / "exported" / "anon.mov.json").read_text())
    assert sidecar["tool"] == "napari-diffslva" and "signer" not in json.dumps(sidecar)
    assert "6 frames" in widget.status.text()
    # exporting again over the same name needs the overwrite box
    job = widget.export()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is not None and "exists" in str(job.error)


def test_anonymize_cancel_lands_within_one_denoising_step(
    make_napari_viewer, qtbot, clip, prepared_dir, tmp_path, tiny_models_dir, count_steps
):
    """Cancel pressed while a step runs: that step finishes, no other starts; Resume keeps
    the finished frame and does the rest."""
    import threading

    from napari_diffslva._qt.anonymize_widget import AnonymizeWidget
    from napari_diffslva.project import RunFolder

    viewer, run_dir = _on_copy(make_napari_viewer, qtbot, clip, prepared_dir, tmp_path)
    widget = AnonymizeWidget(viewer)
    widget.form.set_values(
        {
            "model": str(tiny_models_dir / "sd"),
            "controlnet": str(tiny_models_dir / "controlnet"),
            "offline": True,
            "device": "cpu",
            "steps": 4,
            "face_module": "off",
            "gate_tries": 0,  # no identity gate: its own steps (its stop: test_privacy.py)
        }
    )
    settings = widget.settings()
    per_pass, per_frame = unet_calls(settings.engine)  # the anchor's, another frame's
    steps = count_steps(settings.to_flat())
    in_step, pressed = threading.Event(), threading.Event()

    def wait_for_cancel():  # in the worker thread, inside a denoising step
        in_step.set()
        assert pressed.wait(WAIT / 1000)

    pressed_at = per_pass + 2  # the second step of the first frame after the anchor
    steps.at(pressed_at, wait_for_cancel)
    job = widget.run()
    qtbot.waitUntil(in_step.is_set, timeout=WAIT)
    widget.cancel_button.click()
    pressed.set()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    assert job.error is None and "Cancelled" in widget.status.text()
    assert steps.calls == pressed_at
    run = RunFolder(run_dir)
    assert run.manifest("anonymized")["done"] == [session_for(viewer).prepared.anchor]

    steps.reset()
    widget.resume_button.click()
    _finish(qtbot, widget.job)
    assert steps.calls == per_pass + per_frame * 5  # the anchor again, then 5 frames
    assert "Done: 6 frames" in widget.status.text()
