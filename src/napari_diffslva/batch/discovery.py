"""Which clips a batch holds, and what each one is called in the output folder."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import VideoError
from ..video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, sorted_images

OUTPUT_SUFFIX = ".mp4"
GLOB_CHARS = "*?["


def discover_clips(
    inputs: Sequence[str | os.PathLike], *, exclude: Path | None = None
) -> list[Path]:
    """Clips named by files, folders (searched recursively) and glob patterns, in order.

    In folders, every video/GIF file is a clip, and so is every folder of images that holds
    no video (an image sequence). Hidden folders and ``exclude`` (the output folder, when it
    lies inside an input folder) are skipped. A file named explicitly is always a clip, even
    one that turns out unreadable: it is reported as failed rather than silently dropped.
    """
    found: list[Path] = []
    for item in inputs:
        for candidate in _named_paths(str(item)):
            found.extend(
                _clips_in_folder(candidate, exclude)
                if candidate.is_dir() and not _is_image_sequence(candidate)
                else [candidate]
            )
    unique: dict[Path, Path] = {}
    for clip in found:
        unique.setdefault(clip.resolve(), clip)
    if not unique:
        raise VideoError(
            f"no clips ({', '.join(VIDEO_SUFFIXES)} or image folders) in "
            f"{', '.join(map(str, inputs))}"
        )
    return list(unique.values())


def _named_paths(text: str) -> list[Path]:
    """The file or folder ``text`` names, or what it matches as a glob pattern."""
    path = Path(text).expanduser()
    if path.exists():
        return [path]
    if any(ch in text for ch in GLOB_CHARS):
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        if not matches:
            raise VideoError(f"{text}: no file or folder matches this pattern")
        return matches
    raise VideoError(f"{text}: no such file or folder")


def _is_image_sequence(folder: Path) -> bool:
    names = [f for f in folder.iterdir() if f.is_file()]
    return any(f.suffix.lower() in IMAGE_SUFFIXES for f in names) and not any(
        f.suffix.lower() in VIDEO_SUFFIXES for f in names
    )


def _clips_in_folder(folder: Path, exclude: Path | None) -> list[Path]:
    clips: list[Path] = []
    skip = exclude.resolve() if exclude is not None else None
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        videos = sorted(
            f for f in files if Path(f).suffix.lower() in VIDEO_SUFFIXES and not f.startswith(".")
        )
        clips.extend(here / f for f in videos)
        if not videos and here != folder and _is_image_sequence(here):
            clips.append(here)
            dirs[:] = []
    return clips


def clip_names(clips: Sequence[Path]) -> list[str]:
    """Names relative to the clips' common folder, without suffix, ``/``-separated.

    ``corpus/cam1/utt01.mp4`` and ``corpus/cam2/utt01.mp4`` become ``cam1/utt01`` and
    ``cam2/utt01``; a flat folder gives the plain stems (the corpus's utterance ids).
    """
    parents = [str(c.resolve().parent) for c in clips]
    common = Path(os.path.commonpath(parents))
    names = []
    for clip in clips:
        rel = clip.resolve().relative_to(common)
        names.append(rel.with_suffix("").as_posix() if clip.is_file() else rel.as_posix())
    seen: dict[str, Path] = {}
    for name, clip in zip(names, clips, strict=True):
        if name in seen:
            raise VideoError(
                f"{seen[name]} and {clip} would both be written as {name}"
                f"{OUTPUT_SUFFIX}; rename one or pass --hash-names"
            )
        seen[name] = clip
    return names


def content_hash(clip: Path) -> str:
    """sha256 of a file's bytes, or of a folder's images in order (as :func:`video.probe`)."""
    digest = hashlib.sha256()
    for path in sorted_images(clip) if clip.is_dir() else [clip]:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
