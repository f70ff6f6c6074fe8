"""Cross-frame attention: a UNet self-attention processor that looks at other frames.

In the chosen self-attention layers (``...attn1``) of the UNet, frame ``i`` keeps its own
queries but takes keys and values from the anchor frame's and the previous frame's hidden
states at the same denoising step: ``Q = W_Q v_i``, ``K = W_K [v_a; v_prev]``,
``V = W_V [v_a; v_prev]``. Appearance then flows from the anchor (global style) and the
previous output (local continuity) into every frame.

The states are cached *before* the K/V projections, once per (step, layer), in the model's
dtype. With classifier-free guidance the batch holds ``[uncond, cond]`` and the cache keeps
both halves, so each half reads its own counterpart. A missing cache entry falls back to
the frame's own states (attending to ``[v_i; v_i]`` is exactly stock self-attention).

The :class:`CrossFrameController` holds the caches and the current step; the sampler sets
the step and the mode. Modes: record into a fresh cache (anchor pass, or the previous-frame
refresh of a second pass), read (attend to anchor + previous), both, or neither (stock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import SettingsError

if TYPE_CHECKING:
    import torch

StateCache = dict[tuple[int, str], "torch.Tensor"]  # (step, layer name) -> states (B, N, C)


@dataclass
class CrossFrameController:
    """Caches and switches shared by all cross-frame processors of one UNet."""

    anchor: StateCache = field(default_factory=dict)
    previous: StateCache = field(default_factory=dict)
    recording: StateCache | None = None  # where this call's states go; None: do not store
    reading: bool = False  # attend to anchor + previous instead of self
    step: int = -1

    def __post_init__(self) -> None:
        import torch

        # The cache lookup keys on the step: kept out of torch.compile's graphs, which would
        # otherwise be recompiled for every step (the rest of the processor compiles).
        self.states_for = torch.compiler.disable(self.states_for)

    def states_for(self, layer: str, own: torch.Tensor) -> torch.Tensor | None:
        """Record ``own`` if asked; return the K/V source states, or None for stock."""
        key = (self.step, layer)
        if self.recording is not None:
            self.recording[key] = own.detach()
        if not self.reading:
            return None
        import torch

        anchor = self.anchor.get(key, own)
        previous = self.previous.get(key, own)
        return torch.cat([anchor, previous], dim=1)


class CrossFrameAttnProcessor:
    """``AttnProcessor2_0`` with keys/values taken from the controller's cached frames.

    One instance per self-attention layer (it needs the layer's name as the cache key).
    """

    def __init__(self, name: str, controller: CrossFrameController) -> None:
        self.name = name
        self.controller = controller

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        import torch.nn.functional as F

        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(f"{self.name}: cross-frame attention is for self-attention only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch = hidden_states.shape[0]

        source = self.controller.states_for(self.name, hidden_states)
        if source is None:
            source = hidden_states
        query = attn.to_q(hidden_states)
        key = attn.to_k(source)
        value = attn.to_v(source)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def select_layers(unet: Any, layers: str | Iterable[str]) -> list[str]:
    """Names of the self-attention processors (``...attn1.processor``) to make cross-frame.

    ``"up"``: every self-attention layer of the decoder (9 in SD1.5: 1280/640/320 channels).
    ``"up-loose"``: the decoder layers below the widest level (SD1.5: the 6 at 640/320).
    A list: processor names starting with any of the given prefixes (e.g. ``"up_blocks.3"``).
    """
    self_attn = [n for n in unet.attn_processors if n.endswith("attn1.processor")]
    if isinstance(layers, str) and layers in ("up", "up-loose"):
        chosen = [n for n in self_attn if n.startswith("up_blocks.")]
        if layers == "up-loose":
            width = {n: _layer_width(unet, n) for n in chosen}
            widest = max(width.values(), default=0)
            chosen = [n for n in chosen if width[n] < widest]
    else:
        prefixes = [layers] if isinstance(layers, str) else list(layers)
        chosen = [n for n in self_attn if any(n.startswith(p) for p in prefixes)]
    if not chosen:
        raise SettingsError(
            f"setting cross_frame_layers={layers!r} selects no self-attention layer of this UNet"
        )
    return chosen


def _layer_width(unet: Any, processor_name: str) -> int:
    module = unet.get_submodule(processor_name.removesuffix(".processor"))
    return module.to_q.in_features


def install_cross_frame(
    unet: Any, layers: str | Iterable[str] | None, controller: CrossFrameController
) -> list[str]:
    """Set cross-frame processors on the chosen layers and stock SDPA on all others.

    ``layers=None`` restores stock attention everywhere. Returns the cross-frame layer names.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    chosen = [] if layers is None else select_layers(unet, layers)
    processors = {
        name: CrossFrameAttnProcessor(name, controller) if name in chosen else AttnProcessor2_0()
        for name in unet.attn_processors
    }
    unet.set_attn_processor(processors)
    return chosen
