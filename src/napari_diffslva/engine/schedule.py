"""The denoising schedule of one sampler, as per-step numbers the frame sampler applies.

Every supported sampler takes a step the same way once its model output is turned into a
clean-latent estimate ``x0`` (which fusion and AdaIN then rewrite):
``x_next = sqrt(abar_next) x0 + sqrt(1 - abar_next) d`` with a unit-variance noise direction
``d = e eps + z n``, ``eps`` the model's noise estimate and ``n`` the step's sampler noise
(drawn once per clip, the same for every frame). The samplers differ only in these numbers:

- ``ddim`` (Rerender-A-Video's, eta 0, "leading" timesteps) and ``ddim-trailing`` (the
  timesteps Hyper-SD's LoRAs are trained for): ``d = eps``;
- ``lcm``: ``x0`` through the consistency boundary condition ``c_out x0 + c_skip x_t``, then
  fresh noise ``d = n`` (the last step returns ``x0``);
- ``tcd`` (gamma 0.3): DDIM to the intermediate timestep ``s = (1 - gamma) t_next``, then
  noise up to ``t_next``.

The timesteps and cumulative alphas come from diffusers' schedulers (``set_timesteps``); the
step formulas are those of diffusers' ``step`` functions, checked against them in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TCD_GAMMA = 0.3  # diffusers' default eta of TCDScheduler.step, the TCD authors' choice


@dataclass(frozen=True)
class StepCoefficients:
    """The numbers of one step: see the module docstring."""

    timestep: int
    abar: float  # at this step's timestep
    abar_next: float  # where the step goes
    c_skip: float = 0.0  # LCM boundary condition; 0 and 1 for the others
    c_out: float = 1.0
    e: float = 1.0  # weight of eps in the noise direction d
    z: float = 0.0  # weight of the sampler noise n in d


def make_scheduler(base: Any, sampler: str) -> Any:
    """A diffusers scheduler of kind ``sampler`` from the model's scheduler config."""
    from diffusers import DDIMScheduler, LCMScheduler, TCDScheduler

    config = base.config
    if sampler == "ddim":
        return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    if sampler == "ddim-trailing":
        return DDIMScheduler.from_config(
            config, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing"
        )
    if sampler == "lcm":
        return LCMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    if sampler == "tcd":
        return TCDScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    raise ValueError(f"unknown sampler {sampler!r}")


def schedule(scheduler: Any, sampler: str, steps: int) -> list[StepCoefficients]:
    """Per-step coefficients of ``steps`` steps (the scheduler's timesteps are set)."""
    scheduler.set_timesteps(steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    abar = scheduler.alphas_cumprod.double()
    final = float(scheduler.final_alpha_cumprod)
    out = []
    for index, t in enumerate(timesteps):
        last = index == len(timesteps) - 1
        if sampler.startswith("ddim"):  # DDIMScheduler.step's previous timestep: t - jump
            t_next = t - scheduler.config.num_train_timesteps // steps
        else:
            t_next = -1 if last else timesteps[index + 1]
        a, a_next = float(abar[t]), float(abar[t_next]) if t_next >= 0 else final
        if sampler == "lcm":
            c_skip, c_out = (
                float(v) for v in scheduler.get_scalings_for_boundary_condition_discrete(t)
            )
            coeffs = StepCoefficients(t, a, 1.0 if last else a_next, c_skip, c_out, 0.0, 1.0)
        elif sampler == "tcd":
            coeffs = _tcd_step(t, a, abar, 0 if last else timesteps[index + 1], last)
        else:
            coeffs = StepCoefficients(t, a, a_next)
        out.append(coeffs)
    return out


def _tcd_step(t: int, a: float, abar: Any, t_next: int, last: bool) -> StepCoefficients:
    """TCD: ``x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps`` at ``s = floor((1 - gamma) t_next)``,
    then ``x_next = sqrt(a_next / a_s) x_s + sqrt(1 - a_next / a_s) n`` (not on the last)."""
    s = math.floor((1 - TCD_GAMMA) * t_next)
    a_s = float(abar[s])
    if last:
        return StepCoefficients(t, a, a_s)
    a_next = float(abar[t_next])
    ratio = a_next / a_s
    scale = math.sqrt(1 - a_next)
    return StepCoefficients(
        t, a, a_next, e=math.sqrt(ratio * (1 - a_s)) / scale, z=math.sqrt(1 - ratio) / scale
    )
