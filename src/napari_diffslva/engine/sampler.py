"""Translation of one frame: DiffSLVA step 5 (SDEdit + DDIM + ControlNet + fusion).

For every frame the sampler encodes the input, noises it to the SDEdit start step
``int(steps * (1 - strength))`` with the clip's fixed noise and runs DDIM (eta 0) with
classifier-free guidance and the HED ControlNet from there; the earlier steps are never
computed. Each step predicts the clean latent ``x0 = (x_t - sqrt(1 - abar_t) eps) /
sqrt(abar_t)`` (eq. 4) and may rewrite it before the DDIM update:

- stage 1 (shape-aware fusion, ``stage1_range``): ``x0 <- warp(x0_anchor) m + x0 (1 - m)``,
  ``m = 1 - maxpool(occlusion)`` at latent size, nearest warping;
- AdaIN (``adain_range``): x0's per-channel mean/std become the anchor's at that step
  (and the anchor's own become a style reference's, when a group's views share one).

Stage 2 (pixel-aware fusion) needs a second pass. The first pass gives a direct result;
the generated anchor and previous outputs, warped into this frame, are blended over it by
their occlusion masks (eq. 10). That reference is encoded fidelity-oriented
(``x_ref = z + (1 - mask)(z - E(D(z)))``) and blended into the DDIM update of the second
pass on ``stage2_range`` with weight ``w = stage2_weight * m`` (eq. 11,
``x_prev <- (1 - w) x_prev + w q(x_ref, t_prev)``). Which noise ``q`` adds is
``stage2_noise``:

- ``"model"`` (default): the model's own noise estimate ``eps``, DDIM's deterministic
  forward, so ``x_prev = sqrt(abar_prev) ((1 - w) x0 + w x_ref) + sqrt(1 - abar_prev) eps``.
  No foreign noise enters the latent, so the frame keeps the noise it shares with the
  anchor and every other frame (the clip's fixed noise) and nothing new is invented.
- ``"fresh"`` (Rerender-A-Video's code): new noise ``n`` each step, the same sequence for
  every frame (seeded), and the model's noise direction rescaled by
  ``r = max(1 - w, 0.9 sqrt(1 - w^2))`` so the sum of two independent noises keeps about
  unit variance: ``... + sqrt(1 - abar_prev) (r eps + w n)``.

With a toy denoiser that invents per-frame detail, "model" leaves 0.6-0.9x the
flow-warping error of "fresh" (docs/performance.md). Cross-frame attention reads the anchor's and
previous frame's cached states in both passes; this frame's states are recorded in its
last pass and become the next frame's "previous".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import Cancelled
from .attention import CrossFrameController, StateCache, install_cross_frame
from .models import Models
from .settings import EngineSettings

if TYPE_CHECKING:
    import torch

    from ..prepare.flow import PairFlow

STAGE2_NOISE_DAMPING = 0.9  # Rerender's factor in the variance-keeping rescale


@dataclass
class StepInfo:
    """What a step produced, for inspection (tests, debugging): x0 after all rewrites."""

    pass_index: int  # 0 = anchor or first pass, 1 = second (fusion) pass
    step: int  # index into the schedule, 0 = noisiest
    x0: torch.Tensor


@dataclass
class AnchorGuide:
    """What the anchor's translation fixes for every other frame."""

    rgb: np.ndarray  # generated anchor frame, uint8 (H, W, 3)
    x0: dict[int, torch.Tensor] = field(default_factory=dict)  # stage-1 steps only
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # AdaIN


@dataclass
class FrameRefs:
    """Flows of frame ``i`` (pull fields into frame ``i``) and the previous output."""

    anchor_flow: PairFlow  # anchor -> i
    prev_flow: PairFlow | None = None  # (i-1) -> i, None for the first frame
    prev_rgb: np.ndarray | None = None  # generated frame i-1, uint8


@dataclass
class Counters:
    """Model evaluations (batch elements, so CFG counts 2) and time inside them."""

    unet_evals: int = 0
    controlnet_evals: int = 0
    denoiser_seconds: float = 0.0


@dataclass
class _Guidance:
    """Per-pass rewrites of x0 and of the DDIM update."""

    anchor: AnchorGuide | None = None
    stage1_mask: torch.Tensor | None = None  # m at latent size, 1 = use the warped anchor
    anchor_flow: np.ndarray | None = None
    x_ref: torch.Tensor | None = None
    stage2_weight: torch.Tensor | None = None  # w at latent size
    style: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # anchor AdaIN targets


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True)


def _adain(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``x`` with its per-channel mean and std replaced by ``mean`` and ``std``."""
    own_mean, own_std = _channel_stats(x)
    return (x - own_mean) / (own_std + 1e-6) * std + mean


class FrameSampler:
    """Translates frames of one clip; holds the prompt, the fixed noise and the caches.

    Installs cross-frame processors on the UNet while alive; call :meth:`close` (or use it
    as a context manager) to restore stock attention.
    """

    def __init__(self, models: Models, settings: EngineSettings, hw: tuple[int, int]) -> None:
        import torch

        self.models, self.settings = models, settings
        factor = models.vae_scale_factor
        if hw[0] % factor or hw[1] % factor:
            raise ValueError(f"frame size {hw} is not a multiple of the VAE factor {factor}")
        self.latent_hw = (hw[0] // factor, hw[1] // factor)
        self.controller = CrossFrameController()
        layers = settings.cross_frame_layers if settings.cross_frame_attention else None
        self.cross_frame_layers = install_cross_frame(models.unet, layers, self.controller)
        self.counters = Counters()
        self.on_step: Callable[[StepInfo], None] | None = None
        self.cfg = settings.guidance > 1.0
        cond = models.encode_prompt(settings.prompt)
        self.embeddings = (
            torch.cat([models.encode_prompt(settings.negative_prompt), cond]) if self.cfg else cond
        )
        scheduler = models.scheduler
        scheduler.set_timesteps(settings.steps)
        self.timesteps = [int(t) for t in scheduler.timesteps]
        jump = scheduler.config.num_train_timesteps // settings.steps
        abar = scheduler.alphas_cumprod.double()
        final = float(scheduler.final_alpha_cumprod)
        self.abar = [float(abar[t]) for t in self.timesteps]
        self.abar_prev = [float(abar[t - jump]) if t - jump >= 0 else final for t in self.timesteps]
        # The same noise for every frame (drawn on the CPU: identical on every device).
        gen = torch.Generator().manual_seed(settings.seed)
        shape = (1, models.unet.config.in_channels, *self.latent_hw)
        self.noise = torch.randn(shape, generator=gen).to(models.device, models.dtype)

    # -- public ---------------------------------------------------------------------------
    def translate_anchor(
        self,
        image: np.ndarray,
        control: np.ndarray,
        should_stop: Callable[[], bool] | None = None,
        style: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> AnchorGuide:
        """Translate the anchor frame (one pass, plain self-attention) and cache its states.

        ``style`` (step -> channel mean, std) are AdaIN targets for the anchor's own x0: a
        group's first view's statistics (:class:`.style.StyleReference`), so this clip takes
        that view's colours; the recorded statistics are then the targets.
        """
        recorded = self._record_into()
        anchor = AnchorGuide(rgb=np.zeros(0, np.uint8))
        latent = self._sample(image, control, 0, _Guidance(style=style), should_stop, anchor)
        anchor.rgb = self._to_rgb(latent)
        if recorded is not None:
            self.controller.anchor = recorded
            self.controller.previous = recorded
        self.controller.recording = None
        return anchor

    def translate_frame(
        self,
        image: np.ndarray,
        control: np.ndarray,
        anchor: AnchorGuide,
        refs: FrameRefs,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Translate one non-anchor frame; its states become the next frame's "previous"."""
        s = self.settings
        guidance = _Guidance(anchor=anchor)
        if s.fusion:
            guidance.anchor_flow = refs.anchor_flow.flow
            guidance.stage1_mask = 1 - self._maxpool(refs.anchor_flow.occlusion)
        self.controller.reading = s.cross_frame_attention
        recorded = None if s.fusion else self._record_into()
        latent = self._sample(image, control, 0, guidance, should_stop)
        if s.fusion:
            direct = self._to_rgb(latent)
            guidance.x_ref, guidance.stage2_weight = self._reference(direct, anchor, refs)
            recorded = self._record_into()
            latent = self._sample(image, control, 1, guidance, should_stop)
        if recorded is not None:
            self.controller.previous = recorded
        self.controller.recording = None
        self.controller.reading = False
        return self._to_rgb(latent)

    def previous_state(self) -> StateCache:
        """The previous frame's cached attention states (persisted for resume)."""
        return self.controller.previous

    def set_previous_state(self, states: StateCache) -> None:
        self.controller.previous = states

    def use_anchor_as_previous(self) -> None:
        """The frame after the anchor continues from the anchor's states."""
        self.controller.previous = self.controller.anchor

    def close(self) -> None:
        """Restore stock attention on the UNet (the models are shared and cached)."""
        install_cross_frame(self.models.unet, None, self.controller)

    def __enter__(self) -> FrameSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _record_into(self) -> StateCache | None:
        if not self.settings.cross_frame_attention:
            return None
        self.controller.recording = {}
        return self.controller.recording

    def _sample(
        self,
        image: np.ndarray,
        control: np.ndarray,
        pass_index: int,
        guidance: _Guidance,
        should_stop: Callable[[], bool] | None,
        record: AnchorGuide | None = None,
    ) -> torch.Tensor:
        """Run DDIM from the SDEdit start step; returns the final latent."""
        import torch

        s, m = self.settings, self.models
        start = s.start_step
        fresh = torch.Generator().manual_seed(s.seed + 1)  # "fresh" stage-2 noise, per pass
        with torch.no_grad():
            z = m.encode_image(m.rgb_to_tensor(image))
            x = math.sqrt(self.abar[start]) * z + math.sqrt(1 - self.abar[start]) * self.noise
            cond_image = torch.from_numpy(np.ascontiguousarray(control, np.float32))
            cond_image = cond_image[None, None].expand(1, 3, -1, -1).to(m.device, m.dtype)
            if self.cfg:
                cond_image = torch.cat([cond_image, cond_image])
            for step in range(start, s.steps):
                if should_stop is not None and should_stop():
                    raise Cancelled("translation cancelled; finished frames are kept")
                self.controller.step = step
                eps = self._predict_noise(x, step, cond_image)
                a, a_prev = self.abar[step], self.abar_prev[step]
                x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
                x0 = self._rewrite_x0(x0, step, guidance, record)
                if self.on_step is not None:
                    self.on_step(StepInfo(pass_index, step, x0))
                noise_dir = eps
                if guidance.x_ref is not None and s.in_range("stage2_range", step):
                    w = guidance.stage2_weight
                    x0 = (1 - w) * x0 + w * guidance.x_ref
                    if s.stage2_noise == "fresh":
                        n = torch.randn(x.shape, generator=fresh).to(m.device, m.dtype)
                        rescale = torch.maximum(1 - w, STAGE2_NOISE_DAMPING * torch.sqrt(1 - w * w))
                        noise_dir = rescale * eps + w * n
                x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * noise_dir
        return x

    def _predict_noise(self, x: torch.Tensor, step: int, cond_image: torch.Tensor) -> torch.Tensor:
        """Guided noise prediction of ControlNet + UNet at one step."""
        import torch

        m, t = self.models, self.timesteps[step]
        x_in = torch.cat([x, x]) if self.cfg else x
        _sync(m.device)
        started = time.perf_counter()
        down, mid = m.controlnet(
            x_in,
            t,
            encoder_hidden_states=self.embeddings,
            controlnet_cond=cond_image,
            conditioning_scale=self.settings.control_scale,
            return_dict=False,
        )
        eps = m.unet(
            x_in,
            t,
            encoder_hidden_states=self.embeddings,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]
        _sync(m.device)
        self.counters.denoiser_seconds += time.perf_counter() - started
        self.counters.unet_evals += x_in.shape[0]
        self.counters.controlnet_evals += x_in.shape[0]
        if self.cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + self.settings.guidance * (cond - uncond)
        return eps

    def _rewrite_x0(
        self, x0: torch.Tensor, step: int, guidance: _Guidance, record: AnchorGuide | None
    ) -> torch.Tensor:
        """Stage-1 fusion and AdaIN on x0; the anchor records what they will need."""
        from ..prepare.flow import warp_latent

        s = self.settings
        if record is not None:
            if s.adain and guidance.style is not None and step in guidance.style:
                x0 = _adain(x0, *guidance.style[step])
            if s.fusion and s.in_range("stage1_range", step):
                record.x0[step] = x0.clone()
            if s.adain and s.in_range("adain_range", step):
                record.stats[step] = _channel_stats(x0)
            return x0
        anchor = guidance.anchor
        if anchor is None:
            return x0
        if guidance.stage1_mask is not None and step in anchor.x0:
            warped = warp_latent(anchor.x0[step], guidance.anchor_flow, "nearest")
            x0 = warped * guidance.stage1_mask + x0 * (1 - guidance.stage1_mask)
        if s.adain and step in anchor.stats:
            x0 = _adain(x0, *anchor.stats[step])
        return x0

    def _reference(
        self, direct: np.ndarray, anchor: AnchorGuide, refs: FrameRefs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fidelity-encoded reference latent and stage-2 weight ``w`` (eq. 10-11)."""
        import torch
        import torch.nn.functional as F

        from ..prepare.flow import warp_image

        m = self.models
        reference = direct.astype(np.float32)
        occlusion = np.ones(direct.shape[:2], np.float32)
        sources = [] if refs.prev_flow is None else [(refs.prev_rgb, refs.prev_flow)]
        for rgb, pair in [*sources, (anchor.rgb, refs.anchor_flow)]:  # anchor ends on top
            visible = (1 - pair.occlusion)[..., None]
            warped = warp_image(rgb.astype(np.float32), pair.flow)
            reference = warped * visible + reference * (1 - visible)
            occlusion = occlusion * pair.occlusion
        weight = self.settings.stage2_weight * (1 - self._maxpool(occlusion))
        image = torch.from_numpy(reference).permute(2, 0, 1)[None] / 127.5 - 1
        image = image.to(m.device, m.dtype)
        with torch.no_grad():
            z = m.encode_image(image)
            z_rec = m.encode_image(m.decode_latent(z))
            compensated = m.decode_latent(z + (z - z_rec))
            error = (compensated - image).abs().mean(dim=1, keepdim=True)
            bad = (error > self.settings.fidelity_threshold).to(m.dtype)
            bad = F.max_pool2d(bad, m.vae_scale_factor)
            bad = F.max_pool2d(bad, 3, stride=1, padding=1)
            x_ref = z + (1 - bad) * (z - z_rec)
        return x_ref, weight

    def _maxpool(self, mask: np.ndarray) -> torch.Tensor:
        """An image-size mask ``(H, W)`` max-pooled to latent size ``(1, 1, h, w)``."""
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None]
        pooled = F.max_pool2d(t, self.models.vae_scale_factor)
        return pooled.to(self.models.device, self.models.dtype)

    def _to_rgb(self, latent: torch.Tensor) -> np.ndarray:
        import torch

        with torch.no_grad():
            image = self.models.decode_latent(latent)[0].float().clamp(-1, 1)
        rgb = ((image + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
        return rgb.cpu().numpy()


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings mean something."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
