"""napari reader contribution: a video opens as a lazy dask-backed RGB image layer.

Only the frames napari displays are decoded, so a 10,000-frame clip opens instantly.
Bad input raises :class:`~napari_diffslva.errors.VideoError`, which napari shows as a
notification. The layer name is neutral unless the user asks for the file name, and the
metadata carries timing and a content hash, never the path.

The layer has the frames that decode; when the container claims more (or the end is
lost, or an edit list hides some) the metadata says so under ``diffslva/notes``. A damaged
frame in the middle shows the previous good frame (viewing must not stop on it) and
prepare, which checks every frame, reports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .video import IMAGE_SUFFIXES, VIDEO_SUFFIXES


def get_reader(path: str | list[str]):
    """Return :func:`read_video` when ``path`` is a clip or a folder of images, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        has_images = any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())
        return read_video if has_images else None
    return read_video if p.suffix.lower() in VIDEO_SUFFIXES else None


def read_video(path: str | list[str]) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer data for one clip: ``[(dask_array, kwargs, "image")]``."""
    from .video import VideoReader, as_dask

    if isinstance(path, list):
        path = path[0]
    reader = VideoReader(path, on_damaged="repeat")
    data = as_dask(reader)
    return [(data, video_layer_kwargs(reader.info), "image")]


def video_layer_kwargs(info, name: str = "original") -> dict[str, Any]:
    """napari Image kwargs for a clip: RGB, fixed contrast (no data scan), timing metadata."""
    from .video import source_notes

    source = info.to_dict(with_timestamps=True)
    return {
        "name": name,
        "rgb": True,
        "contrast_limits": (0, 255),
        "metadata": {
            "diffslva": {
                "source": source,
                "timing": info.timing.to_dict(),
                "notes": source_notes(source),
            }
        },
    }
