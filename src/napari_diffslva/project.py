"""The run folder: the unit of work and of recovery.

Layout (every stage writes only its own names; all writes are atomic)::

    RUN_DIR/
      run.json                 source info (content hash, timing, size), tool version
      settings.json            the settings of the last run of each stage
      cache/<stage>-<key>.npz  cached inputs (edges, flow, faces), key = hash(video, settings)
      edits.json               manual corrections (face boxes, anchor; format: prepare.edits)
      masks/000123.png         face masks a person painted (255 = face)
      privacy.json             the anchor's identity gate and the result's self-audit
      LEAKING-IDENTITY-<name>  an export held back because it still shows the signer
      frames/<stage>/000123.png  finished output frames, one file each
      frames/<stage>/manifest.json  which frames are done, with the settings hash
      state/, style_reference.json  the engine's resume state and anchor style

Only :class:`RunFolder` knows these names; everything else asks it.

The napari session, the CLI and the batch runner share this format, so a clip can be
prepared and corrected in napari and anonymized on a GPU server. Original frames are
never stored here, only derived data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DiffslvaError, WriteError


def settings_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (content hash + settings)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def default_permissions(path: str | os.PathLike) -> None:
    """Give a file made by ``mkstemp`` (always 0600) the permissions the umask allows."""
    os.chmod(path, 0o666 & ~_umask())


def unwritable(folder: str | os.PathLike, exc: OSError) -> WriteError:
    """The one-line error for a folder that refused a write."""
    return WriteError(
        f"{folder}: cannot write here ({exc.strerror or exc}); choose a folder you can write to"
    )


def check_writable(folder: str | os.PathLike) -> None:
    """Create (if missing) and probe ``folder`` with a hidden temp file, so a read-only or
    forbidden folder fails before any work starts (as root, only a read-only disk does)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=folder)
    except OSError as exc:
        raise unwritable(folder, exc) from exc
    os.close(fd)
    os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
    except OSError as exc:
        raise unwritable(path.parent, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a vanished folder
            raise unwritable(path.parent, exc) from exc
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DiffslvaError(
            f"{path}: corrupt JSON ({exc}); delete it to start that stage anew"
        ) from exc


RUN_SUFFIX = ".diffslva-run"


LEAKING_PREFIX = "LEAKING-IDENTITY-"  # the name of a held-back export


class RunFolder:
    """A run folder on disk; cheap to construct, every method reads or writes files."""

    @classmethod
    def beside(cls, output: str | os.PathLike) -> RunFolder:
        """``OUT.mp4`` -> ``OUT.diffslva-run/`` beside it (named after the output, never
        after the source, whose name may identify the signer)."""
        out = Path(output)
        return cls(out.with_name(out.stem + RUN_SUFFIX))

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._writable = False

    # -- whole-run metadata ---------------------------------------------------------------
    def ensure(self) -> RunFolder:
        """Create the folder; a folder that cannot be written fails here, before any work."""
        if not self._writable:
            check_writable(self.root)
            self._writable = True
        return self

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    def read_run(self) -> dict[str, Any]:
        return read_json(self.run_json, {})

    def write_run(self, info: dict[str, Any]) -> None:
        self.ensure()
        atomic_write_json(self.run_json, info)

    def check_source(self, content_hash: str) -> None:
        """Refuse to mix results of two different videos in one folder."""
        known = self.read_run().get("content_hash")
        if known is not None and known != content_hash:
            raise DiffslvaError(
                f"{self.root}: this run folder belongs to another video; choose a new --run-dir"
            )

    def read_settings(self, stage: str) -> dict[str, Any]:
        return read_json(self.root / "settings.json", {}).get(stage, {})

    def write_settings(self, stage: str, settings: dict[str, Any]) -> None:
        all_settings = read_json(self.root / "settings.json", {})
        all_settings[stage] = settings
        self.ensure()
        atomic_write_json(self.root / "settings.json", all_settings)

    # -- cached arrays --------------------------------------------------------------------
    def cache_path(self, stage: str, key: str) -> Path:
        return self.root / "cache" / f"{stage}-{key}.npz"

    def frame_store(self, stage: str, key: str, frames: int) -> FrameStore:
        """Per-frame cache folder ``cache/<stage>-<key>/`` (see :class:`FrameStore`)."""
        return FrameStore(self.root / "cache" / f"{stage}-{key}", frames)

    def load_cache(self, stage: str, key: str) -> dict[str, np.ndarray] | None:
        path = self.cache_path(stage, key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def save_cache(self, stage: str, key: str, arrays: dict[str, np.ndarray]) -> Path:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path = self.cache_path(stage, key)
        atomic_write_bytes(path, buf.getvalue())
        return path

    # -- manual corrections ---------------------------------------------------------------
    @property
    def edits_json(self) -> Path:
        return self.root / "edits.json"

    def read_edits(self) -> dict[str, Any]:
        return read_json(self.edits_json, {})

    def write_edits(self, edits: dict[str, Any]) -> None:
        self.ensure()
        atomic_write_json(self.edits_json, edits)

    # -- what the run checked about privacy (identity gate, self-audit) -------------------
    @property
    def privacy_json(self) -> Path:
        return self.root / "privacy.json"

    def read_privacy(self) -> dict[str, Any]:
        return read_json(self.privacy_json, {})

    def write_privacy(self, part: str, record: dict[str, Any]) -> None:
        """Store one part (``gate``, ``self_audit``) of the run's privacy record."""
        record_all = self.read_privacy()
        record_all[part] = record
        self.ensure()
        atomic_write_json(self.privacy_json, record_all)

    def held_back_export(self, output: str | os.PathLike) -> Path:
        """Where an export that still shows the signer goes instead of ``output``
        (``fail_on_leak``): into the run folder, under a name that says so."""
        return self.root / f"{LEAKING_PREFIX}{Path(output).name}"

    # -- painted face masks ---------------------------------------------------------------
    def mask_path(self, index: int) -> Path:
        return self.root / "masks" / f"{int(index):06d}.png"

    def read_mask(self, index: int) -> np.ndarray | None:
        """The face mask a person painted for frame ``index`` (float32 0/1), or None."""
        import cv2

        path = self.mask_path(index)
        if not path.is_file():
            return None
        return (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.float32)

    def write_mask(self, index: int, labels: np.ndarray) -> None:
        """Store a painted mask (any label > 0 is face), atomically."""
        import cv2

        ok, png = cv2.imencode(".png", np.where(np.asarray(labels) > 0, 255, 0).astype(np.uint8))
        if not ok:
            raise DiffslvaError(f"could not encode the mask of frame {index} as PNG")
        atomic_write_bytes(self.mask_path(index), png.tobytes())

    def remove_masks(self, frames: Iterable[int]) -> None:
        for t in frames:
            self.mask_path(t).unlink(missing_ok=True)

    # -- streamed output frames -----------------------------------------------------------
    def frames_dir(self, stage: str) -> Path:
        return self.root / "frames" / stage

    def frame_path(self, stage: str, index: int) -> Path:
        return self.frames_dir(stage) / f"{index:06d}.png"

    def write_frame(self, stage: str, index: int, rgb: np.ndarray) -> None:
        """Store one finished frame losslessly (PNG), atomically."""
        import cv2

        ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
        if not ok:
            raise DiffslvaError(f"could not encode frame {index} as PNG")
        atomic_write_bytes(self.frame_path(stage, index), png.tobytes())

    def read_frame(self, stage: str, index: int) -> np.ndarray:
        import cv2

        bgr = cv2.imread(str(self.frame_path(stage, index)), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DiffslvaError(f"{self.frame_path(stage, index)}: missing or unreadable frame")
        return bgr[..., ::-1].copy()

    def manifest(self, stage: str) -> dict[str, Any]:
        return read_json(self.frames_dir(stage) / "manifest.json", {"done": [], "key": None})

    def mark_done(
        self, stage: str, index: int, key: str, extra: dict[str, Any] | None = None
    ) -> None:
        """Record frame ``index`` as finished under settings ``key`` (after its file exists)."""
        man = self.manifest(stage)
        if man.get("key") != key:
            man = {"done": [], "key": key}
        done = set(man["done"])
        done.add(int(index))
        man["done"] = sorted(done)
        if extra:
            man.setdefault("stats", {})[str(index)] = extra
        atomic_write_json(self.frames_dir(stage) / "manifest.json", man)

    def missing_frames(self, stage: str, frames: int) -> list[int]:
        """Frames of ``0 .. frames-1`` that have no file in ``stage`` (whatever their key)."""
        return [i for i in range(frames) if not self.frame_path(stage, i).is_file()]

    def frame_sequence(self, stage: str, frames: int) -> StageFrames:
        """The finished frames of ``stage`` as a read-only sequence (read on access)."""
        return StageFrames(self, stage, frames)

    def done_frames(self, stage: str, key: str) -> set[int]:
        """Frames finished under settings ``key`` whose files exist; others count as not done."""
        man = self.manifest(stage)
        if man.get("key") != key:
            return set()
        return {i for i in man["done"] if self.frame_path(stage, i).is_file()}


class StageFrames:
    """A stage's finished frames as a sequence: ``len()`` and ``[i]`` -> uint8 RGB."""

    def __init__(self, run: RunFolder, stage: str, frames: int) -> None:
        self.run, self.stage, self.frames = run, stage, frames

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, index: int) -> np.ndarray:
        return self.run.read_frame(self.stage, int(index))


class FrameStore:
    """Per-frame arrays on disk (one compressed ``.npz`` per frame).

    Used for per-frame caches (edges, flows) so memory stays flat however long the clip:
    each frame is written when computed and read when needed. A ``complete`` marker is
    written when every frame is there, so a killed run recomputes only the missing ones.
    """

    def __init__(self, folder: Path, frames: int) -> None:
        self.folder = Path(folder)
        self.frames = frames

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.npz"

    def has(self, index: int) -> bool:
        return self.path(index).is_file()

    def write(self, index: int, **arrays: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.path(index), buf.getvalue())

    def read(self, index: int) -> dict[str, np.ndarray]:
        path = self.path(index)
        if not path.is_file():
            raise DiffslvaError(f"{path}: cached frame missing; run prepare again")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def missing(self) -> list[int]:
        if self.complete:
            return []
        return [i for i in range(self.frames) if not self.has(i)]

    @property
    def complete(self) -> bool:
        return (self.folder / "complete").is_file()

    def mark_complete(self) -> None:
        atomic_write_bytes(self.folder / "complete", b"")

    def as_dask(self, name: str, shape: tuple[int, ...], dtype: np.dtype):
        """Lazy ``(T, *shape)`` array of one named array per frame (for napari layers)."""
        import dask.array as da

        graph_name = f"diffslva-{self.folder.name}-{name}"
        graph = {
            (graph_name, i) + (0,) * len(shape): (_store_block, self, i, name)
            for i in range(self.frames)
        }
        chunks = ((1,) * self.frames,) + tuple((s,) for s in shape)
        return da.Array(graph, graph_name, chunks, dtype=dtype)


def _store_block(store: FrameStore, index: int, name: str) -> np.ndarray:
    return store.read(index)[name][None]
