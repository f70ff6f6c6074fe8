"""The Anonymize and Export widgets show what the run checked about privacy (issue 12):
the anchor's identity gate (its verdict and the new anchor face, before the clip runs;
a refusal stops everything) and the self-audit of the result (a held-back export), on a
real talking-head clip, with the tiny random models or a forced leak as in
tests/test_privacy.py."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import napari_diffslva.engine.translate as engine_translate
from conftest import unet_calls
from napari_diffslva._qt._session import ANONYMIZED, session_for
from napari_diffslva._qt.anonymize_widget import NEW_ANCHOR_FACE, AnonymizeWidget
from napari_diffslva._qt.prepare_widget import PrepareWidget
from napari_diffslva.audit.gate import AnchorLeakError
from napari_diffslva.prepare.faces import detect_faces, face_landmarks
from napari_diffslva.prepare.pipeline import PrepareSettings, prepare_clip
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder
from napari_diffslva.testing.leaks import anchor_as, original_anchor, original_clip, pasted_face
from napari_diffslva.video import read_frames

pytestmark = pytest.mark.gui
WAIT = 180_000  # ms; the machine is shared, keep generous


@pytest.fixture(scope="module")
def clip(clip_head):
    """6 frames of a real talking head (a face of about 200 px)."""
    return clip_head("face_talking.mp4", 6)


@pytest.fixture(scope="module")
def prepared(clip, tmp_path_factory):
    """Run folders prepared at two working sizes: 64 px (the tiny models' noise holds no
    face) and 256 px (a face pasted on the anchor survives the round trip)."""

    def make(short_side: int):
        run = tmp_path_factory.mktemp(f"prepared{short_side}") / "run"
        run_to_end(prepare_clip(clip, run, PrepareSettings(short_side=short_side)))
        return run

    return {64: make(64), 256: make(256)}


@pytest.fixture
def tiny(tiny_flat):
    """The tiny models with 2 steps (the working size is the prepared run folder's)."""
    return tiny_flat(steps=2)


def _finish(qtbot, job, error=None):
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT)
    if error is None:
        assert job.error is None, job.error
    else:
        assert isinstance(job.error, error), job.error


def _reopened(make_napari_viewer, qtbot, clip, run_dir):
    """A new viewer in which the Prepare widget reopened ``run_dir``."""
    viewer = make_napari_viewer()
    prepare = PrepareWidget(viewer)
    prepare.video.set_path(clip)
    prepare.run_dir.set_path(run_dir)
    _finish(qtbot, prepare.open_run())
    return viewer


def _widget(make_napari_viewer, qtbot, clip, prepared_dir, tmp_path, tiny):
    """An Anonymize widget on a copy of ``prepared_dir`` reopened in a fresh viewer."""
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_dir, run_dir)
    viewer = _reopened(make_napari_viewer, qtbot, clip, run_dir)
    widget = AnonymizeWidget(viewer)
    widget.form.set_values(tiny)
    return viewer, widget, RunFolder(run_dir)


def _placed_crop(layer, frame: np.ndarray) -> np.ndarray:
    """The part of a source-size ``frame`` the one-frame ``layer`` lies over."""
    _, y0, x0 = (int(v) for v in layer.translate)
    h, w = layer.data.shape[1:3]
    return frame[y0 : y0 + h, x0 : x0 + w]


def test_check_anchor_shows_the_gate_before_the_clip_and_run_reuses_it(
    make_napari_viewer, qtbot, clip, prepared, tmp_path, tiny, count_steps
):
    viewer, widget, run = _widget(make_napari_viewer, qtbot, clip, prepared[64], tmp_path, tiny)
    settings = widget.settings()
    per_pass, per_frame = unet_calls(settings.engine)
    steps = count_steps(settings.to_flat())
    _finish(qtbot, widget.check_anchor())
    assert steps.calls == per_pass  # the anchor alone, no frame of the clip
    assert not run.frames_dir("anonymized").exists()
    text = widget.privacy.text()
    assert "no face found in the new anchor, the run goes on" in text
    assert "seed 0: " in text and "same person below 0.6" in text
    # the new anchor face lies over the signer's face on the anchor frame only
    prep = session_for(viewer).prepared
    layer = viewer.layers[NEW_ANCHOR_FACE]
    assert layer.data.shape[0] == 1 and layer.translate[0] == prep.anchor
    box = prep.track.box(prep.anchor)
    _, y0, x0 = layer.translate
    assert x0 <= box.x0 and y0 <= box.y0
    assert x0 + layer.data.shape[2] >= box.x1 and y0 + layer.data.shape[1] >= box.y1

    steps.reset()
    widget.run_button.click()
    _finish(qtbot, widget.job)
    assert steps.calls == per_pass + per_frame * 5  # the gate's answer was reused
    text = widget.privacy.text()
    assert "no face found in the new anchor" in text
    assert "self-audit: 0 of 6 frames with the signer's face still look like" in text
    # the layer shows what the clip's anchor frame became, not the original face
    finished = run.read_frame("final", prep.anchor)
    shown = np.asarray(layer.data[0])
    assert np.array_equal(shown, _placed_crop(layer, finished))
    original = read_frames(clip)[prep.anchor]
    assert np.abs(shown.astype(int) - _placed_crop(layer, original)).mean() > 20

    # reopened in a new viewer, the folder's last checks and new anchor face come back
    again = _reopened(make_napari_viewer, qtbot, clip, run.root)
    shown_again = AnonymizeWidget(again).privacy.text()
    assert shown_again.startswith("Last run in this folder:")
    assert "no face found in the new anchor" in shown_again
    assert "self-audit: 0 of 6 frames with the signer's face still look like" in shown_again
    assert np.array_equal(again.layers[NEW_ANCHOR_FACE].data[0], shown)


@pytest.fixture(scope="module")
def biden(real_clip):
    photo = read_frames(real_clip("faces/biden_1.jpg"))[0]
    return photo, face_landmarks(photo, max(detect_faces(photo), key=lambda b: b.area))


def test_gate_retries_then_refuses_and_nothing_is_translated(
    make_napari_viewer, qtbot, clip, prepared, tmp_path, tiny, biden, monkeypatch
):
    viewer, widget, run = _widget(make_napari_viewer, qtbot, clip, prepared[256], tmp_path, tiny)
    anchor = session_for(viewer).prepared.anchor

    def looks(seed, inputs, i):  # the signer on seed 0, another real person on seed 1
        return inputs.source_frame(i) if seed == 0 else pasted_face(*biden)(seed, inputs, i)

    monkeypatch.setattr(engine_translate, "translate_anchor", anchor_as(looks))
    _finish(qtbot, widget.check_anchor())
    text = widget.privacy.text()
    tried = re.search(r"seed 0: (\d\.\d\d) \(leak\), seed 1: (\d\.\d\d) \(passed\)$", text)
    assert tried and float(tried[1]) < 0.6 <= float(tried[2]), text
    layer = viewer.layers[NEW_ANCHOR_FACE]  # seed 1's anchor: the pasted face, not seed 0's
    prep = session_for(viewer).prepared
    expected = prep.geometry.to_source(looks(1, prep, anchor))
    assert np.array_equal(np.asarray(layer.data[0]), _placed_crop(layer, expected))

    # every seed gives the signer back: the run refuses, says what to change, and
    # translates nothing; the new anchor face of the earlier check goes away
    monkeypatch.setattr(engine_translate, "translate_anchor", original_anchor)
    widget.form.set_values({"seed": 5})
    widget.run_button.click()
    _finish(qtbot, widget.job, AnchorLeakError)
    text = widget.privacy.text()
    assert text.startswith("Refused by the identity gate")
    assert "still the signer with every seed tried (5, 6, 7" in text and "--prompt" in text
    assert NEW_ANCHOR_FACE not in viewer.layers
    assert not run.frames_dir("anonymized").exists() and not run.frames_dir("final").exists()
    assert not np.asarray(viewer.layers[ANONYMIZED].data).any()
    assert widget.run_button.isEnabled() and widget.check_button.isEnabled()


def test_a_leaking_result_is_counted_and_export_holds_it_back(
    make_napari_viewer, qtbot, clip, prepared, tmp_path, tiny, monkeypatch
):
    from napari_diffslva._qt.export_widget import ExportWidget

    viewer, widget, run = _widget(make_napari_viewer, qtbot, clip, prepared[64], tmp_path, tiny)
    monkeypatch.setattr(engine_translate, "translate_clip", original_clip)
    widget.form.set_values({"fail_on_leak": True})
    at_first_frame = []  # the privacy line and layers when the clip's first frame arrives
    on_event = widget._on_event

    def watch(event):
        on_event(event)
        if event.stage == "translate" and not at_first_frame:
            at_first_frame.append((widget.privacy.text(), NEW_ANCHOR_FACE in viewer.layers))

    widget._on_event = watch
    widget.run_button.click()
    _finish(qtbot, widget.job)
    # the gate ran first and was shown before the clip's frames came
    assert at_first_frame == [(at_first_frame[0][0], True)]
    assert at_first_frame[0][0].startswith("identity gate on anchor frame")
    text = widget.privacy.text()
    assert "self-audit: 6 of 6 frames with the signer's face still look like" in text
    assert "Held back (fail_on_leak)" in text and str(run.root) in text

    export = ExportWidget(viewer)
    out = tmp_path / "exported" / "anon.mp4"
    out.parent.mkdir()
    export.output.set_path(out)
    export.with_side_by_side.setChecked(True)
    export.side_by_side.set_path(tmp_path / "exported" / "compare.mp4")
    _finish(qtbot, export.export())
    held = run.held_back_export(out)
    assert held.is_file() and not out.exists() and not list(out.parent.iterdir())
    assert export.status.text().startswith("Held back") and str(held) in export.status.text()
    assert read_frames(held).shape[0] == 6

    # the same run without fail_on_leak is exported where asked, with a warning
    widget.form.set_values({"fail_on_leak": False})
    widget.resume_button.click()
    _finish(qtbot, widget.job)
    assert "Held back" not in widget.privacy.text()
    assert "Check those frames" in widget.privacy.text()
    export.with_side_by_side.setChecked(False)
    _finish(qtbot, export.export())
    assert out.is_file() and "still look like the signer" in export.status.text()
