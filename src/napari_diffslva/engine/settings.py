"""Settings of the diffusion engine, with the method's published defaults.

One frozen dataclass, validated on construction, serialised to plain JSON for the run
folder. ``from_dict`` refuses keys it does not know: a misspelled key in a config file
must be an error, not a silently ignored wish (a classic trap of research configs).
Step ranges are fractions of the schedule: step ``s`` of ``steps`` is inside ``(lo, hi)``
when ``lo * steps <= s < hi * steps`` (``hi = 1`` includes the last step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import SettingsError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNET = "lllyasviel/sd-controlnet-hed"
DEFAULT_PROMPT = "a woman in CG style, brown hair, is making gestures, best quality"
DEFAULT_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality"
)
LAYER_PRESETS = ("up", "up-loose")
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "fp32", "fp16", "bf16")
STAGE2_NOISES = ("model", "fresh")
RANGE_FIELDS = ("stage1_range", "stage2_range", "adain_range")
# Settings that change how a run executes but not one bit of its frames on a given device.
EXECUTION_ONLY = ("offline", "cpu_offload")


@dataclass(frozen=True)
class EngineSettings:
    """Everything that decides a translated frame (plus where and how to run it)."""

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    steps: int = 20
    strength: float = 0.75  # SDEdit: share of the schedule that is denoised
    guidance: float = 7.5
    control_scale: float = 1.0
    seed: int = 0
    anchor: int | None = None  # None: the middle frame
    short_side: int = 512
    cross_frame_attention: bool = True
    cross_frame_layers: str | tuple[str, ...] = "up"  # preset or UNet processor-name prefixes
    fusion: bool = True  # optical-flow guided fusion, both stages
    stage1_range: tuple[float, float] = (0.0, 0.1)
    stage2_range: tuple[float, float] = (0.5, 0.8)
    stage2_weight: float = 0.5
    stage2_noise: str = "model"  # noise of q(x_ref, t): the model's own estimate, or fresh
    fidelity_threshold: float = 0.25
    adain: bool = True
    adain_range: tuple[float, float] = (0.8, 1.0)
    device: str = "auto"
    dtype: str = "auto"
    model: str = DEFAULT_MODEL
    controlnet: str = DEFAULT_CONTROLNET
    offline: bool = False
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        for name in RANGE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.cross_frame_layers, list):
            object.__setattr__(self, "cross_frame_layers", tuple(self.cross_frame_layers))
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> SettingsError:
            return SettingsError(f"setting {name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.steps, int) or self.steps <= 0:
            raise bad("steps", "must be a positive integer")
        if not 0.0 < self.strength <= 1.0:
            raise bad("strength", "must be in (0, 1]")
        if int(self.steps * (1 - self.strength)) >= self.steps:
            raise bad("strength", "too low: no denoising step is left; raise it or add steps")
        if self.guidance < 0:
            raise bad("guidance", "must be >= 0")
        if self.control_scale < 0:
            raise bad("control_scale", "must be >= 0")
        if self.anchor is not None and (not isinstance(self.anchor, int) or self.anchor < 0):
            raise bad("anchor", "must be a frame index >= 0 or null for the middle frame")
        if self.short_side < 64 or self.short_side % 64:
            raise bad("short_side", "must be a multiple of 64, at least 64")
        for name in RANGE_FIELDS:
            value = getattr(self, name)
            if len(value) != 2 or not 0.0 <= value[0] <= value[1] <= 1.0:
                raise bad(name, "must be two fractions 0 <= lo <= hi <= 1")
        if not 0.0 <= self.stage2_weight <= 1.0:
            raise bad("stage2_weight", "must be in [0, 1]")
        if self.stage2_noise not in STAGE2_NOISES:
            raise bad("stage2_noise", f"use one of {STAGE2_NOISES}")
        if not self.fidelity_threshold > 0.0:
            raise bad("fidelity_threshold", "must be > 0")
        layers = self.cross_frame_layers
        if isinstance(layers, str):
            if layers not in LAYER_PRESETS:
                raise bad("cross_frame_layers", f"use one of {LAYER_PRESETS} or a list of "
                          "UNet layer-name prefixes such as 'up_blocks.3'")
        elif not layers or not all(isinstance(p, str) and p for p in layers):
            raise bad("cross_frame_layers", "a list must hold non-empty layer-name prefixes")
        if self.device not in DEVICES:
            raise bad("device", f"use one of {DEVICES}")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"use one of {DTYPES}")
        if not self.model or not self.controlnet:
            raise SettingsError("settings model and controlnet must name a hub id or a folder")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        for name in (*RANGE_FIELDS, "cross_frame_layers"):
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out

    def result_dict(self) -> dict[str, Any]:
        """The settings that decide the frames: the part that goes into a cache key."""
        out = self.to_dict()
        for name in EXECUTION_ONLY:
            out.pop(name)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineSettings:
        """Settings from a dict; unknown keys raise :class:`SettingsError` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"unknown engine setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as exc:  # wrong value types, e.g. a string for a range
            raise SettingsError(f"engine settings: {exc}") from exc

    def replace(self, **changes: Any) -> EngineSettings:
        """A copy with some fields changed (validated, unknown names rejected)."""
        return EngineSettings.from_dict({**self.to_dict(), **changes})

    def in_range(self, name: str, step: int) -> bool:
        """Is schedule step ``step`` (0-based, of ``steps``) inside range setting ``name``?"""
        lo, hi = getattr(self, name)
        if hi >= 1.0:
            return lo * self.steps <= step
        return lo * self.steps <= step < hi * self.steps

    @property
    def start_step(self) -> int:
        """First computed step of the SDEdit start (earlier steps are skipped)."""
        return int(self.steps * (1 - self.strength))

    def anchor_index(self, num_frames: int) -> int:
        """The anchor frame of a clip of ``num_frames`` frames (middle when unset)."""
        index = num_frames // 2 if self.anchor is None else self.anchor
        if not 0 <= index < num_frames:
            raise SettingsError(f"setting anchor={index}: outside the clip (0..{num_frames - 1})")
        return index
