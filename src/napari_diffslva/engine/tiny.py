"""Tiny random-weight SD1.5 + ControlNet of the real architecture, for tests and benches.

No weights can be downloaded on our machines, so the engine is tested on models built
from configs: the same classes and folder layout as the real ones, small enough to build
in a fraction of a second. The VAE has four blocks so that, as in Stable Diffusion, one
latent pixel covers 8x8 image pixels (flow and masks are scaled exactly as for the real
model). Weights come from a fixed seed, so two builds are identical. The folders are
loaded back through :func:`napari_diffslva.engine.models.load_models`, offline.

The VAE alone is not random: a random VAE is no autoencoder (``D(E(x))`` has nothing to do
with ``x``), and then SDEdit and pixel-aware fusion, which both live on that round trip,
cannot be tested. Its weights are set by hand so that ``E`` is an 8x8 box filter (RGB into
latent channels 0-2) and ``D`` nearest upsampling: ``D(E(x))`` is ``x`` at 8x8-block
resolution, exactly, through the real AutoencoderKL architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import EngineSettings

TINY_SEED = 0


def _byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet (256 symbols, then the same with ``</w>``) plus the two
    special tokens: 514 entries, enough to tokenize any text without merges."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    }
    chars, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:  # unprintable bytes map past 255, as in CLIP's table
            chars.append(chr(256 + shifted))
            shifted += 1
    symbols = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}


_CARRIER = 100.0  # constant channels that pin GroupNorm's statistics (A^2 fits fp16)
_OFFSET = 20.0  # shift into SiLU's linear part


def _spread(conv, inputs: int) -> None:
    """``inputs`` channels -> groups ``[c, -c, A, -A]`` (3 signal groups, 1 constant)."""
    conv.weight.zero_()
    conv.bias.zero_()
    centre = conv.kernel_size[0] // 2
    for g in range(conv.out_channels // 4):
        if g < min(3, inputs):
            conv.weight[4 * g, g, centre, centre] = 1.0
            conv.weight[4 * g + 1, g, centre, centre] = -1.0
        conv.bias[4 * g + 2], conv.bias[4 * g + 3] = _CARRIER, -_CARRIER


def _gather(conv, outputs: int) -> None:
    """Signals back from the normalised, offset groups (the inverse of :func:`_spread`)."""
    conv.weight.zero_()
    conv.bias.zero_()
    centre = conv.kernel_size[0] // 2
    for g in range(min(3, outputs)):
        conv.weight[g, 4 * g, centre, centre] = 1.0
        conv.bias[g] = -_OFFSET


def _average_taps(conv, taps: list[tuple[int, int]]) -> None:
    """Each output channel = the mean of its own input channel at ``taps``."""
    conv.weight.zero_()
    conv.bias.zero_()
    for c in range(conv.out_channels):
        for y, x in taps:
            conv.weight[c, c, y, x] = 1.0 / len(taps)


def _identity_blocks(vae) -> None:
    """Residual branches and attention outputs zeroed (each block is its identity path);
    downsamplers average 2x2, upsampler convs copy."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    for module in vae.modules():
        if isinstance(module, ResnetBlock2D):
            module.conv2.weight.zero_()
            module.conv2.bias.zero_()
        elif isinstance(module, Attention):
            module.to_out[0].weight.zero_()
            module.to_out[0].bias.zero_()
        elif isinstance(module, Downsample2D):
            _average_taps(module.conv, [(0, 0), (0, 1), (1, 0), (1, 1)])  # after a (0,1,0,1) pad
        elif isinstance(module, Upsample2D):
            _average_taps(module.conv, [(1, 1)])


def _make_box_filter_autoencoder(vae) -> None:
    """Set the weights of a 4-block, 16-channel, 4-group AutoencoderKL so that the encoder
    averages 8x8 blocks and the decoder repeats them.

    Every channel group holds ``[c, -c, A, -A]`` (signal, its mirror, two constants): the
    group mean is exactly 0 and its std ``sqrt((mean c^2 + A^2) / 2)`` is ``A / sqrt(2)``
    to 1e-5, so GroupNorm with gain ``A / sqrt(2)`` passes ``c`` through; an offset puts it
    in the linear part of SiLU. Residual branches and attention outputs are zeroed (then
    each block is its identity path), downsamplers average 2x2, upsampler convs copy.
    """
    import torch

    with torch.no_grad():
        _identity_blocks(vae)
        for coder in (vae.encoder, vae.decoder):
            coder.conv_norm_out.weight.fill_(_CARRIER / 2**0.5)
            coder.conv_norm_out.bias.fill_(_OFFSET)
        _spread(vae.encoder.conv_in, 3)
        _gather(vae.encoder.conv_out, vae.config.latent_channels)
        vae.encoder.conv_out.bias[vae.config.latent_channels :] = -20.0  # log-variance: ~0
        _spread(vae.decoder.conv_in, vae.config.latent_channels)
        _gather(vae.decoder.conv_out, 3)
        for conv in (vae.quant_conv, vae.post_quant_conv):
            _average_taps(conv, [(0, 0)])


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def _tiny_vae():
    """Four blocks, so latents are 1/8 of the image as in Stable Diffusion; box filters."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=1.0,
    )
    _make_box_filter_autoencoder(vae)
    return vae


def _tiny_text_encoder(vocab: dict[str, int]):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )


def build_tiny_models(folder: str | Path) -> tuple[Path, Path]:
    """Build and save a tiny SD1.5 pipeline folder and a ControlNet folder under ``folder``.

    Returns ``(sd_dir, controlnet_dir)``, both in diffusers layout (``model_index.json``,
    ``unet/``, ``vae/`` ...). Existing folders are rebuilt (the build is deterministic).
    """
    import torch
    from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    folder = Path(folder)
    sd_dir, controlnet_dir = folder / "sd", folder / "controlnet"
    vocab = _byte_level_vocab()
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        unet, vae, text_encoder = _tiny_unet(), _tiny_vae(), _tiny_text_encoder(vocab)
        factor_log2 = len(vae.config.block_out_channels) - 1
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=(8, 16, 16, 32)[: factor_log2 + 1]
        )
    # transformers 5: pass vocab/merges directly (vocab_file= gives garbage ids).
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=[], model_max_length=77, pad_token="<|endoftext|>"
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(sd_dir)
    controlnet.save_pretrained(controlnet_dir)
    return sd_dir, controlnet_dir


def tiny_settings(folder: str | Path, **overrides: object) -> EngineSettings:
    """Engine settings that use the tiny models under ``folder`` (built when missing),
    offline on the CPU; ``overrides`` change any other setting."""
    from .settings import EngineSettings

    folder = Path(folder)
    sd_dir, controlnet_dir = folder / "sd", folder / "controlnet"
    built = (sd_dir / "model_index.json").is_file() and (controlnet_dir / "config.json").is_file()
    if not built:
        sd_dir, controlnet_dir = build_tiny_models(folder)
    base = {
        "model": str(sd_dir),
        "controlnet": str(controlnet_dir),
        "offline": True,
        "device": "cpu",
        "short_side": 64,
        "vae": None,  # the tiny model's own (box-filter) VAE
    }
    return EngineSettings.from_dict({**base, **overrides})
