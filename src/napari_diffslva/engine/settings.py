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
from ..options import check, option

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

    prompt: str = option(DEFAULT_PROMPT, "who the signer becomes", kind="str", stage="engine")
    negative_prompt: str = option(
        DEFAULT_NEGATIVE_PROMPT, "what the image must not show", kind="str", stage="engine"
    )
    steps: int = option(20, "DDIM steps of the whole schedule", kind="int", stage="engine", low=1)
    strength: float = option(
        0.75,
        "SDEdit: share of the schedule that is denoised",
        kind="float",
        stage="engine",
        low=0.0,
        low_open=True,
        high=1.0,
    )
    guidance: float = option(
        7.5, "classifier-free guidance scale", kind="float", stage="engine", low=0.0
    )
    control_scale: float = option(1.0, "ControlNet strength", kind="float", stage="engine", low=0.0)
    seed: int = option(
        0, "random seed (the same noise for every frame)", kind="int", stage="engine"
    )
    anchor: int | None = option(
        None,
        "anchor frame; null: the tracked face frame nearest the middle",
        kind="int",
        stage="prepare",
        low=0,
        nullable=True,
    )
    short_side: int = option(
        512, "working short side in pixels, a multiple of 64", kind="int", stage="prepare", low=64
    )
    cross_frame_attention: bool = option(
        True,
        "cross-frame attention to the anchor and the previous frame (off: ablation)",
        kind="bool",
        stage="engine",
    )
    cross_frame_layers: str | tuple[str, ...] = option(
        "up",
        "self-attention layers that attend across frames: a preset or UNet layer-name prefixes",
        kind="prefixes",
        stage="engine",
        choices=LAYER_PRESETS,
        cli=False,
    )
    fusion: bool = option(
        True, "optical-flow guided fusion, both stages (off: ablation)", kind="bool", stage="engine"
    )
    stage1_range: tuple[float, float] = option(
        (0.0, 0.1),
        "schedule fractions of stage-1 (shape-aware) fusion",
        kind="fractions",
        stage="engine",
        cli=False,
    )
    stage2_range: tuple[float, float] = option(
        (0.5, 0.8),
        "schedule fractions of stage-2 (pixel-aware) fusion",
        kind="fractions",
        stage="engine",
        cli=False,
    )
    stage2_weight: float = option(
        0.5,
        "weight of the stage-2 fusion reference",
        kind="float",
        stage="engine",
        low=0.0,
        high=1.0,
        cli=False,
    )
    stage2_noise: str = option(
        "model",
        "noise of the fusion reference: the model's own "
        "estimate (model) or fresh noise as in Rerender-A-Video (fresh)",
        kind="str",
        stage="engine",
        choices=STAGE2_NOISES,
    )
    fidelity_threshold: float = option(
        0.25,
        "fidelity-oriented encoding: reconstruction error above which a pixel gets no compensation",
        kind="float",
        stage="engine",
        low=0.0,
        low_open=True,
        cli=False,
    )
    adain: bool = option(
        True,
        "AdaIN colour correction toward the anchor (off: ablation)",
        kind="bool",
        stage="engine",
    )
    adain_range: tuple[float, float] = option(
        (0.8, 1.0), "schedule fractions of AdaIN", kind="fractions", stage="engine", cli=False
    )
    device: str = option(
        "auto",
        "where the models run",
        kind="str",
        stage="run",
        choices=DEVICES,
        prefixes_ok=("cuda:",),
    )
    dtype: str = option(
        "auto",
        "number format of the models (auto: fp16 on CUDA, else fp32)",
        kind="str",
        stage="run",
        choices=DTYPES,
    )
    model: str = option(
        DEFAULT_MODEL, "Stable Diffusion 1.5 hub id or local folder", kind="str", stage="engine"
    )
    controlnet: str = option(
        DEFAULT_CONTROLNET, "ControlNet hub id or local folder", kind="str", stage="engine"
    )
    offline: bool = option(
        False,
        "never download; fail fast when a model is not on this computer",
        kind="bool",
        stage="run",
    )
    cpu_offload: bool = option(
        False, "keep idle models in CPU memory (GPUs with little memory)", kind="bool", stage="run"
    )

    def __post_init__(self) -> None:
        check(self)
        if int(self.steps * (1 - self.strength)) >= self.steps:
            raise SettingsError(
                f"setting strength={self.strength!r}: too low, no denoising "
                "step is left; raise it or add steps"
            )
        if self.short_side % 64:
            raise SettingsError(f"setting short_side={self.short_side!r}: use a multiple of 64")
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
