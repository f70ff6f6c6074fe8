"""Where model weights are looked for, and how they are loaded safely.

Weights are never unpickled: ``.safetensors`` files load through safetensors, ``.pth`` /
``.pth.tar`` / ``.ckpt`` files only through ``torch.load(weights_only=True)``. Nothing is
downloaded unless the caller allows it (``offline=False``) and a hub id is given.
"""

from __future__ import annotations

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


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.key: w
    for w in (
        KnownWeights("hed", "ControlNetHED.pth", "lllyasviel/Annotators", "HED soft edges"),
        KnownWeights("bisenet", "79999_iter.pth", None, "BiSeNet face parser"),
        KnownWeights("tpsmm", "vox.pth.tar", None, "TPSMM face reenactment"),
        KnownWeights("gmflow", "gmflow_sintel-0c07dcb3.pth", None, "GMFlow optical flow"),
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
    found = find_weights(known.filename)
    if found is not None:
        return found
    if not offline and known.hub_repo:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(known.hub_repo, known.filename))
        except Exception as exc:  # network, auth, missing file: all user-actionable
            raise WeightsError(
                f"could not download {known.filename} from {known.hub_repo}: {exc}"
            ) from exc
    where = ", ".join(str(d) for d in weights_dirs())
    raise WeightsError(
        f"{known.filename} ({known.purpose}) not found: put it in one of [{where}] "
        f"(or set ${WEIGHTS_ENV}), or pass its path explicitly"
    )


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
