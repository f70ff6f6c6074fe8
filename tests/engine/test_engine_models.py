"""Engine settings and model loading: tiny random-weight models through the real loader."""

from __future__ import annotations

import json
import time

import pytest
import torch

from napari_diffslva.engine.settings import EngineSettings
from napari_diffslva.errors import SettingsError, WeightsError


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    from napari_diffslva.engine.tiny import tiny_settings

    return tiny_settings(tiny_models_dir)


def test_tiny_models_load_through_the_real_loader(tiny):
    from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel

    from napari_diffslva.engine.models import load_models

    models = load_models(tiny)
    assert isinstance(models.unet, UNet2DConditionModel)
    assert isinstance(models.controlnet, ControlNetModel)
    assert isinstance(models.scheduler, DDIMScheduler)
    assert models.vae_scale_factor == 8  # like SD, so flow/latent geometry carries over
    assert models.device.type == "cpu" and models.dtype == torch.float32
    assert load_models(tiny) is models  # cached per process
    emb = models.encode_prompt("a woman is making gestures")
    assert emb.shape == (1, 77, models.unet.config.cross_attention_dim)
    assert not torch.equal(emb, models.encode_prompt("a man in a suit"))


def test_tiny_build_is_deterministic(tiny, tmp_path):
    from pathlib import Path

    from safetensors.torch import load_file

    from napari_diffslva.engine.tiny import build_tiny_models

    sd_dir, _ = build_tiny_models(tmp_path)
    rebuilt = load_file(next((sd_dir / "unet").glob("*.safetensors")))
    original = load_file(next((Path(tiny.model) / "unet").glob("*.safetensors")))
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[k], original[k]) for k in rebuilt)


def test_missing_model_offline_fails_fast():
    from napari_diffslva.engine.models import load_models

    settings = EngineSettings(model="nobody/no-such-model", offline=True, device="cpu")
    started = time.perf_counter()
    with pytest.raises(WeightsError, match="not found locally"):
        load_models(settings)
    assert time.perf_counter() - started < 2.0


def test_missing_local_folder_is_a_weights_error(tiny, tmp_path):
    from napari_diffslva.engine.models import load_models

    with pytest.raises(WeightsError, match="not found"):
        load_models(tiny.replace(controlnet=str(tmp_path / "no-such-folder")))


def test_unknown_settings_key_is_rejected_by_name():
    data = EngineSettings().to_dict()
    data["guidence"] = 7.5
    with pytest.raises(SettingsError, match="guidence"):
        EngineSettings.from_dict(data)


def test_settings_round_trip_through_json():
    settings = EngineSettings(anchor=3, cross_frame_layers=("up_blocks.3",), seed=7)
    again = EngineSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again == settings
    assert "offline" not in settings.result_dict()


@pytest.mark.parametrize(
    "bad",
    [
        {"strength": 0.0},
        {"strength": 1.5},
        {"steps": 0},
        {"stage2_range": (0.8, 0.5)},
        {"adain_range": (0.5, 1.2)},
        {"cross_frame_layers": "down"},
        {"device": "tpu"},
        {"short_side": 500},
    ],
)
def test_settings_validation(bad):
    with pytest.raises(SettingsError, match=next(iter(bad))):
        EngineSettings(**bad)


def test_device_auto_is_cpu_here():
    from napari_diffslva.engine.models import resolve_device

    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):  # accepted by the settings, not present here
        with pytest.raises(SettingsError, match="no CUDA GPU visible"):
            resolve_device(name)
    for name in ("gpu", "cpu:0", "cuda:x"):
        with pytest.raises(SettingsError, match="cuda:N"):
            resolve_device(name)


def test_vae_setting_loads_that_vae_for_encode_and_decode(tiny, tmp_path):
    """``vae``: a VAE folder (or hub id) replaces the model's own, for encoding and
    decoding; null keeps the model's own. Here a copy of the tiny VAE with its decoder
    output doubled: the decoded images change, the encoding does not."""
    from diffusers import AutoencoderKL

    from napari_diffslva.engine.models import load_models

    vae = AutoencoderKL.from_pretrained(tiny.model, subfolder="vae")
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(2)
        vae.decoder.conv_out.bias.mul_(2)
    vae.save_pretrained(tmp_path / "vae")
    own = load_models(tiny)
    other = load_models(tiny.replace(vae=str(tmp_path / "vae")))
    assert other.unet is not own.unet  # another cache entry
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z_own, z_other = own.encode_image(image), other.encode_image(image)
        torch.testing.assert_close(z_own, z_other)
        torch.testing.assert_close(other.decode_latent(z_own), 2 * own.decode_latent(z_own))
    with pytest.raises(WeightsError, match="VAE"):
        load_models(tiny.replace(vae=str(tmp_path / "no-vae")))


def test_default_vae_is_rerenders_fine_tune_and_prompt_gets_the_added_words():
    settings = EngineSettings()
    assert settings.vae == "stabilityai/sd-vae-ft-mse"
    assert settings.full_prompt == f"{settings.prompt}, best quality, extremely detailed"
    assert settings.replace(added_prompt="").full_prompt == settings.prompt
    assert settings.stage2_noise == "fresh" and settings.smooth_boundary


def test_cross_frame_attention_runs_through_sdpa(tiny, monkeypatch):
    """Our cross-frame processor computes attention with torch's
    scaled_dot_product_attention (flash / memory-efficient kernels on GPUs)."""
    import torch.nn.functional as F

    from napari_diffslva.engine.attention import CrossFrameController, install_cross_frame
    from napari_diffslva.engine.models import load_models

    models = load_models(tiny)
    calls = []
    real = F.scaled_dot_product_attention

    def counting(q, k, v, **kwargs):
        calls.append((q.shape[-2], k.shape[-2]))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    controller = CrossFrameController()
    chosen = install_cross_frame(models.unet, "up", controller)
    try:
        sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        emb = torch.randn(2, 77, models.unet.config.cross_attention_dim)
        controller.recording = {}
        with torch.no_grad():
            models.unet(sample, 500, encoder_hidden_states=emb)
        controller.anchor = controller.previous = controller.recording
        controller.recording, controller.reading, calls[:] = None, True, []
        with torch.no_grad():
            models.unet(sample, 500, encoder_hidden_states=emb)
    finally:
        install_cross_frame(models.unet, None, controller)
    cross = [(q, k) for q, k in calls if k == 2 * q]  # keys over [anchor; previous]
    assert len(cross) == len(chosen)


def test_compile_wraps_unet_and_controlnet(tiny):
    from napari_diffslva.engine.models import load_models

    models = load_models(tiny.replace(compile=True))
    assert type(models.unet).__name__ == type(models.controlnet).__name__ == "OptimizedModule"
    assert models.unet.attn_processors  # the processors are reachable through the wrapper


@pytest.mark.slow
def test_compiled_models_give_the_same_frames(tiny, real_clip):
    """The cross-frame processor under torch.compile (TorchDynamo, the eager backend: the
    inductor backend needs minutes per graph on this CPU): its cache lookup stays out of
    the graph, the frames are bit-identical to uncompiled models."""
    import dataclasses

    import numpy as np

    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.sampler import FrameRefs, FrameSampler
    from napari_diffslva.prepare.flow import pair_flow
    from napari_diffslva.video import read_frames

    settings = tiny.replace(steps=4)
    models = load_models(settings)
    frames = [f[:64, :64].copy() for f in read_frames(real_clip("sl_soup.mp4"), 0, 2)]
    control = np.zeros((64, 64), np.float32)

    def second_frame(m):
        with FrameSampler(m, settings, (64, 64)) as sampler:
            guide = sampler.translate_anchor(frames[0], control)
            pair = pair_flow(frames[1], frames[0])
            return sampler.translate_frame(
                frames[1], control, guide, FrameRefs(pair, pair, guide.rgb)
            )

    compiled = dataclasses.replace(
        models,
        unet=torch.compile(models.unet, backend="eager"),
        controlnet=torch.compile(models.controlnet, backend="eager"),
    )
    assert np.array_equal(second_frame(models), second_frame(compiled))


def test_missing_default_vae_falls_back_with_a_warning(tiny):
    """As Rerender-A-Video: without the ft-mse VAE on this computer (offline here) the
    model's own VAE is used and a warning says so; the run key records it."""
    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.settings import DEFAULT_VAE

    settings = tiny.replace(vae=DEFAULT_VAE)
    with pytest.warns(UserWarning, match="own VAE"):
        models = load_models(settings)
    assert models.vae_source is None
    assert models.vae.config.scaling_factor == 1.0  # the tiny model's own box-filter VAE


def test_dtype_and_offload_switches(tiny):
    """fp16 / bf16 on a GPU (auto: fp16), fp32 only on the CPU; CPU offload needs a GPU:
    both refused here, naming the setting."""
    from napari_diffslva.engine.models import load_models, resolve_dtype

    gpu = torch.device("cuda")
    assert resolve_dtype("auto", gpu) == torch.float16
    assert resolve_dtype("bf16", gpu) == torch.bfloat16
    assert resolve_dtype("fp16", gpu) == torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(SettingsError, match="dtype='bf16'"):
        resolve_dtype("bf16", torch.device("cpu"))
    with pytest.raises(SettingsError, match="cpu_offload"):
        load_models(tiny.replace(cpu_offload=True))
