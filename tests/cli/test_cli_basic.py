"""CLI: probe --json schema, info, export through the plugin's reader and writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from napari_diffslva.cli import main
from napari_diffslva.video import probe


def test_probe_json_is_one_object(real_clip, capsys):
    assert main(["probe", str(real_clip("sl_soup.mp4")), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("frames", "rate", "fps", "width", "height", "duration", "codec", "rotation"):
        assert key in d
    assert d["frames"] == 41 and d["rate"] == "2997/100" and d["codec"] == "h264"


def test_info_lists_weights_and_search_path(capsys, tmp_path, monkeypatch):
    (tmp_path / "ControlNetHED.pth").write_bytes(b"x")
    monkeypatch.setenv("NAPARI_DIFFSLVA_WEIGHTS", str(tmp_path))
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["weights"]["controlnet-hed"]["found"] == str(tmp_path / "ControlNetHED.pth")
    assert d["weights"]["tpsmm"]["found"] is None
    assert str(tmp_path) in d["weights_search_path"]
    assert "cpu" in d["devices"] and d["versions"]["torch"]


def test_export_command_matches_plugin_writer(real_clip, tmp_path):
    from napari_diffslva._reader import read_video
    from napari_diffslva._writer import write_video_layer

    src = real_clip("asl_different.gif")
    exe = Path(sys.executable).with_name("napari-diffslva")
    cli_out = tmp_path / "cli.mp4"
    subprocess.run([str(exe), "export", str(src), str(cli_out)], check=True, capture_output=True)
    data, kwargs, _ = read_video(str(src))[0]
    plugin_out = tmp_path / "plugin.mp4"
    write_video_layer(str(plugin_out), data, {"metadata": kwargs["metadata"]})
    a, b = probe(cli_out), probe(plugin_out)
    assert a.frames == b.frames == 64
    assert list(a.timing.timestamps) == list(b.timing.timestamps)


def test_peak_memory_says_what_it_measured():
    from napari_diffslva.cli.anonymize import _peak_memory

    assert _peak_memory({"peak_memory_mb": 5120.4, "device": "cuda:1"}) == "peak GPU memory 5120 MB"
    assert _peak_memory({"peak_memory_mb": 580.6, "device": "cpu"}) == "peak memory (RSS) 581 MB"
    assert _peak_memory({"peak_memory_mb": float("nan"), "device": "cpu"}).endswith("not measured")
