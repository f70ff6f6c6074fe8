"""Ctrl-C in the CLI: the run stops after the denoising step in progress, exit code 130,
every finished frame kept, and ``--resume`` continues from them."""

from __future__ import annotations

import signal

from conftest import unet_calls
from napari_diffslva.cli import main
from napari_diffslva.pipeline import AnonymizeSettings
from napari_diffslva.project import RunFolder


def test_ctrl_c_stops_within_one_step_and_resume_finishes(
    tiny_flat, clip_head, tmp_path, count_steps, capsys
):
    flat = tiny_flat(gate_tries=0)  # no identity gate: its own steps (test_privacy.py)
    engine = AnonymizeSettings.from_flat(flat).engine
    per_pass, per_frame = unet_calls(engine)  # the anchor: one pass; other frames: two
    clip = clip_head("sl_soup.mp4", 5)
    out, run_dir = tmp_path / "out.mp4", tmp_path / "run"
    argv = ["anonymize", str(clip), "-o", str(out), "--run-dir", str(run_dir)]
    for key, value in flat.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    steps = count_steps(flat)
    pressed_at = per_pass + 1  # Ctrl-C during the second step of the first frame after the anchor
    steps.at(pressed_at, lambda: signal.raise_signal(signal.SIGINT))

    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted; finished frames are kept" in err and "Traceback" not in err
    assert steps.calls == pressed_at
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    run = RunFolder(run_dir)
    assert len(run.manifest("anonymized")["done"]) == 1  # the anchor
    assert not out.exists()

    steps.reset()
    assert main([*argv, "--resume"]) == 0
    assert steps.calls == per_pass + per_frame * 4  # anchor again, then the 4 other frames
    assert out.is_file()
