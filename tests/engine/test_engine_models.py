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
    with pytest.raises(SettingsError, match="cuda"):
        resolve_device("cuda")
