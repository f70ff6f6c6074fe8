"""A denoiser test double that flickers the way Stable Diffusion does, for temporal tests.

Random weights cannot show flicker or its cure: a random UNet removes no noise and its
per-step change is not idempotent, so pulling a latent toward an already finished output
applies that change twice. :class:`AttentiveToyDenoiser` stands in for UNet + ControlNet
as the exact MMSE denoiser of a known prior, so it does what the method relies on:

- it removes noise (its x0 is the posterior mean given ``x_t``);
- it invents detail of its own in every frame and commits to it at mid noise, the way SD
  invents texture: this is the flicker the engine has to remove;
- it computes that detail through a real diffusers self-attention layer (``attn1`` of an
  "up" block), so the engine's cross-frame processor can hand it the anchor's and the
  previous frame's detail instead of the frame's own.

Prior of frame ``f``, per latent element: ``x0 = mu_f + v b``, ``b = +-1`` with
``P(b = +1) = sigmoid(beta h_f)``. ``mu_f`` is the control image (the frame's grey levels)
at latent size in channels 0-2. ``h_f`` is the detail field: self-attention over tokens
``[content, r_f]``, with ``r_f`` a random field drawn per frame (seeded by a hash of the
control image) and ``content`` the token's grey level and position; queries and keys
compare content (a Gaussian kernel, a bilateral filter), values carry ``r_f``. Stock
attention gives a frame its own smoothed ``r_f``; cross-frame attention gives it the
anchor's and the previous frame's, at the positions whose content matches.

It says nothing about image quality. Use it through :func:`toy_models`, on clips from
:func:`toy_inputs`, and score the outputs with :func:`flicker`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

LAYER = "up_blocks.0.attn1"
GREY_SCALE = 0.08  # width (std) of the attention kernel in grey levels (of 0..1)
POSITION_SCALE = 1.5  # and in latent pixels


class AttentiveToyDenoiser(torch.nn.Module):
    """UNet stand-in (``controlnet`` is its ControlNet stand-in); see the module docstring."""

    def __init__(self, scheduler, v: float = 0.3, beta: float = 2.0) -> None:
        from diffusers.models.attention_processor import Attention

        super().__init__()
        self.config = SimpleNamespace(in_channels=4)
        self.abar = scheduler.alphas_cumprod.double()
        self.v, self.beta = v, beta
        attn = Attention(query_dim=6, heads=1, dim_head=6, bias=True)
        self._set_kernel_weights(attn)
        self.up_blocks = torch.nn.ModuleList([torch.nn.ModuleDict({"attn1": attn})])
        self.priors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.current: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _set_kernel_weights(attn) -> None:
        """Tokens ``[c0, c1, c2, |c|^2 / 2, r, 0]``: ``q.k = c_p.c_q - |c_q|^2 / 2`` (a Gaussian
        kernel in content after softmax), value and output = ``r`` in channel 0."""
        with torch.no_grad():
            for linear in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
                linear.weight.zero_()
                linear.bias.zero_()
            root = math.sqrt(6)  # undo SDPA's 1/sqrt(head_dim)
            for c in range(3):
                attn.to_q.weight[c, c] = root
                attn.to_k.weight[c, c] = 1.0
            attn.to_q.bias[3] = -root
            attn.to_k.weight[3, 3] = 1.0
            attn.to_v.weight[0, 4] = 1.0
            attn.to_out[0].weight[0, 0] = 1.0

    # -- what the engine's attention code needs of a UNet -----------------------------------
    @property
    def attn_processors(self) -> dict:
        return {f"{LAYER}.processor": self.up_blocks[0]["attn1"].processor}

    def set_attn_processor(self, processors: dict) -> None:
        self.up_blocks[0]["attn1"].set_processor(processors[f"{LAYER}.processor"])

    # -- ControlNet stand-in: remembers which frame is being denoised -----------------------
    def controlnet(self, x, t, *, controlnet_cond, **kwargs):
        grey = controlnet_cond[:1, :1].float()
        key = hashlib.sha256(grey.cpu().numpy().tobytes()).hexdigest()
        if key not in self.priors:
            small = F.avg_pool2d(grey, 8)  # (1, 1, h, w) in [0, 1]
            _, _, h, w = small.shape
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=torch.float32),
                torch.arange(w, dtype=torch.float32),
                indexing="ij",
            )
            content = (
                torch.stack([small[0, 0] / GREY_SCALE, ys / POSITION_SCALE, xs / POSITION_SCALE])
                .flatten(1)
                .T
            )  # (N, 3)
            gen = torch.Generator().manual_seed(int(key[:8], 16))
            detail = torch.randn(h * w, 1, generator=gen)
            tokens = torch.cat(
                [content, (content**2).sum(1, keepdim=True) / 2, detail, torch.zeros_like(detail)],
                1,
            )
            mu = torch.cat([(small * 2 - 1).expand(1, 3, -1, -1), torch.zeros_like(small)], 1)
            self.priors[key] = (mu, tokens)
        self.current = self.priors[key]
        return None, None

    def forward(self, x, t, **kwargs):
        mu, tokens = (u.to(x) for u in self.current)
        batch, _, h, w = x.shape
        out = self.up_blocks[0]["attn1"](tokens[None].expand(batch, -1, -1))
        detail = out[..., 0].reshape(batch, 1, h, w)
        detail = detail / detail.std(dim=(2, 3), keepdim=True)
        a = float(self.abar[int(t)])
        logit = self.beta * detail / 2 + self.v * math.sqrt(a) * (x - math.sqrt(a) * mu) / (1 - a)
        x0 = mu + self.v * torch.tanh(logit)
        return ((x - math.sqrt(a) * x0) / math.sqrt(1 - a),)


def toy_models(models):
    """``models`` (loaded tiny models: their VAE, text encoder and scheduler) with the toy in
    place of UNet and ControlNet."""
    toy = AttentiveToyDenoiser(models.scheduler)
    return dataclasses.replace(models, unet=toy, controlnet=toy.controlnet)


def toy_inputs(path, start: int, frames: int = 8, every: int = 2, size: int = 128):
    """``frames`` frames (every ``every``-th from ``start``) of a real clip at ``size``
    squared, as engine inputs; the control image is the blurred grey frame, which the toy
    reads as its "ControlNet" input."""
    import cv2

    from napari_diffslva.engine.translate import InMemoryInputs
    from napari_diffslva.video import read_frames

    clip = read_frames(path, start, start + frames * every)[::every]
    small = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip])
    grey = [cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (3, 3), 0) for f in small]
    return InMemoryInputs(small, np.stack(grey).astype(np.float32) / 255)


def translated_frames(inputs, models, settings) -> list[np.ndarray]:
    """Every frame of ``inputs`` translated by :func:`~napari_diffslva.engine.translate.
    translate_clip` (no run folder), in frame order."""
    from napari_diffslva.engine.translate import translate_clip
    from napari_diffslva.progress import run_to_end

    events = []
    run_to_end(translate_clip(inputs, models, settings), events.append)
    result = dict(e.payload for e in events)
    return [result[i] for i in range(inputs.num_frames)]


def flicker(outputs, inputs) -> float:
    """Mean flow-warping error of consecutive output frames, as the audit measures it (the
    input pair's flow and occlusion; 0-255 grey levels)."""
    from napari_diffslva.audit.temporal import warp_errors

    return float(
        np.mean(
            [
                warp_errors(inputs.frame(i - 1), inputs.frame(i), outputs[i - 1], outputs[i])[1]
                for i in range(1, len(outputs))
            ]
        )
    )
