"""What each install gives: the core (CLI, pipeline, audit) works without napari, Qt and
dask.distributed; the batch runner names its extra when it is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Refuses the optional packages as if they were not installed, then imports every core
# module and runs a command end to end.
_WITHOUT_EXTRAS = """
import importlib, pkgutil, sys
OPTIONAL = ("napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "psygnal", "magicgui", "distributed")
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Refuse())
import napari_diffslva
core = [m.name for m in pkgutil.walk_packages(napari_diffslva.__path__, "napari_diffslva.")
        if "._qt" not in m.name]
for name in core:
    importlib.import_module(name)
from napari_diffslva.cli import main
code = main(["prepare", sys.argv[1], "-o", sys.argv[2], "--short-side", "64", "--json"])
print("modules", len(core), "code", code)
"""


def test_core_works_without_the_qt_and_batch_extras(clip_head, tmp_path):
    clip = clip_head("sl_soup.mp4", 3)
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, str(clip), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1].split()
    assert last[0] == "modules" and int(last[1]) > 40 and last[3] == "0"
    assert (tmp_path / "run" / "run.json").is_file()


def test_batch_without_dask_distributed_names_the_extra(monkeypatch, clip_head, tmp_path, capsys):
    from napari_diffslva.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    code = main(["batch", str(clip_head("sl_soup.mp4", 3)), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "pip install 'napari-diffslva[batch]'" in err[0]
