"""Style reference: a group's other views take the first view's anchor statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_clip
from napari_diffslva.errors import SettingsError
from napari_diffslva.progress import run_to_end
from napari_diffslva.project import RunFolder

HW = (64, 64)


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    from napari_diffslva.engine.tiny import tiny_settings

    return tiny_settings(tiny_models_dir, steps=10, adain_range=(0.7, 1.0))


def _inputs(real_clip, name: str, start: int, stop: int):
    """Frames of a real clip at 64x64 with Canny edges: one camera's view."""
    from napari_diffslva.engine.translate import InMemoryInputs

    return InMemoryInputs(*small_clip(real_clip, name, start, stop))


@pytest.fixture(scope="module")
def first_view(models, tiny, real_clip, tmp_path_factory):
    """The group's first view, translated into its run folder; returns its saved reference."""
    from napari_diffslva.engine.style import StyleReference
    from napari_diffslva.engine.translate import translate_clip

    run = RunFolder(tmp_path_factory.mktemp("first"))
    settings = tiny.replace(fusion=False)
    stats = run_to_end(
        translate_clip(_inputs(real_clip, "sl_soup.mp4", 0, 3), models, settings, run)
    )
    assert stats.style_reference is None  # it made the reference, it used none
    reference = StyleReference.load(run)
    assert reference is not None and reference.steps == settings.steps
    return reference


def _stats(x):
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))])


def test_other_view_anchor_takes_the_reference_statistics(models, tiny, first_view, real_clip):
    from napari_diffslva.engine.sampler import FrameSampler

    other = _inputs(real_clip, "asl_house.gif", 10, 11)  # another camera, another image
    adain_steps = sorted(s for s in tiny.steps_in("adain_range") if s >= tiny.start_step)
    assert sorted(first_view.stats) == adain_steps == [7, 8, 9]
    target = first_view.targets(tiny, models.device, models.dtype)
    seen = {}
    with FrameSampler(models, tiny, HW) as sampler:
        sampler.on_step = lambda info: seen.__setitem__(info.step, info.x0)
        own = sampler.translate_anchor(other.frame(0), other.control(0))
        own_x0 = dict(seen)
        shared = sampler.translate_anchor(other.frame(0), other.control(0), style=target)
    for step in adain_steps:
        expected = torch.cat([t.flatten()[None] for t in target[step]])
        torch.testing.assert_close(_stats(seen[step]), expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(
            torch.cat([t.flatten()[None] for t in shared.stats[step]]), expected, rtol=0, atol=1e-4
        )  # what its frames will follow
    gaps = [
        (_stats(own_x0[s]) - torch.cat([t.flatten()[None] for t in target[s]])).abs().max()
        for s in adain_steps
    ]
    assert min(gaps) > 1e-2  # without the reference the view's own anchor differs
    assert np.abs(own.rgb.astype(int) - shared.rgb.astype(int)).mean() > 1


def test_clip_with_a_reference_saves_it_and_keys_on_it(
    models, tiny, first_view, real_clip, tmp_path
):
    from napari_diffslva.engine.style import StyleReference
    from napari_diffslva.engine.translate import STAGE, run_key, translate_clip

    other = _inputs(real_clip, "asl_house.gif", 10, 13)
    run = RunFolder(tmp_path / "second")
    stats = run_to_end(translate_clip(other, models, tiny, run, style_reference=first_view))
    assert stats.style_reference == first_view.key
    key = run_key(other, tiny, first_view)
    assert key != run_key(other, tiny)  # another reference: other frames, recomputed
    assert run.done_frames(STAGE, key) == {0, 1, 2}
    own = StyleReference.load(run)  # this view's anchor now has the first view's statistics
    for step, (mean, std) in first_view.stats.items():
        np.testing.assert_allclose(own.stats[step][0], mean, atol=1e-4)
        np.testing.assert_allclose(own.stats[step][1], std, atol=1e-4)


def test_a_reference_from_another_schedule_is_refused(models, tiny, first_view, real_clip):
    from napari_diffslva.engine.translate import translate_clip

    other = _inputs(real_clip, "asl_house.gif", 10, 11)
    with pytest.raises(SettingsError, match="same steps"):
        run_to_end(
            translate_clip(other, models, tiny.replace(steps=12), style_reference=first_view)
        )
