"""A stop request to a running batch: the clip being translated stops within one denoising
step, the clip not started yet is not started, both are recorded ``cancelled`` and the
next run resumes them. An in-process cluster (one worker thread) lets the test count the
denoising steps of the models the worker uses."""

from __future__ import annotations

import shutil
import threading

from conftest import unet_calls
from napari_diffslva.batch import plan_batch, run_batch
from napari_diffslva.pipeline import AnonymizeSettings
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder, read_json

WAIT = 120  # s; a guard against a hang, not a timing assertion


def test_stop_reaches_the_running_clip_within_one_step(
    in_process_client, clip_head, tiny_flat, tmp_path, count_steps
):
    from distributed import Event

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a", "b"):
        shutil.copy(clip_head("sl_soup.mp4", 4), corpus / f"{name}.mp4")
    flat = tiny_flat(gate_tries=0)  # no identity gate: its own steps (test_privacy.py)
    engine = AnonymizeSettings.from_flat(flat).engine
    per_pass, per_frame = unet_calls(engine)  # the anchor: one pass; other frames: two
    plan = plan_batch([corpus], tmp_path / "out", settings=flat)
    steps = count_steps(flat)
    user_stop = threading.Event()

    def press_stop():  # in the worker, inside a denoising step: stop, then wait until the
        user_stop.set()  # batch has passed the request on to the cluster
        assert Event(plan.stop_event).wait(WAIT)

    pressed_at = per_pass + 2  # the second step of the first frame after the anchor
    steps.at(pressed_at, press_stop)
    result = run_to_end(run_batch(plan, in_process_client, poll=0.05, should_stop=user_stop.is_set))
    assert result.stopped and steps.calls == pressed_at
    records = result.records
    assert sorted(r["status"] for r in records.values()) == ["cancelled", "cancelled"]
    started = next(r for r in records.values() if "note" in r and "rerun" in r["note"])
    assert read_json(plan.manifest_path)["clips"] == records
    first = next(j for j in plan.jobs if records[j.name] is started)
    assert len(RunFolder(first.run_dir).manifest("anonymized")["done"]) == 1  # the anchor

    steps.reset()
    again = run_to_end(run_batch(plan, in_process_client, poll=0.05))
    assert not again.stopped
    assert [again.records[j.name]["status"] for j in plan.jobs] == ["done", "done"]
    assert again.records[first.name]["resumed_frames"] == 1
    assert steps.calls == 2 * (per_pass + per_frame * 3)  # two clips of 4 frames
