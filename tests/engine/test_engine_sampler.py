"""One-frame sampler: SDEdit skipping, DDIM, stage-1 fusion and AdaIN, step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_clip

HW = (64, 64)


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    from napari_diffslva.engine.tiny import tiny_settings

    return tiny_settings(tiny_models_dir, steps=10)


@pytest.fixture(scope="module")
def frames(real_clip):
    return small_clip(real_clip, "asl_house.gif", 10, 19, 4)


def test_skipped_sdedit_steps_match_a_full_ddim_loop(models, tiny, frames):
    """The sampler never computes the steps before the SDEdit start; a plain diffusers DDIM
    loop that computes them and then replaces the latent gives the same frame."""
    from napari_diffslva.engine.sampler import FrameSampler

    small, edges = frames
    settings = tiny.replace(cross_frame_attention=False, fusion=False, adain=False, strength=0.6)
    with FrameSampler(models, settings, HW) as sampler:
        ours = sampler.translate_anchor(small[0], edges[0]).rgb
        evals = sampler.counters.unet_evals
    start = settings.start_step
    assert start == 4 and evals == 2 * (settings.steps - start)  # CFG: 2 per step

    scheduler = models.scheduler
    scheduler.set_timesteps(settings.steps)
    gen = torch.Generator().manual_seed(settings.seed)
    noise = torch.randn((1, 4, 8, 8), generator=gen)
    emb = torch.cat(
        [
            models.encode_prompt(settings.negative_prompt),
            models.encode_prompt(f"{settings.prompt}, {settings.added_prompt}"),
        ]
    )
    control = torch.from_numpy(edges[0])[None, None].expand(2, 3, -1, -1)
    with torch.no_grad():
        z = models.encode_image(models.rgb_to_tensor(small[0]))
        latent = noise.clone()
        for index, t in enumerate(scheduler.timesteps):
            if index == start:  # SDEdit: replace the latent by the noised input here
                latent = scheduler.add_noise(z, noise, t[None])
            x_in = torch.cat([latent, latent])
            down, mid = models.controlnet(
                x_in, t, encoder_hidden_states=emb, controlnet_cond=control, return_dict=False
            )
            eps = models.unet(
                x_in,
                t,
                encoder_hidden_states=emb,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
            uncond, cond = eps.chunk(2)
            eps = uncond + settings.guidance * (cond - uncond)
            latent = scheduler.step(eps, t, latent, eta=0.0).prev_sample
        image = models.decode_latent(latent)[0].clamp(-1, 1)
    reference = ((image + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def _record(sampler):
    seen = {}
    sampler.on_step = lambda info: seen.__setitem__((info.pass_index, info.step), info.x0)
    return seen


def test_adain_matches_anchor_statistics_inside_its_range(models, tiny, frames):
    from napari_diffslva.engine.sampler import FrameRefs, FrameSampler
    from napari_diffslva.prepare.flow import pair_flow

    small, edges = frames
    settings = tiny.replace(fusion=False, adain_range=(0.6, 1.0))
    with FrameSampler(models, settings, HW) as sampler:
        anchor_x0 = _record(sampler)
        guide = sampler.translate_anchor(small[0], edges[0])
        frame_x0 = _record(sampler)
        sampler.translate_frame(small[2], edges[2], guide, FrameRefs(pair_flow(small[2], small[0])))

    def stats(x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))])

    inside = [s for s in range(settings.start_step, settings.steps) if s >= 6]
    outside = [s for s in range(settings.start_step, settings.steps) if s < 6]
    assert inside and outside
    for step in inside:
        torch.testing.assert_close(
            stats(frame_x0[(0, step)]), stats(anchor_x0[(0, step)]), rtol=0, atol=1e-4
        )
    gaps = [(stats(frame_x0[(0, s)]) - stats(anchor_x0[(0, s)])).abs().max() for s in outside]
    assert max(gaps) > 1e-3  # 10x the tolerance: without AdaIN the statistics differ


def test_stage1_takes_the_warped_anchor_x0_where_visible(models, tiny, frames):
    """At full strength the early stage-1 steps run; with no occlusion the frame's x0 there
    is the anchor's x0 pulled along the flow (nearest warping at latent size)."""
    from napari_diffslva.engine.sampler import FrameRefs, FrameSampler
    from napari_diffslva.prepare.flow import PairFlow, warp_latent

    small, edges = frames
    settings = tiny.replace(strength=1.0, adain=False, stage1_range=(0.0, 0.1))
    shift = np.zeros((*HW, 2), np.float32)
    shift[..., 0] = 8.0  # one latent pixel to the right
    flow = PairFlow(shift, np.zeros(HW, np.float32), np.zeros(HW, bool))
    with FrameSampler(models, settings, HW) as sampler:
        anchor_x0 = _record(sampler)
        guide = sampler.translate_anchor(small[0], edges[0])
        frame_x0 = _record(sampler)
        sampler.translate_frame(small[2], edges[2], guide, FrameRefs(flow))
    assert sorted(guide.x0) == [0, 1]  # Rerender's closed window: 0 <= i <= 0.1 * 10
    for step in (0, 1):
        expected = warp_latent(anchor_x0[(0, step)], shift, "nearest")
        torch.testing.assert_close(frame_x0[(0, step)], expected)
        assert (1, step) not in frame_x0  # the second pass starts at the first fused step
    assert (frame_x0[(0, 2)] - warp_latent(anchor_x0[(0, 2)], shift)).abs().max() > 1e-2
    first_fused = min(settings.steps_in("stage2_range"))
    assert min(step for p, step in frame_x0 if p == 1) == first_fused == 6


@pytest.mark.parametrize("noise", ["fresh", "model"])
def test_second_pass_from_the_first_fused_step_is_exact(models, tiny, frames, noise):
    """The second pass repeats the first up to the first fused step, so starting it there
    from the first pass's x0 and noise direction gives bit-identical frames (and the same
    recorded attention states) as running it from the SDEdit start, with fewer
    evaluations: 2 x (steps - first fused step) instead of 2 x (steps - start)."""
    from napari_diffslva.engine.sampler import FrameRefs, FrameSampler, _Guidance
    from napari_diffslva.prepare.flow import pair_flow

    small, edges = frames
    settings = tiny.replace(stage2_noise=noise)
    refs = FrameRefs(pair_flow(small[2], small[0]), pair_flow(small[2], small[1]), None)
    with FrameSampler(models, settings, HW) as sampler:
        guide = sampler.translate_anchor(small[0], edges[0])
        refs.prev_rgb = guide.rgb
        before = sampler.counters.unet_evals
        fast = sampler.translate_frame(small[2], edges[2], guide, refs)
        fast_states = sampler.previous_state()
        fast_evals = sampler.counters.unet_evals - before
        # the same frame with both passes from the start, through the internals
        sampler.use_anchor(guide)
        guidance = _Guidance(anchor=guide)
        guidance.anchor_flow = refs.anchor_flow.flow
        guidance.stage1_mask = 1 - sampler._maxpool(refs.anchor_flow.occlusion)
        sampler.controller.reading = True
        first = sampler._sample(small[2], edges[2], 0, guidance, None)
        guidance.x_ref, guidance.stage2_weight, guidance.flat = sampler._reference(
            sampler._to_rgb(first), guide, refs
        )
        recorded = sampler._record_into()
        slow = sampler._to_rgb(sampler._sample(small[2], edges[2], 1, guidance, None))
        sampler.controller.recording = None
    start, fused = settings.start_step, min(settings.steps_in("stage2_range"))
    assert fast_evals == 2 * (settings.steps - start) + 2 * (settings.steps - fused)
    assert np.array_equal(fast, slow)
    assert fast_states.keys() == recorded.keys()
    assert all(torch.equal(fast_states[k], recorded[k]) for k in recorded)


def test_window_end_reference_stops_the_first_pass_at_the_last_fused_step(models, tiny, frames):
    """``stage2_reference="window-end"``: the first pass runs only up to the last fused
    step and the reference is built from its clean-image estimate there; the frame equals
    that construction done by hand, and the default schedule costs 40 evaluations a frame
    (48 with Rerender-A-Video's finished first pass)."""
    from napari_diffslva.engine.sampler import FrameRefs, FrameSampler, _Guidance
    from napari_diffslva.prepare.flow import pair_flow

    small, edges = frames
    settings = tiny.replace(stage2_reference="window-end")
    start, fused = settings.start_step, sorted(settings.steps_in("stage2_range"))
    refs = FrameRefs(pair_flow(small[2], small[0]), pair_flow(small[2], small[1]), None)
    with FrameSampler(models, settings, HW) as sampler:
        guide = sampler.translate_anchor(small[0], edges[0])
        refs.prev_rgb = guide.rgb
        steps, estimates = [], {}
        sampler.on_step = lambda info: (
            steps.append((info.pass_index, info.step)),
            estimates.setdefault((info.pass_index, info.step), info.x0.clone()),
        )
        before = sampler.counters.unet_evals
        fast = sampler.translate_frame(small[2], edges[2], guide, refs)
        evals = sampler.counters.unet_evals - before
        sampler.on_step = None
        # by hand: the reference from the first pass's estimate at the last fused step
        sampler.use_anchor(guide)
        guidance = _Guidance(anchor=guide)
        guidance.anchor_flow = refs.anchor_flow.flow
        guidance.stage1_mask = 1 - sampler._maxpool(refs.anchor_flow.occlusion)
        sampler.controller.reading = True
        direct = sampler._to_rgb(estimates[(0, fused[-1])])
        guidance.x_ref, guidance.stage2_weight, guidance.flat = sampler._reference(
            direct, guide, refs
        )
        slow = sampler._to_rgb(sampler._sample(small[2], edges[2], 1, guidance, None))
    first_pass = [step for pass_index, step in steps if pass_index == 0]
    assert first_pass == list(range(start, fused[-1] + 1))
    assert [step for p, step in steps if p == 1] == list(range(fused[0], settings.steps))
    assert evals == 2 * len(first_pass) + 2 * (settings.steps - fused[0])
    assert np.array_equal(fast, slow)
    # the default schedule (20 steps, strength 0.75, CFG 7.5), counted
    for reference, expected in (("final", 48), ("window-end", 40)):
        schedule = tiny.replace(steps=20, strength=0.75, guidance=7.5, stage2_reference=reference)
        with FrameSampler(models, schedule, HW) as sampler:
            guide = sampler.translate_anchor(small[0], edges[0])
            before = sampler.counters.unet_evals
            sampler.translate_frame(small[2], edges[2], guide, refs)
            assert sampler.counters.unet_evals - before == expected, reference


def test_flat_region_of_the_fusion_mask():
    """smooth_boundary's mask: 1 where the latent-size fusion mask is constant over the
    3x3 neighbourhood, 0 along its boundary (where the rescale falls back to 1 - w)."""
    from napari_diffslva.engine.sampler import _flat

    mask = torch.ones(1, 1, 8, 8)
    mask[..., 2:5, 3:6] = 0.25
    flat = _flat(mask)
    assert flat[0, 0, 3, 4] == 1 and flat[0, 0, 0, 0] == 1 and flat[0, 0, 7, 7] == 1
    assert flat[0, 0, 2, 3] == 0 and flat[0, 0, 1, 4] == 0 and flat[0, 0, 5, 6] == 0
    boundary = (flat == 0).sum().item()
    assert boundary == 5 * 5 - 1  # the ring around the 3x3 block and the block's edge
