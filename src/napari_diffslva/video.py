"""Frame-exact video reading: probe, random access, lazy dask arrays.

Timing is kept exactly as the source has it: the rate as a fraction (30000/1001 stays
30000/1001), the stream's time base and every frame's presentation timestamp, so that an
export lines up frame for frame with annotations made on the original (SignStream, ELAN).
Frames come out as uint8 RGB ``(H, W, 3)`` with the source's rotation applied; grey and
alpha sources are converted to RGB (alpha is dropped).

The frames of a clip are the frames that decode, not what the container's header claims:
a clip cut without rewriting its index, a stream whose last packets are lost or an edit
list all make the header over-count. :func:`probe` counts the packets (cheap, no decode),
decodes only the tail to find where decodable frames end, and reports the header's claim
beside the real count. A frame in the middle that does not decode is *damaged*:
:func:`check_frames` finds all of them with one decode-only pass, and a reader either
stops there (``on_damaged="error"``, the default) or shows the previous good frame in its
place (``"repeat"``), keeping the frame count and timing.

Supported: anything FFmpeg decodes (.mp4 .mov .avi .mkv .webm .gif ...), single images,
and folders of numbered images (rate given by the caller, 25 fps by default).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SettingsError, VideoError
from .progress import Progress, ProgressGenerator

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_SIDE = 8192  # larger frames cannot go through the pipeline on any GPU we know of
DEFAULT_IMAGE_RATE = Fraction(25)
DAMAGED_FRAME_POLICIES = ("error", "repeat")  # what a reader does with a damaged frame
# Slice threads only: frame threading drops extra frames next to a damaged one, and how
# many depends on thread timing, so the frames that decode would depend on machine load.
_DECODE_THREADS = "SLICE"
_FIRST_FRAME_PACKETS = 64  # packets tried for a first decodable frame before giving up
_DECODE_FORWARD = 16  # a reader skips up to this many frames by decoding instead of seeking


class DamagedFrameError(VideoError):
    """A frame in the middle of a clip does not decode (and the policy is ``error``)."""


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
    header_frames: int | None = None  # what the container claims (None: it claims nothing)
    header_duration: float | None = None  # seconds the container claims
    end_missing: bool = False  # the stream's last packets (or data) do not decode
    edit_list: bool = False  # the container hides some of its packets (an edit list)
    damaged: tuple[int, ...] | None = None  # frames that do not decode; None: not checked
    other_streams: tuple[str, ...] = ()  # kinds of the streams not used ("audio", ...)

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
            "header_frames": self.header_frames,
            "header_duration": self.header_duration,
            "end_missing": self.end_missing,
            "edit_list": self.edit_list,
            "other_streams": list(self.other_streams),
        }
        if self.damaged is not None:
            d["damaged_frames"] = list(self.damaged)
        if with_timestamps:
            d["timestamps"] = self.timing.timestamps.tolist()
        return d


def source_notes(source: dict[str, Any]) -> list[str]:
    """Every way a clip (``VideoInfo.to_dict()``) departs from what its container claims or
    from a clean decode, one sentence each: what a corpus maintainer must know."""
    notes = []
    frames, claimed = source.get("frames"), source.get("header_frames")
    if claimed is not None and claimed != frames:
        why = (
            "its last packets do not decode"
            if source.get("end_missing")
            else "an edit list hides some"
            if source.get("edit_list")
            else "it over-counts"
        )
        notes.append(
            f"the container claims {claimed} frames; {frames} decode ({why}); "
            f"only the {frames} decodable frames are used"
        )
    elif source.get("end_missing"):
        claimed_s, duration = source.get("header_duration"), source.get("duration")
        claim = f"the container claims {claimed_s:.3f} s; " if claimed_s is not None else ""
        notes.append(
            f"{claim}the stream ends after {duration:.3f} s ({frames} frames "
            "decode); its last packets are missing"
        )
    damaged = source.get("damaged_frames") or []
    if damaged:
        notes.append(f"{len(damaged)} damaged frame(s) do not decode: {_listing(damaged)}")
    other = source.get("other_streams") or []
    if other:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(other).items()))
        voice = "; a voice identifies a person" if "audio" in other else ""
        notes.append(
            f"the source's other streams ({kinds}) are not used and not copied: "
            f"the export is its first video stream alone{voice}"
        )
    return notes


def _listing(indices: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (f" ... ({len(indices)} in all)" if len(indices) > limit else "")


def stand_ins(damaged: tuple[int, ...] | list[int], frames: int) -> dict[int, int]:
    """Which good frame stands in for each damaged one: the previous good frame, or the
    first good frame when the clip starts damaged."""
    bad = set(damaged)
    good = [i for i in range(frames) if i not in bad]
    if not good:
        return {}
    out, last = {}, None
    for i in range(frames):
        if i in bad:
            out[i] = last if last is not None else good[0]
        else:
            last = i
    return out


def damaged_frame_message(path: Path, damaged: list[int], frames: int, timing: VideoTiming) -> str:
    """The one-line error for damaged frames: which ones, and the option that goes on."""
    first = damaged[0]
    where = (
        f"frame {first}"
        if len(damaged) == 1
        else f"{len(damaged)} frames ({_listing(damaged, 10)}); the first, frame {first},"
    )
    return (
        f"{path}: {where} of {frames} (at {timing.timestamps[first]:.3f} s) is damaged "
        "and does not decode; set on_damaged_frame to 'repeat' (--on-damaged-frame "
        "repeat) to use the previous good frame in its place, or repair the file"
    )


def check_policy(policy: str) -> str:
    if policy not in DAMAGED_FRAME_POLICIES:
        raise SettingsError(
            f"on_damaged_frame={policy!r}: choose one of {', '.join(DAMAGED_FRAME_POLICIES)}"
        )
    return policy


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
        path=p,
        timing=timing,
        width=w,
        height=h,
        codec="image",
        pix_fmt="rgb24",
        rotation=0,
        content_hash=_sha256(files),
        kind="images",
        files=tuple(files),
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


@dataclass(frozen=True)
class _Packet:
    """What demuxing tells about one packet, in decode order."""

    pts: int
    keyframe: bool
    hidden: bool  # marked discard: decoded for reference only (an edit list skips it)
    duration: int


@dataclass(frozen=True)
class _Header:
    """What the container claims about its video stream."""

    codec: str
    time_base: Fraction
    nominal: Fraction | None  # the frame rate the header gives, if any
    start: int | None
    duration: int | None  # in time_base units
    frames: int | None
    seconds: float | None  # the video's duration in seconds, when the header has it


def _header(container, stream) -> _Header:
    import av

    time_base = Fraction(stream.time_base)
    if stream.duration:
        seconds = float(stream.duration * time_base)
    elif container.duration and len(container.streams) == 1:
        # Matroska keeps only the file's duration: the video's own only when it is
        # the only stream (with audio it is the longer of the two)
        seconds = container.duration / av.time_base
    else:
        seconds = None
    return _Header(
        codec=stream.codec_context.name if stream.codec_context else "unknown",
        time_base=time_base,
        nominal=stream.average_rate or stream.guessed_rate,
        start=stream.start_time,
        duration=stream.duration,
        frames=int(stream.frames or 0) or None,
        seconds=seconds,
    )


def _demux(container, stream) -> tuple[list[_Packet], bool]:
    """Every packet of the stream in decode order, and whether data was lost on the way
    (the demuxer stopped on an error or handed out a short packet)."""
    import av

    packets: list[_Packet] = []
    data_lost = False
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            if packet.is_corrupt:
                data_lost = True
            packets.append(
                _Packet(
                    int(packet.pts),
                    bool(packet.is_keyframe),
                    bool(packet.is_discard),
                    int(packet.duration or 0),
                )
            )
    except av.error.FFmpegError:
        data_lost = True  # the packets read so far are kept; the tail check decides
    return packets, data_lost


def _timing(header: _Header, packets: list[_Packet], last: int) -> VideoTiming:
    """The timing of the frames up to packet ``last`` (the last one that decodes)."""
    pts = sorted(pk.pts for pk in packets[: last + 1] if not pk.hidden)
    durations = {pk.pts: pk.duration for pk in packets}
    steps = np.diff(pts)
    typical = int(np.median(steps)) if steps.size else 0
    if steps.size == 0:
        rate = Fraction(header.nominal or 25)
        typical = round(1 / (rate * header.time_base)) if rate else 1
    else:
        rate = Fraction(header.nominal or 1 / (typical * header.time_base))
    end = pts[-1] + (durations.get(pts[-1]) or typical or 1)
    if header.duration and header.start is not None:
        stream_end = int(header.start + header.duration)
        if pts[-1] < stream_end <= pts[-1] + 4 * max(typical, 1):
            end = stream_end
    return VideoTiming(rate=rate, time_base=header.time_base, pts=tuple(pts), end_pts=end)


def _probe_video(p: Path) -> VideoInfo:
    with _open_container(p) as container:
        if not container.streams.video:
            raise VideoError(f"{p}: has no video stream")
        stream = container.streams.video[0]
        other = tuple(str(s.type) for s in container.streams if s.index != stream.index)
        header = _header(container, stream)
        packets, data_lost = _demux(container, stream)
    shown = sorted(pk.pts for pk in packets if not pk.hidden)
    if not shown:
        raise VideoError(f"{p}: contains no video frames")
    if len(set(shown)) != len(shown):
        raise VideoError(f"{p}: duplicate frame timestamps; remux the file with ffmpeg first")
    first = _decode_first(p)  # proves the codec is supported and gives rotation
    last = _last_decodable(p, packets)
    if last is None:
        raise VideoError(f"{p}: no frame could be decoded; the file is damaged or truncated")
    timing = _timing(header, packets, last)
    rotation = _rotation_of(first)
    w, h = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    _check_size(p, w, h)
    # The end is missing when packets past the last decodable frame exist but do not decode,
    # or when the stream stops more than a frame short of the duration the header claims.
    short = header.seconds is not None and header.seconds > timing.duration + 1.5 / timing.rate
    return VideoInfo(
        path=p,
        timing=timing,
        width=w,
        height=h,
        codec=header.codec,
        pix_fmt=str(first.format.name),
        rotation=rotation,
        content_hash=_sha256([p]),
        kind="video",
        header_frames=header.frames,
        header_duration=None if header.seconds is None else round(header.seconds, 6),
        end_missing=timing.frames < len(shown) or short or data_lost,
        edit_list=any(pk.hidden for pk in packets),
        other_streams=other,
    )


def _decoded(container, stream) -> Iterator[Any]:
    """Decoded frames from the container's position on. A packet that fails to decode is
    skipped (its frame is then absent, which callers notice by timestamp); unreadable data
    ends the stream."""
    import av

    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                continue
    except av.error.FFmpegError:
        return


def _decode_first(p: Path):
    import av

    with _open_container(p) as container:
        stream = container.streams.video[0]
        error = None
        tried = 0
        try:
            for packet in container.demux(stream):
                tried += 1
                try:
                    for frame in packet.decode():
                        return frame
                except av.error.FFmpegError as exc:
                    error = error or exc
                if tried >= _FIRST_FRAME_PACKETS:
                    break
        except av.error.FFmpegError as exc:
            error = error or exc
    if error is not None:
        raise VideoError(
            f"{p}: cannot decode its frames ({_short(error)}); unsupported codec or damaged file"
        ) from error
    raise VideoError(f"{p}: no frame could be decoded; the file is damaged or truncated")


def _last_decodable(p: Path, packets: list[_Packet]) -> int | None:
    """Decode-order position of the clip's last packet whose frame decodes (``None``: none).

    Data is lost at the end of a file in decode order, so every packet after that one
    belongs to the missing end (with B-frames, its frame may show before a kept one).
    Decodes only the last GOP (from its keyframe to the end); when nothing there decodes,
    the GOP before it, and so on, so a clip whose data stops half-way costs one decode of
    the lost part, not of the whole clip.
    """
    keyframes = [i for i, pk in enumerate(packets) if pk.keyframe] or [0]
    if keyframes[0] != 0:
        keyframes.insert(0, 0)
    stop = len(packets)
    for start in reversed(keyframes):
        good = _decode_span(p, packets, start, stop)
        found = [i for i in range(start, stop) if packets[i].pts in good and not packets[i].hidden]
        if found:
            return found[-1]
        stop = start
    return None


def _decode_span(p: Path, packets: list[_Packet], start: int, stop: int) -> set[int]:
    """Timestamps of the frames that decode cleanly from ``packets[start:stop]``, decoding
    from the keyframe at ``start`` (a seek) and flushing after ``stop``."""
    import av

    wanted = {pk.pts for pk in packets[start:stop]}
    good: set[int] = set()
    with _open_container(p) as container:
        stream = container.streams.video[0]
        stream.thread_type = _DECODE_THREADS
        if start > 0:
            container.seek(packets[start].pts, stream=stream, backward=True, any_frame=False)
        fed = 0
        with contextlib.suppress(av.error.FFmpegError):  # unreadable data: the span ends
            for packet in container.demux(stream):
                if packet.size == 0:
                    break
                fed += packet.pts in wanted
                with contextlib.suppress(av.error.FFmpegError):  # this frame is absent
                    good.update(f.pts for f in packet.decode() if not f.is_corrupt)
                if fed == len(wanted):
                    break
        with contextlib.suppress(av.error.FFmpegError):
            good.update(f.pts for f in stream.codec_context.decode(None) if not f.is_corrupt)
    return good


def check_frames(info: VideoInfo) -> ProgressGenerator[VideoInfo]:
    """``info`` with :attr:`VideoInfo.damaged` filled in: one decode-only pass (no colour
    conversion) over the whole clip, so damage is found before any long computation."""
    if info.kind != "video":
        return replace(info, damaged=())
    wanted = set(info.timing.pts)
    n = info.frames
    good: set[int] = set()
    seen = 0
    start = time.perf_counter()
    with _open_container(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = _DECODE_THREADS
        for frame in _decoded(container, stream):
            if frame.pts not in wanted:
                continue
            seen += 1
            if not frame.is_corrupt:
                good.add(frame.pts)
            if seen % 64 == 0 or seen == n:
                now = time.perf_counter()
                yield Progress("check", min(seen, n), n, now - start)
                start = now
    return replace(info, damaged=tuple(i for i, t in enumerate(info.timing.pts) if t not in good))


# -- reading ------------------------------------------------------------------------------


class VideoReader:
    """Random and sequential access to the frames of one clip, thread-safe.

    Sequential reads continue decoding; a jump seeks to the nearest keyframe before the
    target and decodes forward to the exact timestamp, so ``reader[i]`` is always frame i.
    A damaged frame (absent from the decoder's output, or flagged corrupt by it) raises
    :class:`DamagedFrameError` with ``on_damaged="error"``; with ``"repeat"`` the previous
    good frame stands in and the index is added to :attr:`damaged`.
    """

    def __init__(
        self, path: str | Path, *, info: VideoInfo | None = None, on_damaged: str = "error"
    ) -> None:
        self.info = info or probe(path)
        self.on_damaged = check_policy(on_damaged)
        self._lock = threading.Lock()
        self._container = None
        self._decoder: Iterator[Any] | None = None
        self._ahead: Any = None  # a decoded frame past the last target (the next one's)
        self._next_index = 0
        self._bad: set[int] = set(self.info.damaged or ())
        self._last_good: tuple[int, np.ndarray] | None = None
        self._tainted = False  # this decoder has met damage since it was opened

    def __len__(self) -> int:
        return self.info.frames

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.info.frames, self.info.height, self.info.width, 3)

    @property
    def damaged(self) -> list[int]:
        """Damaged frames known so far (from :func:`check_frames`, or met while reading)."""
        return sorted(self._bad)

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
            self._ahead = None

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
        if index not in self._bad:
            frame = self._decode_index(index)
            if frame is not None:
                rgb = self._to_rgb(frame)
                self._last_good = (index, rgb)
                return rgb
            self._bad.add(index)
        if self.on_damaged == "error":
            raise DamagedFrameError(
                damaged_frame_message(self.info.path, [index], self.info.frames, self.info.timing)
            )
        return self._stand_in(index)

    def _stand_in(self, index: int) -> np.ndarray:
        """The previous good frame (the first good one when none precedes ``index``)."""
        last = self._last_good
        if (
            last is not None
            and last[0] < index
            and all(k in self._bad for k in range(last[0] + 1, index))
        ):
            return last[1]
        candidates = list(range(index - 1, -1, -1)) + list(range(index + 1, self.info.frames))
        for j in candidates:
            if j in self._bad:
                continue
            frame = self._decode_index(j)
            if frame is not None:
                rgb = self._to_rgb(frame)
                self._last_good = (j, rgb)
                return rgb
            self._bad.add(j)
        raise VideoError(f"{self.info.path}: no frame of this clip decodes")

    def _decode_index(self, index: int):
        """The decoded frame ``index``, or None when it is damaged."""
        ahead = index - self._next_index  # a short jump forward decodes on, without a seek
        if self._decoder is None or not 0 <= ahead <= _DECODE_FORWARD:
            self._seek(index)
        target = self.info.timing.pts[index]
        self._next_index = index + 1
        while True:
            frame, self._ahead = self._ahead, None
            if frame is None:
                frame = next(self._decoder, None)
            if frame is None:  # the stream ended before this frame
                self._decoder = None
                self._tainted = True
                return None
            if frame.pts is None or frame.pts < target:
                continue
            if frame.pts > target:  # the decoder skipped this frame: it did not decode
                self._ahead = frame
                self._tainted = True
                return None
            if frame.is_corrupt:
                self._tainted = True
                return None
            return frame

    def _seek(self, index: int) -> None:
        if self._tainted and self._container is not None:
            # after damage a flushed decoder can still differ by a few pixels from a fresh
            # one, so a stand-in decoded by seeking would not match the same frame read in
            # order: start from a fresh container instead
            self._container.close()
            self._container = None
            self._tainted = False
        if self._container is None:
            self._container = _open_container(self.info.path)
            self._container.streams.video[0].thread_type = _DECODE_THREADS
        stream = self._container.streams.video[0]
        if index == 0:
            self._container.seek(0, stream=stream, backward=True, any_frame=False)
        else:
            self._container.seek(
                self.info.timing.pts[index], stream=stream, backward=True, any_frame=False
            )
        self._decoder = _decoded(self._container, stream)
        self._ahead = None

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
