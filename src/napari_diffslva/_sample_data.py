"""napari sample data: a real ASL clip (CC BY 4.0, see data/ATTRIBUTION.md)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any


def sample_path(name: str = "asl_house.gif") -> Path:
    """Path of a clip shipped inside the package."""
    return Path(str(files("napari_diffslva") / "data" / name))


def asl_house() -> list[tuple[Any, dict[str, Any], str]]:
    from ._reader import read_video

    data, kwargs, kind = read_video(str(sample_path("asl_house.gif")))[0]
    kwargs["name"] = "ASL HOUSE (sample)"
    return [(data, kwargs, kind)]
