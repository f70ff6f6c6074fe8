"""The npe2 manifest: one real file in the package, valid, every python_name importable,
discoverable from a built wheel."""

from __future__ import annotations

import importlib
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


MANIFEST = REPO / "src" / "napari_diffslva" / "napari.yaml"


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_every_python_name_imports():
    names = [c.python_name for c in _manifest().contributions.commands]
    assert names
    for name in names:
        module, attr = name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_the_manifest_is_one_real_file_in_the_package():
    from importlib.metadata import entry_points
    from importlib.resources import files

    assert MANIFEST.is_file() and not MANIFEST.is_symlink()
    assert not (REPO / "napari.yaml").exists()  # no second copy to drift
    entry = next(e for e in entry_points(group="napari.manifest") if e.name == "napari-diffslva")
    package, name = entry.value.split(":")
    assert (files(package) / name).read_text() == MANIFEST.read_text()


def test_npe2_validate_editable_install():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", "napari-diffslva"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_importing_the_package_is_cheap():
    code = (
        "import sys, napari_diffslva, napari_diffslva._reader, napari_diffslva._writer;"
        "print(sorted(m for m in ('torch','diffusers','dlib','cv2','PyQt6','napari')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_wheel_installs_and_plugin_is_discovered(tmp_path):
    """Build a wheel, install it (no deps) into a fresh venv, find the manifest by entry point."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("napari_diffslva-*.whl"))
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "from importlib.metadata import entry_points;"
        "from importlib.resources import files;"
        "ep = [e for e in entry_points(group='napari.manifest') if e.name == 'napari-diffslva'][0];"
        "pkg, fname = ep.value.split(':');"
        "text = (files(pkg) / fname).read_text();"
        "assert 'napari-diffslva.read_video' in text;"
        "assert (files(pkg) / 'data' / 'asl_house.gif').is_file();"
        "print('ok')"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    # the manifest in the wheel is valid for npe2 (validated with the test venv's npe2)
    from npe2 import PluginManifest

    site = next((env / "lib").glob("python*/site-packages"))
    PluginManifest.from_file(site / "napari_diffslva" / "napari.yaml")
