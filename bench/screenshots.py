"""Screenshots of the five dock widgets at work on the bundled sample clip, for the docs.

Opens the first frames of ``asl_house.gif`` (ASL sign HOUSE, CC BY 4.0) with our reader,
then drives each widget as a person would: Prepare (real, with the control map and face
sketch), Correct with a box selected and one edit spread over a range, Anonymize with
*tiny random-weight models* (built here: no download, so the "anonymized" face is noise,
not a real result) on the anchor frame with the identity gate's new anchor face, Audit
with its plots, Export. One PNG per widget goes to ``docs/images/``. Needs a display: run
it under Xvfb

    xvfb-run -a .venv/bin/python bench/screenshots.py [--frames 20] [--out docs/images]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_diffslva._sample_data import sample_path
from napari_diffslva.export import write_video
from napari_diffslva.video import probe, read_frames

PLUGIN = "napari-diffslva"
WIDGETS = ("1 Prepare", "2 Correct", "3 Anonymize", "4 Audit and review", "5 Export")
WINDOW = (1280, 800)
DOCK_WIDTH = 440
MAX_BYTES = 300_000


def wait(app, job, timeout: float = 1800.0) -> None:
    """Run the Qt event loop until ``job`` (a BackgroundJob) ends; fail on its error."""
    if job is None:
        raise RuntimeError("the widget refused to start (see its status line)")
    end = time.monotonic() + timeout
    while job.running:
        if time.monotonic() > end:
            raise TimeoutError("job did not finish in time")
        app.processEvents()
        time.sleep(0.01)
    if job.error is not None:
        raise job.error


def settle(app, seconds: float = 0.5) -> None:
    """Let napari draw (slices load, the canvas repaints) before a screenshot."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def save_png(window, path: Path) -> int:
    """Grab the whole window; re-encode with a 256-colour palette if the PNG is too big."""
    from PIL import Image

    window.grab().save(str(path))
    if path.stat().st_size > MAX_BYTES:
        image = Image.open(path).convert("RGB")
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="first frames of the sample")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import napari
    import torch
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_diffslva.engine.tiny import build_tiny_models

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="diffslva-shots-"))
    src = sample_path()
    clip = work / "signer.mp4"
    write_video(read_frames(src, 0, args.frames), clip, rate=probe(src).rate)
    sd_dir, controlnet_dir = build_tiny_models(work / "tiny-models")
    run_dir = work / "project"

    # size the window before it is shown: resizing a shown window can leave the GL canvas
    # with a stale size, which stretches the picture
    viewer = napari.Viewer(show=False, title="napari-diffslva")
    window = viewer.window._qt_window
    window.resize(*WINDOW)
    viewer.window.show()
    app = QApplication.instance()
    viewer.open(str(clip), plugin=PLUGIN)
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name) for name in WIDGETS}

    def show_only(name: str) -> object:
        for other, (dock, _) in docks.items():
            dock.setVisible(other == name)
        window.resizeDocks([docks[name][0]], [DOCK_WIDTH], Qt.Orientation.Horizontal)
        return docks[name][1]

    def shot(name: str, stem: str) -> None:
        settle(app)
        viewer.reset_view()
        settle(app)
        path = args.out / f"{stem}.png"
        size = save_png(window, path)
        print(f"{name}: {path} ({size // 1024} KB)")

    frame = min(10, args.frames - 1)
    started = time.perf_counter()

    # 1 Prepare: real faces, edges and flow; the boxes, landmarks and what ControlNet is
    # told (the control map, with the face sketch in cyan) are shown
    prepare = show_only("1 Prepare")
    prepare.video.set_path(clip)
    prepare.run_dir.set_path(run_dir)
    prepare.form.set_values({"short_side": args.short_side})
    prepare.prepare_button.click()
    wait(app, prepare.job)
    viewer.layers["landmarks"].visible = True
    viewer.layers["edges"].visible = False
    viewer.layers["control map"].opacity = 0.5
    viewer.dims.set_current_step(0, frame)
    shot("1 Prepare", "prepare")

    # 2 Correct: widen one box, spread the change over a range, keep the box selected
    correct = show_only("2 Correct")
    for name in ("control map", "face sketch"):
        viewer.layers[name].visible = False
    boxes = viewer.layers["face boxes"]
    index = next(i for i, v in enumerate(boxes.data) if int(v[0, 0]) == frame)
    data = [v.copy() for v in boxes.data]
    data[index][:, 1] += np.where(data[index][:, 1] > data[index][:, 1].mean(), 6, -2)
    boxes.data = data
    correct.range_start.setValue(frame)
    correct.range_stop.setValue(min(frame + 5, args.frames - 1))
    correct.buttons["apply_last_change_to_range"].click()
    viewer.layers.selection.active = boxes
    boxes.mode = "select"
    boxes.selected_data = {index}
    shot("2 Correct", "correct")
    boxes.selected_data = set()
    boxes.mode = "pan_zoom"

    # 3 Anonymize with tiny random models: the output is noise, only the GUI is real
    anonymize = show_only("3 Anonymize")
    anonymize.form.set_values(
        {
            "model": str(sd_dir),
            "controlnet": str(controlnet_dir),
            "offline": True,
            "steps": args.steps,
            "device": "cpu",
        }
    )
    anonymize.run_button.click()
    wait(app, anonymize.job)
    for name in ("face mask", "landmarks", "anchor"):
        viewer.layers[name].visible = False
    viewer.layers["original"].visible = False
    # on the run's anchor frame: the identity gate's new anchor face lies over the face
    viewer.dims.set_current_step(0, int(viewer.layers["new anchor face"].translate[0]))
    shot("3 Anonymize", "anonymize")
    viewer.layers["original"].visible = True
    viewer.dims.set_current_step(0, frame)

    # 4 Audit and review: the plots, the flagged frames, side by side
    audit = show_only("4 Audit and review")
    audit.run_button.click()
    wait(app, audit.job)
    audit.side_by_side.setChecked(True)
    viewer.reset_view()
    shot("4 Audit and review", "audit")
    audit.side_by_side.setChecked(False)
    viewer.reset_view()

    # 5 Export: the source's frame count and rate, a sidecar, a comparison video
    export = show_only("5 Export")
    export.output.set_path(work / "exported" / "anonymized.mp4")
    export.with_side_by_side.setChecked(True)
    export.side_by_side.set_path(work / "exported" / "comparison.mp4")
    (work / "exported").mkdir()
    export.export_button.click()
    wait(app, export.job)
    shot("5 Export", "export")

    print(f"all done in {time.perf_counter() - started:.1f} s (work folder {work})")
    viewer.close()


if __name__ == "__main__":
    main()
