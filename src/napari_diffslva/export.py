"""Writing clips: H.264 with the source's exact frame count and timing, atomically.

The output keeps every frame's timestamp (so variable-rate GIFs stay variable), uses a
short GOP so any frame can be seeked to quickly, and carries no metadata from the source
(no file name, no tags) unless the caller passes some. Odd frame sizes, which 4:2:0
chroma cannot hold, are written as H.264 4:4:4 so the visible size never changes
(``odd_size="pad"`` trades that for wider player support by adding one edge row/column).
The file is written next to the output under a hidden temporary name and renamed when
complete, so a crash never leaves a half-written clip under the final name.

An export has exactly the source's decodable frames; :func:`source_record` is what its
JSON sidecar says about the source where it departs from its container's claims (fewer
frames than the header says, a lost end, an edit list, damaged frames and their stand-ins).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoError
from .progress import Progress, ProgressGenerator, run_to_end
from .project import check_writable, default_permissions
from .video import VideoInfo, VideoTiming, source_notes, stand_ins

OUTPUT_SUFFIXES = (".mp4", ".mov")
CRF_RANGE = (0, 51)  # x264's quality scale for 8-bit video: 0 lossless, 51 worst
ODD_SIZES = ("yuv444", "pad")


def source_record(run_meta: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's account of the source (``run_meta``: a run folder's ``run.json``):
    ``deviations``, one sentence each, and ``stand_ins`` (damaged frame -> the good frame
    shown in its place) when there are damaged frames."""
    record: dict[str, Any] = {"deviations": source_notes(run_meta.get("source", {}))}
    stood = run_meta.get("stand_ins") or {}
    if stood:
        record["stand_ins"] = stood
        record["on_damaged_frame"] = run_meta.get("on_damaged_frame", "repeat")
        record["deviations"].append(
            "each damaged frame shows the previous good frame (the first good frame when "
            "none precedes it); frame count and timing are the source's"
        )
    return record


def info_record(info: VideoInfo, policy: str) -> dict[str, Any]:
    """:func:`source_record` for a clip read directly (no run folder)."""
    return source_record(
        {
            "source": info.to_dict(),
            "on_damaged_frame": policy,
            "stand_ins": {str(k): v for k, v in stand_ins(info.damaged or (), info.frames).items()},
        }
    )


def check_output(
    path: str | Path, *, overwrite: bool = False, protect: Iterable[str | Path] = ()
) -> Path:
    """Validate an output path before any work starts (fail early, lose nothing)."""
    out = Path(path)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise VideoError(f"{out}: output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    for src in protect:
        src = Path(src)
        if src.exists() and out.exists() and out.resolve() == src.resolve():
            raise VideoError(f"{out}: refusing to overwrite the source video; choose another name")
    if out.exists() and not overwrite:
        raise VideoError(f"{out}: already exists; pass --overwrite (or overwrite=True) to replace")
    if not out.parent.exists():
        raise VideoError(f"{out.parent}: output folder does not exist")
    check_writable(out.parent)
    return out


def check_encoding(crf: int, odd_size: str = "yuv444") -> None:
    """Validate encoder settings before any work (x264 would fail only when opened)."""
    lo, hi = CRF_RANGE
    if isinstance(crf, bool) or not isinstance(crf, int) or not lo <= crf <= hi:
        raise VideoError(
            f"crf {crf!r}: use an integer from {lo} (lossless) to {hi} (lowest quality); 18 "
            "is visually lossless"
        )
    if odd_size not in ODD_SIZES:
        raise VideoError(f"odd_size must be one of {', '.join(ODD_SIZES)}, not {odd_size!r}")


def export_frames(
    frames: Iterable[np.ndarray],
    path: str | Path,
    timing: VideoTiming,
    *,
    overwrite: bool = False,
    protect: Iterable[str | Path] = (),
    crf: int = 18,
    gop: int = 12,
    odd_size: str = "yuv444",
    metadata: dict[str, str] | None = None,
) -> ProgressGenerator[Path]:
    """Encode ``frames`` (uint8 RGB, all one size) to ``path``; yields progress per frame."""
    check_encoding(crf, odd_size)
    out = check_output(path, overwrite=overwrite, protect=protect)
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        written = yield from _encode(
            frames, tmp, timing, crf=crf, gop=gop, odd_size=odd_size, metadata=metadata or {}
        )
        if written != timing.frames:
            raise VideoError(
                f"{out}: got {written} frames but the timing describes {timing.frames}"
            )
        default_permissions(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write_video(
    frames: Iterable[np.ndarray] | np.ndarray,
    path: str | Path,
    timing: VideoTiming | None = None,
    *,
    rate: Fraction | int | None = None,
    **kwargs,
) -> Path:
    """Encode a whole clip; ``timing`` from the source, or a constant ``rate``."""
    if timing is None:
        if rate is None:
            raise VideoError("write_video needs the source timing or a frame rate")
        timing = VideoTiming.constant(len(frames), Fraction(rate))  # type: ignore[arg-type]
    return run_to_end(export_frames(frames, path, timing, **kwargs))


def _encode(
    frames: Iterable[np.ndarray],
    tmp: Path,
    timing: VideoTiming,
    *,
    crf: int,
    gop: int,
    odd_size: str,
    metadata: dict[str, str],
) -> Iterator[Progress]:
    import av

    container = av.open(str(tmp), mode="w", format="mov" if tmp.suffix == ".mov" else "mp4")
    container.metadata.clear()
    container.metadata.update(metadata)
    stream = None
    count = 0
    pts0 = timing.pts[0]
    size: tuple[int, int] | None = None
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise VideoError(
                    f"frames must be uint8 RGB (H, W, 3), got {frame.dtype} {frame.shape}"
                )
            if count >= timing.frames:
                raise VideoError(f"more frames than the {timing.frames} the timing describes")
            if stream is None:
                size = frame.shape[:2]
                stream, pad = _add_stream(container, timing, size, crf, gop, odd_size)
            elif frame.shape[:2] != size:
                raise VideoError(
                    f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"the clip is {size[1]}x{size[0]}"
                )
            if pad != (0, 0):
                frame = np.pad(frame, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = timing.pts[count] - pts0
            vf.time_base = timing.time_base
            for packet in stream.encode(vf):
                container.mux(packet)
            count += 1
            yield Progress("export", count, timing.frames)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
    return count


def _add_stream(
    container, timing: VideoTiming, hw: tuple[int, int], crf: int, gop: int, odd_size: str
):
    h, w = hw
    odd = bool(h % 2 or w % 2)
    pad = (h % 2, w % 2) if odd and odd_size == "pad" else (0, 0)
    stream = container.add_stream("libx264", rate=timing.rate)
    stream.width, stream.height = w + pad[1], h + pad[0]
    stream.pix_fmt = "yuv444p" if odd and odd_size == "yuv444" else "yuv420p"
    stream.time_base = timing.time_base
    stream.codec_context.time_base = timing.time_base
    stream.options = {"crf": str(crf), "g": str(gop), "keyint_min": "1", "bf": "0"}
    stream.metadata.clear()
    return stream, pad


def reencode(
    source: str | Path,
    output: str | Path,
    *,
    overwrite: bool = False,
    crf: int = 18,
    odd_size: str = "yuv444",
    on_damaged: str = "error",
) -> ProgressGenerator[dict[str, Any]]:
    """Re-encode a clip frame for frame with its exact timing (the CLI's ``export``).

    Everything is checked before any decoding; then one decode-only pass finds damaged
    frames (an error, or stood in for with ``on_damaged="repeat"``). Where the output
    departs from the source's claims a JSON sidecar says how. Returns the output's probe
    record with ``output`` and, when written, ``sidecar`` and the deviations.
    """
    from .project import atomic_write_json
    from .video import DamagedFrameError, VideoReader, check_frames, damaged_frame_message, probe

    check_encoding(crf, odd_size)
    check_output(output, overwrite=overwrite, protect=[source])
    info = yield from check_frames(probe(source))
    if info.damaged and on_damaged == "error":
        raise DamagedFrameError(
            damaged_frame_message(info.path, list(info.damaged), info.frames, info.timing)
        )
    with VideoReader(source, info=info, on_damaged=on_damaged) as reader:
        out = yield from export_frames(
            reader.iter_frames(),
            output,
            info.timing,
            overwrite=overwrite,
            protect=[source],
            crf=crf,
            odd_size=odd_size,
        )
    result = {**probe(out).to_dict(), "output": str(out)}
    record = info_record(info, on_damaged)
    if record["deviations"]:  # every departure from the source is written down beside it
        sidecar = Path(str(out) + ".json")
        atomic_write_json(sidecar, {"tool": "napari-diffslva", "source": info.to_dict(), **record})
        result.update(record, sidecar=str(sidecar))
    return result
