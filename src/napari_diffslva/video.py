"""Frame-exact video reading: probe, random access, lazy dask arrays.

Timing is kept exactly as the source has it: the rate as a fraction (30000/1001 stays
30000/1001), the stream's time base and every frame's presentation timestamp, so that an
export lines up frame for frame with annotations made on the original (SignStream, ELAN).
Frames come out as uint8 RGB ``(H, W, 3)`` with the source's rotation applied; grey and
alpha sources are converted to RGB (alpha is dropped).

Supported: anything FFmpeg decodes (.mp4 .mov .avi .mkv .webm .gif ...), single images,
and folders of numbered images (rate given by the caller, 25 fps by default).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_SIDE = 8192  # larger frames cannot go through the pipeline on any GPU we know of
DEFAULT_IMAGE_RATE = Fraction(25)


@dataclass(frozen=True)
class VideoTiming:
    """Exact timing of a clip: what an export needs to stay frame-aligned."""

    rate: Fraction  # nominal (average) frame rate
    time_base: Fraction  # unit of ``pts``
    pts: tuple[int, ...]  # presentation timestamp of every frame, in display order
    end_pts: int  # where the last frame ends (its pts + its duration)

    @property
    def frames(self) -> int:
        return len(self.pts)

    @property
    def timestamps(self) -> np.ndarray:
        """Seconds from the first frame, one per frame."""
        start = self.pts[0]
        return np.array([float((p - start) * self.time_base) for p in self.pts])

    @property
    def duration(self) -> float:
        return float((self.end_pts - self.pts[0]) * self.time_base)

    @property
    def variable_rate(self) -> bool:
        steps = np.diff(np.asarray(self.pts + (self.end_pts,), dtype=np.int64))
        return bool(steps.size > 1 and steps.min() != steps.max())

    @classmethod
    def constant(cls, frames: int, rate: Fraction) -> VideoTiming:
        """Timing of ``frames`` frames at a constant ``rate`` (for arrays without a source)."""
        rate = Fraction(rate)
        return cls(rate=rate, time_base=1 / rate, pts=tuple(range(frames)), end_pts=frames)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": f"{self.rate.numerator}/{self.rate.denominator}",
            "time_base": f"{self.time_base.numerator}/{self.time_base.denominator}",
            "pts": list(self.pts),
            "end_pts": self.end_pts,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoTiming:
        return cls(
            rate=Fraction(d["rate"]),
            time_base=Fraction(d["time_base"]),
            pts=tuple(int(p) for p in d["pts"]),
            end_pts=int(d["end_pts"]),
        )


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a clip without decoding all of it."""

    path: Path
    timing: VideoTiming
    width: int  # as displayed (rotation applied)
    height: int
    codec: str
    pix_fmt: str
    rotation: int  # degrees the stored frames are turned to display them
    content_hash: str  # sha256 of the file bytes: identifies the content, not the name
    kind: str  # "video" | "images"
    files: tuple[Path, ...] = field(default=(), repr=False)  # for image folders

    @property
    def frames(self) -> int:
        return self.timing.frames

    @property
    def rate(self) -> Fraction:
        return self.timing.rate

    @property
    def fps(self) -> float:
        return float(self.timing.rate)

    @property
    def duration(self) -> float:
        return self.timing.duration

    def to_dict(self, *, with_timestamps: bool = False) -> dict[str, Any]:
        """JSON-friendly summary (no file name: outputs must not leak it)."""
        d: dict[str, Any] = {
            "frames": self.frames,
            "rate": f"{self.rate.numerator}/{self.rate.denominator}",
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "duration": self.duration,
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "rotation": self.rotation,
            "variable_rate": self.timing.variable_rate,
            "content_hash": self.content_hash,
        }
        if with_timestamps:
            d["timestamps"] = self.timing.timestamps.tolist()
        return d


# -- probing ------------------------------------------------------------------------------


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _check_size(path: Path, width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE:
        raise VideoError(
            f"{path}: frames of {width}x{height} are larger than {MAX_SIDE} px on a side; "
            "downscale the clip first"
        )


def probe(path: str | Path, *, image_rate: Fraction = DEFAULT_IMAGE_RATE) -> VideoInfo:
    """Read a clip's exact timing and format; raise :class:`VideoError` on bad input."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file or folder")
    if p.is_dir():
        return _probe_images(p, sorted_images(p), image_rate)
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: the file is empty (0 bytes)")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return _probe_images(p, [p], image_rate)
    return _probe_video(p)


def sorted_images(folder: Path) -> list[Path]:
    files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    if not files:
        raise VideoError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(files, key=_natural_key)


def _probe_images(p: Path, files: list[Path], rate: Fraction) -> VideoInfo:
    first = _read_image(files[0])
    h, w = first.shape[:2]
    _check_size(p, w, h)
    for f in files[1:]:
        if _image_size(f) != (h, w):
            raise VideoError(f"{f}: image size differs from {files[0].name} ({w}x{h})")
    timing = VideoTiming.constant(len(files), Fraction(rate))
    return VideoInfo(
        path=p, timing=timing, width=w, height=h, codec="image", pix_fmt="rgb24", rotation=0,
        content_hash=_sha256(files), kind="images", files=tuple(files),
    )


def _image_size(path: Path) -> tuple[int, int]:
    return _read_image(path).shape[:2]


def _read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise VideoError(f"{path}: not a readable image")
    return _image_to_rgb(img)


def _image_to_rgb(img: np.ndarray) -> np.ndarray:
    """OpenCV image (grey, BGR or BGRA, 8 or 16 bit) to uint8 RGB."""
    import cv2

    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _open_container(p: Path):
    import av

    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoError(f"{p}: not a readable video ({_short(exc)})") from exc


def _short(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).split("\n")[0][:160]


def _rotation_of(first_frame) -> int:
    return int(round(getattr(first_frame, "rotation", 0) or 0)) % 360


def _probe_video(p: Path) -> VideoInfo:
    import av

    with _open_container(p) as container:
        if not container.streams.video:
            raise VideoError(f"{p}: has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        time_base = Fraction(stream.time_base)
        nominal = stream.average_rate or stream.guessed_rate
        stream_start, stream_duration = stream.start_time, stream.duration
        try:
            pts: list[int] = []
            last_duration = 0
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                pts.append(int(packet.pts))
                if packet.duration:
                    last_duration = int(packet.duration)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{p}: the file is damaged or truncated ({_short(exc)})") from exc
        if not pts:
            raise VideoError(f"{p}: contains no video frames")
        pts.sort()
        if len(set(pts)) != len(pts):
            raise VideoError(f"{p}: duplicate frame timestamps; remux the file with ffmpeg first")

    # Decode the first frame: proves the codec is supported and gives rotation.
    first = _decode_first(p)
    rotation = _rotation_of(first)
    steps = np.diff(pts)
    typical = int(np.median(steps)) if steps.size else 0
    if steps.size == 0:
        rate = Fraction(nominal or 25)
        typical = round(1 / (rate * time_base)) if rate else 1
    else:
        rate = Fraction(nominal or 1 / (typical * time_base))
    end = pts[-1] + (last_duration or typical or 1)
    if stream_duration and stream_start is not None:
        stream_end = int(stream_start + stream_duration)
        if pts[-1] < stream_end <= pts[-1] + 4 * max(typical, 1):
            end = stream_end
    w, h = first.width, first.height
    if rotation in (90, 270):
        w, h = h, w
    _check_size(p, w, h)
    timing = VideoTiming(rate=rate, time_base=time_base, pts=tuple(pts), end_pts=end)
    return VideoInfo(
        path=p, timing=timing, width=w, height=h, codec=codec,
        pix_fmt=str(first.format.name), rotation=rotation, content_hash=_sha256([p]),
        kind="video",
    )


def _decode_first(p: Path):
    import av

    with _open_container(p) as container:
        try:
            for frame in container.decode(video=0):
                return frame
        except av.error.FFmpegError as exc:
            raise VideoError(
                f"{p}: cannot decode its frames ({_short(exc)}); unsupported codec or damaged file"
            ) from exc
    raise VideoError(f"{p}: no frame could be decoded; the file is damaged or truncated")


# -- reading ------------------------------------------------------------------------------


class VideoReader:
    """Random and sequential access to the frames of one clip, thread-safe.

    Sequential reads continue decoding; a jump seeks to the nearest keyframe before the
    target and decodes forward to the exact timestamp, so ``reader[i]`` is always frame i.
    """

    def __init__(self, path: str | Path, *, info: VideoInfo | None = None) -> None:
        self.info = info or probe(path)
        self._lock = threading.Lock()
        self._container = None
        self._decoder: Iterator[Any] | None = None
        self._next_index = 0
        self._index_of_pts = {pt: i for i, pt in enumerate(self.info.timing.pts)}

    def __len__(self) -> int:
        return self.info.frames

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.info.frames, self.info.height, self.info.width, 3)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._container is not None:
                self._container.close()
            self._container = None
            self._decoder = None

    def __getitem__(self, index: int) -> np.ndarray:
        n = self.info.frames
        if not -n <= index < n:
            raise IndexError(f"frame {index} out of range for a clip of {n} frames")
        index %= n
        with self._lock:
            if self.info.kind == "images":
                return _read_image(self.info.files[index])
            return self._read_video_frame(index)

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames ``start..stop-1`` in order (decodes sequentially after one seek)."""
        stop = self.info.frames if stop is None else min(stop, self.info.frames)
        for i in range(start, stop):
            yield self[i]

    def _read_video_frame(self, index: int) -> np.ndarray:
        import av

        if self._decoder is None or index != self._next_index:
            self._seek(index)
        target = self.info.timing.pts[index]
        try:
            for frame in self._decoder:
                if frame.pts is None:
                    continue
                if frame.pts < target:
                    continue
                if frame.pts != target:
                    raise VideoError(
                        f"{self.info.path}: frame {index} (pts {target}) missing after seek"
                    )
                self._next_index = index + 1
                return self._to_rgb(frame)
        except av.error.FFmpegError as exc:
            self._decoder = None
            raise VideoError(
                f"{self.info.path}: frame {index} cannot be decoded ({_short(exc)}); "
                "the file is damaged or truncated"
            ) from exc
        self._decoder = None
        raise VideoError(f"{self.info.path}: ends before frame {index}; the file is truncated")

    def _seek(self, index: int) -> None:
        if self._container is None:
            self._container = _open_container(self.info.path)
            self._container.streams.video[0].thread_type = "AUTO"
        stream = self._container.streams.video[0]
        if index == 0:
            self._container.seek(0, stream=stream, backward=True, any_frame=False)
        else:
            self._container.seek(self.info.timing.pts[index], stream=stream, backward=True,
                                 any_frame=False)
        self._decoder = self._container.decode(stream)

    def _to_rgb(self, frame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        rot = self.info.rotation
        if rot:
            # Display matrix rotation is counter-clockwise; np.rot90 turns counter-clockwise.
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rot // 90))
        return rgb


def read_frames(path: str | Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    """All frames ``start..stop-1`` as one ``(T, H, W, 3)`` uint8 array (small clips only)."""
    with VideoReader(path) as reader:
        frames = list(reader.iter_frames(start, stop))
    if not frames:
        raise VideoError(f"{path}: no frames in range {start}..{stop}")
    return np.stack(frames)


def as_dask(reader: VideoReader):
    """A lazy ``(T, H, W, 3)`` dask array: one chunk per frame, decoded only when read."""
    import dask.array as da

    t, h, w, c = reader.shape
    name = f"diffslva-video-{reader.info.content_hash[:16]}-{id(reader):x}"
    graph = {(name, i, 0, 0, 0): (_frame_block, reader, i) for i in range(t)}
    chunks = ((1,) * t, (h,), (w,), (c,))
    return da.Array(graph, name, chunks, dtype=np.uint8)


def _frame_block(reader: VideoReader, index: int) -> np.ndarray:
    return reader[index][None]
