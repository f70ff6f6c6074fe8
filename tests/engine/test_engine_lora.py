"""LoRA: a tiny random LoRA saved in diffusers' layout, fused by the real loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import small_clip
from napari_diffslva.errors import SettingsError, WeightsError

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    from napari_diffslva.engine.tiny import tiny_settings

    return tiny_settings(tiny_models_dir, steps=4)


@pytest.fixture(scope="module")
def lora_file(tiny, tmp_path_factory) -> Path:
    """A rank-4 LoRA on every attention projection of the tiny UNet, random A and B."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny.model, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet)
    )
    return folder / "pytorch_lora_weights.safetensors"


def test_lora_text_form():
    from napari_diffslva.engine.lora import parse_lora

    assert parse_lora("lcm.safetensors") == ("lcm.safetensors", 1.0)
    assert parse_lora("some/hub-id:0.5") == ("some/hub-id", 0.5)
    assert parse_lora(r"C:\loras\tcd.safetensors:0.8") == (r"C:\loras\tcd.safetensors", 0.8)
    assert parse_lora(r"C:\loras\tcd.safetensors") == (r"C:\loras\tcd.safetensors", 1.0)
    with pytest.raises(SettingsError, match="PATH"):
        parse_lora(":0.5")


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_lora_is_fused_into_the_unet_weights(tiny, lora_file, scale):
    """Every projection's weight becomes ``W + scale * B @ A`` (alpha / rank = 1); no
    adapter layer stays behind, and the models are cached under the LoRA."""
    from safetensors.torch import load_file

    from napari_diffslva.engine.models import load_models

    base = load_models(tiny)
    fused = load_models(tiny.replace(lora=f"{lora_file}:{scale}"))
    assert fused is not base and fused.unet is not base.unet
    assert not any("lora" in name for name, _ in fused.unet.named_modules())
    lora = load_file(lora_file)
    checked = 0
    for key, a in lora.items():
        if "lora_A" not in key:
            continue
        b = lora[key.replace("lora_A", "lora_B")]
        module = key.removeprefix("unet.").removesuffix(".lora_A.weight")
        before = base.unet.get_submodule(module).weight
        after = fused.unet.get_submodule(module).weight
        torch.testing.assert_close(after, before + scale * b @ a, rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked == 14 * 4  # the tiny UNet's 14 attention layers x 4 projections


def test_lora_folder_and_missing_file(tiny, lora_file, tmp_path):
    from napari_diffslva.engine.models import load_models

    by_folder = load_models(tiny.replace(lora=str(lora_file.parent)))
    by_file = load_models(tiny.replace(lora=str(lora_file)))
    name = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert torch.equal(
        by_folder.unet.get_submodule(name).weight, by_file.unet.get_submodule(name).weight
    )
    with pytest.raises(WeightsError, match="LoRA"):
        load_models(tiny.replace(lora=str(tmp_path / "none.safetensors")))


def test_few_step_preset_with_a_lora_counts_its_evaluations(tiny, lora_file, real_clip):
    """The LCM preset (6 steps, no CFG) on a LoRA'd tiny model: 5 computed steps at
    strength 0.75, one evaluation each; with fusion the second pass adds the steps from
    the first fused one (4 and 5): 7 per frame, under the issue's 16."""

    from napari_diffslva.engine.models import load_models
    from napari_diffslva.engine.settings import EngineSettings
    from napari_diffslva.engine.translate import InMemoryInputs, translate_clip
    from napari_diffslva.progress import run_to_end

    lcm = EngineSettings.from_dict({"preset": "lcm"})
    settings = tiny.replace(
        preset="lcm", sampler=lcm.sampler, steps=lcm.steps, guidance=lcm.guidance
    ).replace(lora=str(lora_file), anchor=0)
    models = load_models(settings)
    stats = run_to_end(
        translate_clip(
            InMemoryInputs(*small_clip(real_clip, "sl_soup.mp4", 0, 3)), models, settings
        )
    )
    start, fused = settings.start_step, min(settings.steps_in("stage2_range"))
    assert (start, fused) == (1, 4)
    per_frame = (settings.steps - start) + (settings.steps - fused)
    assert per_frame == 7
    assert stats.unet_evals_per_frame == (5 + 2 * per_frame) / 3
