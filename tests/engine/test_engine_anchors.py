"""Anchors: where they go in long clips, their shared style, and translate_anchor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_clip
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder

HW = (64, 64)


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    from napari_diffslva.engine.tiny import tiny_settings

    return tiny_settings(tiny_models_dir, steps=8, anchor=6, anchor_span=5)


@pytest.fixture(scope="module")
def clip12(real_clip):
    """12 frames of a real signing clip at 64x64 with Canny edges."""
    from napari_diffslva.engine.translate import InMemoryInputs

    return InMemoryInputs(*small_clip(real_clip, "sl_soup.mp4", 0, 24, 2))


def test_plan_places_an_anchor_per_span_and_keeps_the_first():
    from napari_diffslva.engine.anchors import plan_clip

    plan = plan_clip(400, 150, 180)
    assert plan.anchors[0] == 150 and len(plan.anchors) == 3  # ceil(400 / 180)
    assert sorted(plan.order) == list(range(400)) and plan.order[:3] == list(plan.anchors)
    covered = sorted(i for start, stop in plan.segments for i in range(start, stop))
    assert covered == list(range(400))
    for start, stop in plan.segments:
        assert stop - start <= 180
    for i in range(400):  # each frame is served by its nearest anchor
        assert abs(i - plan.anchor_of(i)) == min(abs(i - a) for a in plan.anchors)
    # a score moves the other anchors (within a quarter span) to the best frame
    scored = plan_clip(400, 150, 180, score=lambda i: 1.0 if i in (40, 350) else 0.0)
    assert sorted(scored.anchors) == [40, 150, 350]
    assert plan_clip(400, 150, None).anchors == (150,)


def test_long_clip_anchors_share_the_first_anchors_style(models, tiny, clip12, tmp_path):
    """12 frames, one anchor per 5: the first (6) and two more, all translated first; the
    others through attention to the first anchor and AdaIN toward its statistics, exactly
    as the sampler does it by hand (and not as a lone anchor would look)."""
    from napari_diffslva.engine.sampler import FrameSampler
    from napari_diffslva.engine.translate import STAGE, translate_clip

    run = RunFolder(tmp_path / "run")
    events = []
    stats = run_to_end(translate_clip(clip12, models, tiny, run), events.append)
    order = [e.payload[0] for e in events]
    assert stats.anchors == [6, 2, 10] and order[:3] == [6, 2, 10]
    assert sorted(order) == list(range(12))
    assert order[3:7] == [7, 5, 4, 3]  # the first anchor's frames outward: 7, then 5, 4
    with FrameSampler(models, tiny, HW) as sampler:
        first = sampler.translate_anchor(clip12.frame(6), clip12.control(6))
        styled = sampler.translate_anchor(
            clip12.frame(2), clip12.control(2), None, first.stats, first.states
        )
        alone = sampler.translate_anchor(clip12.frame(2), clip12.control(2))
    assert np.array_equal(run.read_frame(STAGE, 2), styled.rgb)
    gaps = [
        (alone.stats[s][k] - first.stats[s][k]).abs().max() for s in first.stats for k in (0, 1)
    ]
    assert max(gaps) > 1e-3  # 10x the tolerance below: alone it has its own statistics
    for step, (mean, std) in first.stats.items():  # AdaIN toward the first anchor
        torch.testing.assert_close(styled.stats[step][0], mean, rtol=0, atol=1e-4)
        torch.testing.assert_close(styled.stats[step][1], std, rtol=0, atol=1e-4)


def test_resume_in_a_later_segment_is_bit_identical(models, tiny, clip12, tmp_path):
    from napari_diffslva.engine.translate import STAGE, translate_clip

    settings = tiny.replace(state_every=2)
    whole = RunFolder(tmp_path / "whole")
    run_to_end(translate_clip(clip12, models, settings, whole))
    killed = RunFolder(tmp_path / "killed")
    gen = translate_clip(clip12, models, settings, killed)
    seen = [next(gen).payload[0] for _ in range(8)]  # into the second anchor's frames
    gen.close()
    assert seen == [6, 2, 10, 7, 5, 4, 3, 1]
    stats = run_to_end(translate_clip(clip12, models, settings, killed, resume=True))
    assert stats.resumed_frames == 1 and stats.resume_mismatches == 0  # frame 1 again
    for i in range(12):
        assert np.array_equal(killed.read_frame(STAGE, i), whole.read_frame(STAGE, i)), i


def test_translate_anchor_gives_the_clips_anchor_pixels(models, tiny, clip12, tmp_path):
    from napari_diffslva.engine.translate import STAGE, translate_anchor, translate_clip

    settings = tiny.replace(anchor=4, anchor_span=None)
    alone = translate_anchor(clip12, models, settings)
    run = RunFolder(tmp_path / "run")
    gen = translate_clip(clip12, models, settings, run)
    index, rgb = next(gen).payload
    gen.close()
    assert index == 4 and np.array_equal(alone, rgb)
    assert np.array_equal(run.read_frame(STAGE, 4), alone)
