"""Schedule arithmetic: fusion windows as schedule fractions and the samplers' step rules."""

from __future__ import annotations

import math

import pytest
import torch

from napari_diffslva.engine.settings import EngineSettings, steps_in


def test_windows_are_rerender_s_at_20_steps():
    """Rerender-A-Video: shape-aware fusion on steps 0 <= i <= 0.1 * 20, pixel-aware fusion
    into steps 0.5 * 20 < i < 0.8 * 20 (five: 11-15, not 10-15), AdaIN on 16-19."""
    s = EngineSettings()
    assert s.steps_in("stage1_range") == {0, 1, 2}
    assert s.steps_in("stage2_range") == {11, 12, 13, 14, 15}
    assert s.steps_in("adain_range") == {16, 17, 18, 19}
    assert s.start_step == 5  # so stage 1 does not run at strength 0.75, as in the paper


@pytest.mark.parametrize(
    ("steps", "stage1", "stage2", "adain"),
    [
        (4, {0}, {3}, {3}),  # AdaIN's (0.8, 1] catches no step of 4: the nearest, 3
        (6, {0}, {4}, {5}),
        (8, {0}, {5, 6}, {7}),
    ],
)
def test_windows_keep_working_at_few_steps(steps, stage1, stage2, adain):
    assert steps_in((0.0, 0.1), steps) == stage1
    assert steps_in((0.5, 0.8), steps, open_=True) == stage2
    assert steps_in((0.8, 1.0), steps) == adain
    assert steps_in((0.3, 0.3), steps, open_=True) == set()  # an empty window stays empty


def test_presets_fill_what_is_not_given():
    lcm = EngineSettings.from_dict({"preset": "lcm"})
    assert (lcm.sampler, lcm.steps, lcm.guidance, lcm.uses_cfg) == ("lcm", 6, 1.0, False)
    assert EngineSettings.from_dict({"preset": "hyper", "steps": 4}).steps == 4
    assert EngineSettings.from_dict(lcm.to_dict()) == lcm  # round trip
    from napari_diffslva.errors import SettingsError

    with pytest.raises(SettingsError, match="preset"):
        EngineSettings(preset="tcd")  # sampler ddim does not run the TCD LoRA


@pytest.mark.parametrize("sampler", ["ddim", "ddim-trailing", "lcm", "tcd"])
def test_step_coefficients_match_diffusers_step(sampler):
    """Our step ``x_next = sqrt(abar_next) x0 + sqrt(1 - abar_next) (e eps + z n)`` (with
    LCM's boundary condition on x0) against the sampler's own diffusers ``step`` with the
    same noise, at every step of an 8-step schedule."""
    from diffusers import DDIMScheduler

    from napari_diffslva.engine.schedule import TCD_GAMMA, make_scheduler, schedule

    base = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    ours = schedule(make_scheduler(base, sampler), sampler, 8)
    theirs = make_scheduler(base, sampler)
    theirs.set_timesteps(8)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    for index, c in enumerate(ours):
        assert c.timestep == int(theirs.timesteps[index])
        eps = torch.randn(1, 4, 8, 8, generator=gen)
        noise_seed = 100 + index
        kwargs = {"eta": TCD_GAMMA} if sampler == "tcd" else {}
        if sampler in ("lcm", "tcd"):
            kwargs["generator"] = torch.Generator().manual_seed(noise_seed)
        expected = theirs.step(eps, c.timestep, x, **kwargs).prev_sample
        noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(noise_seed))
        x0 = (x - math.sqrt(1 - c.abar) * eps) / math.sqrt(c.abar)
        x0 = c.c_out * x0 + c.c_skip * x
        direction = c.e * eps + c.z * noise
        got = math.sqrt(c.abar_next) * x0 + math.sqrt(1 - c.abar_next) * direction
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        x = expected
