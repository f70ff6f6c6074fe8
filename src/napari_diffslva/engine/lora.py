"""LoRA weights for the UNet (and text encoder): few-step samplers such as LCM-LoRA, TCD and
Hyper-SD, or a style.

A LoRA is given as ``PATH[:scale]``: a ``.safetensors`` file, a folder holding
``pytorch_lora_weights.safetensors`` or a hub id, with an optional scale (default 1). It is
loaded through diffusers' own LoRA loader (which reads the diffusers, PEFT and kohya key
layouts and needs the ``peft`` package) and fused into the weights, so sampling costs
exactly what it costs without one. Loaded models are cached with the LoRA in their key.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..errors import SettingsError, WeightsError


def parse_lora(text: str) -> tuple[str, float]:
    """``"PATH[:scale]"`` -> ``(path, scale)``; a colon that is part of a path (``C:\\\\x``)
    stays in the path."""
    text = text.strip()
    source, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep:
        with contextlib.suppress(ValueError):  # no number after the colon: part of the path
            source, scale = head, float(tail)
    if not source:
        raise SettingsError(f"setting lora={text!r}: use PATH[:scale], e.g. lcm-lora.safetensors:1")
    return source, scale


def fuse_lora(components: dict[str, Any], text: str, *, offline: bool) -> None:
    """Load the LoRA ``text`` into ``components`` (unet, text_encoder, ...) and fuse it."""
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise SettingsError(
            "setting lora: loading a LoRA needs the peft package; pip install peft"
        ) from exc
    from diffusers import StableDiffusionPipeline

    source, scale = parse_lora(text)
    path = Path(source).expanduser()
    kwargs: dict[str, Any] = {"local_files_only": offline}
    if path.is_file():
        location, kwargs["weight_name"] = str(path.parent), path.name
    else:
        location = str(path) if path.is_dir() else source
    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    try:
        pipe.load_lora_weights(location, adapter_name="diffslva", **kwargs)
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"LoRA {source!r} not loadable: {str(exc).splitlines()[0][:200]} "
            "(give a .safetensors file, a folder or a hub id; offline it must be on this computer)"
        ) from exc
    pipe.fuse_lora(lora_scale=scale, adapter_names=["diffslva"])
    pipe.unload_lora_weights()  # drops the adapter layers; the fused weights stay
