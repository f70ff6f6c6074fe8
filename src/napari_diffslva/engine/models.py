"""Loading Stable Diffusion 1.5 + ControlNet through diffusers.

The models are loaded as separate diffusers components (tokenizer, text encoder, VAE,
UNet, ControlNet, DDIM scheduler) rather than as a pipeline: the sampler drives them
itself (SDEdit start, fusion, cross-frame attention), so a pipeline object would only
hide what runs. Sources are a hub id or a local folder in diffusers layout; any SD1.5
fine-tune and ControlNet v1.0 HED or v1.1 softedge fit. The VAE may come from elsewhere
(Rerender-A-Video's ft-mse fine-tune by default), a LoRA is fused in (:mod:`.lora`) and the
UNet and ControlNet may be compiled. Loaded models are cached per process, keyed by
everything that changes them, so a batch worker loads them once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SettingsError, WeightsError
from .settings import DEFAULT_VAE, EngineSettings

if TYPE_CHECKING:
    import numpy as np
    import torch

DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_CACHE: dict[tuple, Models] = {}


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; a named device (``cuda:1``
    too) must exist."""
    import torch

    name = name.strip().lower()
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cuda", "mps", "cpu") or (index and (kind != "cuda" or not index.isdigit())):
        raise SettingsError(f"setting device={name!r}: use auto, cuda, cuda:N, mps or cpu")
    if kind == "cuda" and not cuda:
        raise SettingsError(f"setting device={name!r}: no CUDA GPU visible; use device 'auto'")
    if index and int(index) >= torch.cuda.device_count():
        raise SettingsError(
            f"setting device={name!r}: this computer has {torch.cuda.device_count()} CUDA "
            "GPU(s), numbered from 0"
        )
    if kind == "mps" and not mps:
        raise SettingsError("setting device='mps': Apple MPS not available; use device 'auto'")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Half precision (fp16, or bf16 on request) on a GPU, fp32 on the CPU."""
    import torch

    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if name not in DTYPE_NAMES:
        raise SettingsError(f"setting dtype={name!r}: use auto, fp32, fp16 or bf16")
    if device.type == "cpu" and name != "fp32":
        raise SettingsError(f"setting dtype={name!r}: the CPU runs fp32 only; use dtype 'auto'")
    return getattr(torch, DTYPE_NAMES[name])


def _source(name: str, what: str) -> tuple[str, bool]:
    """``(path_or_id, is_local)``; a path-looking name that is not a folder is an error."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), True
    looks_like_path = (
        name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
    )
    if looks_like_path or path.exists():
        raise WeightsError(f"{what} folder {name} not found (or not a folder in diffusers layout)")
    return name, False


def _missing(name: str, what: str, exc: Exception) -> WeightsError:
    return WeightsError(
        f"{what} {name!r} not found locally; run once with network access or pass a local "
        f"folder ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    )


@dataclass
class Models:
    """The diffusers components of SD1.5 + ControlNet, on one device in one dtype."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    controlnet: Any
    scheduler: Any  # the model's scheduler as DDIM, eta 0 (samplers derive theirs from it)
    device: torch.device  # where inputs go (the accelerator even with CPU offload)
    dtype: torch.dtype
    pipeline: Any = None  # only kept when CPU offload hooks live on it
    vae_source: str | None = None  # the VAE loaded in place of the model's own, if any

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel, read from the VAE (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """CLIP text embeddings ``(1, 77, D)`` of one prompt."""
        import torch

        ids = self.tokenizer(
            prompt,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            return self.text_encoder(ids.input_ids.to(self.device))[0].to(self.dtype)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Scaled latent (mean of the posterior: deterministic) of images in [-1, 1]."""
        latent = self.vae.encode(image.to(self.device, self.dtype)).latent_dist.mean
        return latent * self.vae.config.scaling_factor

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (not clamped) of a scaled latent."""
        return self.vae.decode(latent / self.vae.config.scaling_factor).sample

    def rgb_to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(H, W, 3)`` -> ``(1, 3, H, W)`` in [-1, 1] on the device."""
        import torch

        t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        return t.to(self.device, self.dtype)


def _load(settings: EngineSettings, device: torch.device, dtype: torch.dtype) -> Models:
    from diffusers import DDIMScheduler

    model, _ = _source(settings.model, "model")
    common = {"local_files_only": _offline(settings)}
    try:
        parts = _load_sd_parts(model, dtype, common)
        base = DDIMScheduler.from_pretrained(model, subfolder="scheduler", **common)
    except OSError as exc:
        raise _missing(settings.model, "model", exc) from exc
    parts["controlnet"] = _load_part(settings.controlnet, "ControlNet", dtype, common)
    vae_source = _load_vae(settings, parts, dtype, common)
    scheduler = DDIMScheduler.from_config(base.config, clip_sample=False, set_alpha_to_one=False)
    for name in ("text_encoder", "vae", "unet", "controlnet"):
        parts[name].eval().requires_grad_(False)
    if settings.lora is not None:
        from .lora import fuse_lora

        sd_parts = {k: v for k, v in parts.items() if k != "controlnet"}
        fuse_lora({**sd_parts, "scheduler": scheduler}, settings.lora, offline=_offline(settings))
    # diffusers uses torch's scaled-dot-product attention (AttnProcessor2_0) by default.
    models = Models(scheduler=scheduler, device=device, dtype=dtype, vae_source=vae_source, **parts)
    if settings.cpu_offload:
        _offload(models)
    else:
        for name in ("text_encoder", "vae", "unet", "controlnet"):
            getattr(models, name).to(device)
    if settings.compile:
        import torch

        models.unet = torch.compile(models.unet)
        models.controlnet = torch.compile(models.controlnet)
    return models


def _offline(settings: EngineSettings) -> bool:
    return settings.offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _load_sd_parts(model: str, dtype: torch.dtype, common: dict[str, Any]) -> dict[str, Any]:
    """Tokenizer, text encoder, VAE and UNet of an SD1.5 folder or hub id."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return {
        "tokenizer": CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **common),
        "text_encoder": CLIPTextModel.from_pretrained(
            model, subfolder="text_encoder", dtype=dtype, **common
        ),
        "vae": AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype, **common),
        "unet": UNet2DConditionModel.from_pretrained(
            model, subfolder="unet", torch_dtype=dtype, **common
        ),
    }


def _load_vae(
    settings: EngineSettings, parts: dict[str, Any], dtype: torch.dtype, common: dict[str, Any]
) -> str | None:
    """Put the ``vae`` setting's VAE into ``parts``. The default (Rerender-A-Video's ft-mse
    fine-tune) falls back to the model's own with a warning when it is not on this computer,
    as Rerender does; any other VAE that is missing is an error."""
    if settings.vae is None:
        return None
    try:
        parts["vae"] = _load_part(settings.vae, "VAE", dtype, common)
    except WeightsError as exc:
        if settings.vae != DEFAULT_VAE:
            raise
        warnings.warn(
            f"{exc}; using the model's own VAE, which Rerender-A-Video warns degrades "
            "quality (set vae to a folder, or null to silence this)",
            stacklevel=3,
        )
        return None
    return settings.vae


def _load_part(name: str, what: str, dtype: torch.dtype, common: dict[str, Any]) -> Any:
    """A ControlNet or VAE from its own folder or hub id."""
    from diffusers import AutoencoderKL, ControlNetModel

    cls = ControlNetModel if what == "ControlNet" else AutoencoderKL
    source, _ = _source(name, what)
    try:
        return cls.from_pretrained(source, torch_dtype=dtype, **common)
    except OSError as exc:
        raise _missing(name, what, exc) from exc


def _offload(models: Models) -> None:
    """Model CPU offload through a diffusers pipeline's hooks (each model moves to the GPU
    only while it runs)."""
    from diffusers import StableDiffusionControlNetPipeline

    if models.device.type == "cpu":
        raise SettingsError("setting cpu_offload=true needs a GPU device; turn it off")
    pipe = StableDiffusionControlNetPipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=models.tokenizer,
        unet=models.unet,
        controlnet=models.controlnet,
        scheduler=models.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.enable_model_cpu_offload(device=models.device)
    models.pipeline = pipe


def load_models(settings: EngineSettings) -> Models:
    """SD1.5 + ControlNet for ``settings`` (cached per process).

    Raises :class:`WeightsError` quickly when a model is missing offline (no retries).
    """
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    key = (
        settings.model,
        settings.controlnet,
        settings.vae,
        settings.lora,
        str(device),
        str(dtype),
        settings.cpu_offload,
        settings.compile,
    )
    if key not in _CACHE:
        _CACHE[key] = _load(settings, device, dtype)
    return _CACHE[key]


def clear_model_cache() -> None:
    """Forget every loaded model (frees memory once no one else holds them)."""
    _CACHE.clear()
