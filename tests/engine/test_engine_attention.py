"""Cross-frame attention: stock when it attends to itself, and it really uses the anchor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_clip

HW = (64, 64)


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    from napari_diffslva.engine.tiny import tiny_settings

    return tiny_settings(tiny_models_dir, steps=8)


@pytest.fixture(scope="module")
def frames(real_clip):
    """Three frames of a real signing clip at 64x64, with Canny edges."""
    return small_clip(real_clip, "sl_soup.mp4", 0, 9, 4)


def _unet_call(models, sample):
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 77, models.unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        return models.unet(sample, 500, encoder_hidden_states=emb).sample


def test_attending_to_itself_equals_stock_attention(models):
    from napari_diffslva.engine.attention import CrossFrameController, install_cross_frame

    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    controller = CrossFrameController()
    install_cross_frame(models.unet, None, controller)
    stock = _unet_call(models, sample)
    try:
        chosen = install_cross_frame(models.unet, "up", controller)
        assert chosen and all(".attn1." in n and n.startswith("up_blocks") for n in chosen)
        controller.recording = {}
        recorded = _unet_call(models, sample)  # writing only: still stock attention
        own, controller.recording = controller.recording, None
        assert len(own) == len(chosen)
        controller.anchor, controller.previous, controller.reading = own, own, True
        read_self = _unet_call(models, sample)  # K, V from [v_i; v_i]
        controller.anchor, controller.previous = {}, {}
        fallback = _unet_call(models, sample)  # missing caches fall back to self
        other = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
        controller.reading, controller.recording = False, {}
        _unet_call(models, other)
        controller.anchor, controller.recording = controller.recording, None
        controller.reading = True
        read_other = _unet_call(models, sample)
    finally:
        install_cross_frame(models.unet, None, controller)
    assert torch.equal(recorded, stock)
    torch.testing.assert_close(read_self, stock, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fallback, stock, rtol=1e-5, atol=1e-5)
    assert (read_other - stock).abs().max() > 1e-3  # another frame's states change the output


def test_up_loose_keeps_the_narrower_decoder_layers(models):
    from napari_diffslva.engine.attention import select_layers

    up = select_layers(models.unet, "up")
    loose = select_layers(models.unet, "up-loose")
    assert set(loose) < set(up) and loose
    assert select_layers(models.unet, ["up_blocks.1"]) == [n for n in up if "up_blocks.1." in n]


def _last_x0(sampler, run):
    """Run ``run()`` and return the x0 prediction of the sampler's last step (the result
    before decoding, more sensitive than uint8 pixels)."""
    seen = []
    sampler.on_step = lambda info: seen.append(info.x0)
    run()
    sampler.on_step = None
    return seen[-1]


def _translate_second_frame(models, settings, frames, edges, states_of=None):
    """Final x0 of frame 1 translated with frame 0 as anchor; with ``states_of=(image,
    edges)`` the cached anchor attention states are swapped for those of that other image
    (everything else stays frame 0's)."""
    from napari_diffslva.engine.sampler import FrameRefs, FrameSampler
    from napari_diffslva.prepare.flow import PairFlow

    with FrameSampler(models, settings, HW) as sampler:
        other = None
        if states_of is not None:
            sampler.translate_anchor(*states_of)
            other = sampler.controller.anchor
        guide = sampler.translate_anchor(frames[0], edges[0])
        if other is not None:
            guide.states = other
        sampler.set_previous_state({})
        refs = FrameRefs(PairFlow.identity(HW))
        return _last_x0(sampler, lambda: sampler.translate_frame(frames[1], edges[1], guide, refs))


def test_frame_output_depends_on_the_anchor_states(models, tiny, frames):
    small, edges = frames
    settings = tiny.replace(fusion=False, adain=False)
    plain = _translate_second_frame(models, settings, small, edges)
    other = (255 - small[0], np.zeros_like(edges[0]))  # a very different "anchor"
    swapped = _translate_second_frame(models, settings, small, edges, states_of=other)
    print(f"x0 change from the anchor states: {(plain - swapped).abs().max():.4f}")
    assert (plain - swapped).abs().max() > 1e-2

    off = settings.replace(cross_frame_attention=False)  # control: then the states are unused
    plain_off = _translate_second_frame(models, off, small, edges)
    assert torch.equal(plain_off, _translate_second_frame(models, off, small, edges, other))


def test_identical_frames_give_the_anchor_result(models, tiny, frames):
    from napari_diffslva.engine.sampler import FrameRefs, FrameSampler
    from napari_diffslva.prepare.flow import PairFlow

    small, edges = frames
    settings = tiny.replace(fusion=False)  # cross-frame attention + AdaIN on
    refs = FrameRefs(PairFlow.identity(HW))
    with FrameSampler(models, settings, HW) as sampler:
        holder = {}
        anchor_x0 = _last_x0(
            sampler, lambda: holder.update(guide=sampler.translate_anchor(small[2], edges[2]))
        )
        guide = holder["guide"]
        sampler.set_previous_state({})
        frame_x0 = [
            _last_x0(
                sampler,
                lambda: holder.update(rgb=sampler.translate_frame(small[2], edges[2], guide, refs)),
            )
            for _ in range(3)
        ]
        assert np.abs(holder["rgb"].astype(int) - guide.rgb.astype(int)).max() <= 1
        # Negative control: the same frame reading the anchor's states with the CFG halves
        # swapped (a misaligned cache) drifts far beyond the tolerance used above.
        guide.states = {k: v.flip(0) for k, v in guide.states.items()}
        sampler.controller.previous = guide.states
        misaligned = _last_x0(
            sampler, lambda: sampler.translate_frame(small[2], edges[2], guide, refs)
        )
    for x0 in frame_x0:
        torch.testing.assert_close(x0, anchor_x0, rtol=0, atol=1e-4)
    assert (misaligned - anchor_x0).abs().max() > 1e-3
