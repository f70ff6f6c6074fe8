"""Translation of one frame: DiffSLVA step 5 (SDEdit + sampler + ControlNet + fusion).

For every frame the sampler encodes the input, noises it to the SDEdit start step
``int(steps * (1 - strength))`` with the clip's fixed noise and denoises from there with
classifier-free guidance and the HED ControlNet; the earlier steps are never computed. The
step rule is the chosen sampler's (:mod:`.schedule`: DDIM as in Rerender-A-Video by
default). Each step estimates the clean latent ``x0`` (eq. 4 of the paper:
``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``) and may rewrite it before the update:

- stage 1 (shape-aware fusion, ``stage1_range``): ``x0 <- warp(x0_anchor) m + x0 (1 - m)``,
  ``m = 1 - maxpool(occlusion)`` at latent size, nearest warping;
- AdaIN (``adain_range``): x0's per-channel mean/std become the anchor's at that step
  (and the anchor's own become a style reference's, when a group's views share one).

Stage 2 (pixel-aware fusion) needs a second pass. The first pass gives a direct result;
the generated anchor and previous outputs, warped into this frame, are blended over it by
their occlusion masks (eq. 10). That reference is encoded fidelity-oriented
(``x_ref = z + (1 - mask)(z - E(D(z)))``) and blended into the latent entering each step
of ``stage2_range`` (20 steps: steps 11-15, as Rerender-A-Video) with weight
``w = stage2_weight * m``, ``m = 1 - maxpool(soften(occluded in both))`` (eq. 11):
``x0 <- (1 - w) x0 + w x_ref`` in ``x_next = sqrt(abar_next) x0 + sqrt(1 - abar_next) d``.
Which noise the reference carries is ``stage2_noise``:

- ``"fresh"`` (default, Rerender-A-Video's code): new noise ``n`` per step, the same
  sequence for every frame, and the sampler's noise direction rescaled by
  ``r = max(1 - w, 0.9 sqrt(1 - w^2))`` so the two independent noises keep about unit
  variance: ``d <- r d + w n``. With ``smooth_boundary`` (default, as Rerender) ``r`` is
  ``1 - w`` where the fusion mask is not flat (its boundary), which avoids seams there.
- ``"model"``: the model's own noise estimate, DDIM's deterministic forward: ``d`` stays,
  so no foreign noise enters the latent (docs/performance.md has both on the toy denoiser).

The second pass repeats the first exactly up to the first fused step, so it starts there
from the first pass's ``x0`` and ``d`` (48 instead of 60 evaluations per frame at the
defaults). With ``stage2_reference="window-end"`` the direct result is the first pass's
clean-image estimate at the last fused step instead of its finished frame, so the first
pass stops there (40 evaluations per frame at the defaults; not Rerender-A-Video's).
Cross-frame attention reads the anchor's and previous frame's cached states in both
passes; this frame's states are recorded (first pass up to the fused steps, second pass
from there) and become the next frame's "previous".
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
from .schedule import make_scheduler, schedule
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
    states: StateCache = field(default_factory=dict)  # its cross-frame attention states


@dataclass
class FrameRefs:
    """Flows of frame ``i`` (pull fields into frame ``i``) and the previous output."""

    anchor_flow: PairFlow  # anchor -> i
    prev_flow: PairFlow | None = None  # previous frame -> i, None without one
    prev_rgb: np.ndarray | None = None  # generated previous frame, uint8


@dataclass
class Counters:
    """Model evaluations (batch elements, so CFG counts 2) and time inside them."""

    unet_evals: int = 0
    controlnet_evals: int = 0
    denoiser_seconds: float = 0.0


@dataclass
class _Guidance:
    """Per-pass rewrites of x0 and of the update."""

    anchor: AnchorGuide | None = None
    stage1_mask: torch.Tensor | None = None  # m at latent size, 1 = use the warped anchor
    anchor_flow: np.ndarray | None = None
    x_ref: torch.Tensor | None = None
    stage2_weight: torch.Tensor | None = None  # w at latent size
    flat: torch.Tensor | None = None  # 1 where the fusion mask is flat (smooth_boundary)
    style: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # anchor AdaIN targets


@dataclass
class _Resume:
    """Where a second pass takes over from the first: the step it starts at and the
    first pass's ``x0`` and noise direction of the step before."""

    step: int
    x0: torch.Tensor | None = None
    direction: torch.Tensor | None = None


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True)


def _adain(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``x`` with its per-channel mean and std replaced by ``mean`` and ``std``."""
    own_mean, own_std = _channel_stats(x)
    return (x - own_mean) / (own_std + 1e-6) * std + mean


def _latent_noise(seed: int, shape: tuple[int, ...], models: Models) -> torch.Tensor:
    """Seeded noise drawn on the CPU: identical on every device."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(models.device, models.dtype)


class FrameSampler:
    """Translates frames of one clip; holds the prompt, the fixed noises and the caches.

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
        self.cfg = settings.uses_cfg
        cond = models.encode_prompt(settings.full_prompt)
        self.embeddings = (
            torch.cat([models.encode_prompt(settings.negative_prompt), cond]) if self.cfg else cond
        )
        scheduler = make_scheduler(models.scheduler, settings.sampler)
        self.steps = schedule(scheduler, settings.sampler, settings.steps)
        start = settings.start_step
        self.stage1 = settings.steps_in("stage1_range") if settings.fusion else frozenset()
        self.stage2 = frozenset(
            i for i in settings.steps_in("stage2_range") if i > start and settings.fusion
        )
        self.adain = settings.steps_in("adain_range") if settings.adain else frozenset()
        # The same noises for every frame: the SDEdit start, the sampler's own per step
        # (LCM, TCD) and the fresh stage-2 noise per step.
        shape = (1, models.unet.config.in_channels, *self.latent_hw)
        self.noise = _latent_noise(settings.seed, shape, models)
        seeds = range(start, settings.steps)
        self.step_noise = {i: _latent_noise(settings.seed + 1 + i, shape, models) for i in seeds}
        self.fusion_noise = {
            i: _latent_noise(settings.seed + 1001 + i, shape, models) for i in self.stage2
        }

    # -- public ---------------------------------------------------------------------------
    def translate_anchor(
        self,
        image: np.ndarray,
        control: np.ndarray,
        should_stop: Callable[[], bool] | None = None,
        style: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        attend_to: StateCache | None = None,
    ) -> AnchorGuide:
        """Translate an anchor frame (one pass) and cache its states as anchor and previous.

        ``style`` (step -> channel mean, std) are AdaIN targets for the anchor's own x0: the
        first anchor's statistics (for the other anchors of a long clip) or a group's first
        view's (:class:`.style.StyleReference`); the recorded statistics are then the
        targets. ``attend_to``: cross-frame attention states to read (the first anchor's,
        for the other anchors); None: plain self-attention.
        """
        recorded = self._record_into()
        if attend_to is not None and self.settings.cross_frame_attention:
            self.controller.anchor, self.controller.previous = attend_to, attend_to
            self.controller.reading = True
        anchor = AnchorGuide(rgb=np.zeros(0, np.uint8))
        latent = self._sample(image, control, 0, _Guidance(style=style), should_stop, anchor)
        anchor.rgb = self._to_rgb(latent)
        anchor.states = recorded if recorded is not None else {}
        self.use_anchor(anchor)
        self.controller.recording = None
        self.controller.reading = False
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
        self.controller.anchor = anchor.states
        self.controller.reading = s.cross_frame_attention
        recorded = self._record_into()
        handover = _Resume(min(self.stage2)) if self.stage2 else None
        until = max(self.stage2) if self.stage2 and s.stage2_reference == "window-end" else None
        latent = self._sample(
            image, control, 0, guidance, should_stop, handover=handover, until=until
        )
        if handover is not None:
            direct = self._to_rgb(latent)
            guidance.x_ref, guidance.stage2_weight, guidance.flat = self._reference(
                direct, anchor, refs
            )
            latent = self._sample(image, control, 1, guidance, should_stop, resume=handover)
        if recorded is not None:
            self.controller.previous = recorded
        self.controller.recording = None
        self.controller.reading = False
        return self._to_rgb(latent)

    def previous_state(self) -> StateCache:
        """The previous frame's cached attention states."""
        return self.controller.previous

    def set_previous_state(self, states: StateCache) -> None:
        self.controller.previous = states

    def use_anchor(self, anchor: AnchorGuide) -> None:
        """Frames next to ``anchor`` attend to it as anchor and as previous frame."""
        self.controller.anchor = anchor.states
        self.controller.previous = anchor.states

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
        *,
        handover: _Resume | None = None,
        resume: _Resume | None = None,
        until: int | None = None,
    ) -> torch.Tensor:
        """Denoise from the SDEdit start (or from ``resume``); returns the final latent, or
        with ``until`` the clean-latent estimate ``x0`` of that step (no later step runs).

        ``handover``: filled with ``x0`` and ``d`` of the step before ``handover.step``.
        """
        import torch

        m = self.models
        with torch.no_grad():
            cond_image = torch.from_numpy(np.ascontiguousarray(control, np.float32))
            cond_image = cond_image[None, None].expand(1, 3, -1, -1).to(m.device, m.dtype)
            if self.cfg:
                cond_image = torch.cat([cond_image, cond_image])
            if resume is None:
                first = self.settings.start_step
                z = m.encode_image(m.rgb_to_tensor(image))
                a = self.steps[first].abar
                x = math.sqrt(a) * z + math.sqrt(1 - a) * self.noise
            else:
                first = resume.step
                x = self._advance(resume.x0, resume.direction, first - 1, guidance)
            for step in range(first, self.settings.steps):
                if should_stop is not None and should_stop():
                    raise Cancelled("translation cancelled; finished frames are kept")
                self.controller.step = step
                x0, direction = self._denoise(x, step, cond_image, guidance, record)
                if self.on_step is not None:
                    self.on_step(StepInfo(pass_index, step, x0))
                if handover is not None and step == handover.step - 1:
                    handover.x0, handover.direction = x0, direction
                if step == until:
                    return x0
                x = self._advance(x0, direction, step, guidance)
        return x

    def _denoise(
        self,
        x: torch.Tensor,
        step: int,
        cond_image: torch.Tensor,
        guidance: _Guidance,
        record: AnchorGuide | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One model evaluation: the rewritten ``x0`` and the noise direction ``d``."""
        c = self.steps[step]
        eps = self._predict_noise(x, c.timestep, cond_image)
        x0 = (x - math.sqrt(1 - c.abar) * eps) / math.sqrt(c.abar)
        if c.c_skip or c.c_out != 1.0:  # LCM's boundary condition
            x0 = c.c_out * x0 + c.c_skip * x
        x0 = self._rewrite_x0(x0, step, guidance, record)
        if c.z == 0.0 and c.e == 1.0:
            return x0, eps
        return x0, c.e * eps + c.z * self.step_noise[step]

    def _advance(
        self, x0: torch.Tensor, direction: torch.Tensor, step: int, guidance: _Guidance
    ) -> torch.Tensor:
        """The latent entering step ``step + 1`` (or the result after the last step), with
        the stage-2 reference blended in when ``step + 1`` is a fused step."""
        import torch

        s, a_next = self.settings, self.steps[step].abar_next
        if guidance.x_ref is not None and step + 1 in self.stage2:
            w = guidance.stage2_weight
            x0 = (1 - w) * x0 + w * guidance.x_ref
            if s.stage2_noise == "fresh":
                rescale = torch.maximum(1 - w, STAGE2_NOISE_DAMPING * torch.sqrt(1 - w * w))
                if s.smooth_boundary:
                    rescale = (1 - w) * (1 - guidance.flat) + rescale * guidance.flat
                direction = rescale * direction + w * self.fusion_noise[step + 1]
        return math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * direction

    def _predict_noise(self, x: torch.Tensor, t: int, cond_image: torch.Tensor) -> torch.Tensor:
        """Guided noise prediction of ControlNet + UNet at timestep ``t``."""
        import torch

        m = self.models
        x_in = torch.cat([x, x]) if self.cfg else x
        t = torch.tensor(t, dtype=torch.long, device=m.device)  # a tensor: no recompiles
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

        if record is not None:
            if guidance.style is not None and step in guidance.style and step in self.adain:
                x0 = _adain(x0, *guidance.style[step])
            if step in self.stage1:
                record.x0[step] = x0.clone()
            if step in self.adain:
                record.stats[step] = _channel_stats(x0)
            return x0
        anchor = guidance.anchor
        if anchor is None:
            return x0
        if guidance.stage1_mask is not None and step in anchor.x0:
            warped = warp_latent(anchor.x0[step], guidance.anchor_flow, "nearest")
            x0 = warped * guidance.stage1_mask + x0 * (1 - guidance.stage1_mask)
        if step in anchor.stats:
            x0 = _adain(x0, *anchor.stats[step])
        return x0

    def _reference(
        self, direct: np.ndarray, anchor: AnchorGuide, refs: FrameRefs
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fidelity-encoded reference latent, stage-2 weight ``w`` and the flat part of the
        fusion mask (eq. 10-11)."""
        from ..prepare.flow import soften_occlusion, warp_image

        reference = direct.astype(np.float32)
        occluded = np.ones(direct.shape[:2], bool)
        sources = [] if refs.prev_flow is None else [(refs.prev_rgb, refs.prev_flow)]
        for rgb, pair in [*sources, (anchor.rgb, refs.anchor_flow)]:  # anchor ends on top
            visible = (1 - pair.occlusion)[..., None]
            warped = warp_image(rgb.astype(np.float32), pair.flow)
            reference = warped * visible + reference * (1 - visible)
            occluded &= pair.occlusion_raw
        mask = 1 - self._maxpool(soften_occlusion(occluded))  # Rerender: occluded in both
        return self._fidelity_latent(reference), self.settings.stage2_weight * mask, _flat(mask)

    def _fidelity_latent(self, reference: np.ndarray) -> torch.Tensor:
        """``z + (1 - bad)(z - E(D(z)))``: encoding that compensates the VAE's loss except
        where that overshoots (reconstruction error above ``fidelity_threshold``)."""
        import torch
        import torch.nn.functional as F

        m = self.models
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
            return z + (1 - bad) * (z - z_rec)

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


def _flat(mask: torch.Tensor) -> torch.Tensor:
    """1 where a latent-size mask ``(1, 1, h, w)`` does not change within its 3x3
    neighbourhood (horizontal and vertical 3x3 differences, replicated border), else 0."""
    import torch
    import torch.nn.functional as F

    padded = F.pad(mask.float(), (1, 1, 1, 1), mode="replicate")
    ramp = torch.tensor([-1.0, 0.0, 1.0], device=mask.device)
    kernel_x = ramp.expand(3, 3)[None, None]
    gradient = F.conv2d(padded, kernel_x).abs() + F.conv2d(padded, kernel_x.transpose(2, 3)).abs()
    return (gradient == 0).to(mask.dtype)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings mean something."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
