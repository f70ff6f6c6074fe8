"""Settings of the diffusion engine, with the method's published defaults.

One frozen dataclass, validated on construction, serialised to plain JSON for the run
folder. ``from_dict`` refuses keys it does not know: a misspelled key in a config file
must be an error, not a silently ignored wish (a classic trap of research configs).
Step ranges are fractions of the schedule, read as Rerender-A-Video reads them: step ``i``
of ``steps`` is in stage 1 or AdaIN's ``(lo, hi)`` when ``lo * steps <= i <= hi * steps``, and
stage-2 fusion blends *into* step ``i`` when ``lo * steps < i < hi * steps`` (20 steps,
(0.5, 0.8): into steps 11-15). A window that catches no step of a short schedule (AdaIN's
(0.8, 1.0) at 4 steps) takes the one step nearest to it, so the fusion windows keep working
at the 4-8 steps of few-step samplers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import SettingsError
from ..options import check, option

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNET = "lllyasviel/sd-controlnet-hed"
DEFAULT_PROMPT = "a woman in CG style, brown hair, is making gestures"
# Rerender-A-Video's "added prompt", appended to the user's after a comma.
DEFAULT_ADDED_PROMPT = "best quality, extremely detailed"
# The VAE fine-tune Rerender-A-Video loads by default (and warns without).
DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"
DEFAULT_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality"
)
LAYER_PRESETS = ("up", "up-loose")
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "fp32", "fp16", "bf16")
STAGE2_NOISES = ("fresh", "model")
STAGE2_REFERENCES = ("final", "window-end")  # what fills a stage-2 reference's holes
SAMPLERS = ("ddim", "ddim-trailing", "lcm", "tcd")
# Few-step LoRA presets: the sampler, steps and guidance their authors run SD1.5 with.
PRESETS: dict[str, dict[str, Any]] = {
    "lcm": {"sampler": "lcm", "steps": 6, "guidance": 1.0},  # LCM-LoRA SD1.5: 4-8 steps, no CFG
    "tcd": {"sampler": "tcd", "steps": 6, "guidance": 1.0},  # TCD-SD15 LoRA, gamma 0.3
    "hyper": {"sampler": "ddim-trailing", "steps": 8, "guidance": 1.0},  # Hyper-SD15 8-step
}
RANGE_FIELDS = ("stage1_range", "stage2_range", "adain_range")
# Settings that change how a run executes but not one bit of its frames on a given device.
EXECUTION_ONLY = ("offline", "cpu_offload", "compile", "state_every")


@dataclass(frozen=True)
class EngineSettings:
    """Everything that decides a translated frame (plus where and how to run it)."""

    prompt: str = option(DEFAULT_PROMPT, "who the signer becomes", kind="str", stage="engine")
    added_prompt: str = option(
        DEFAULT_ADDED_PROMPT,
        "quality words appended to the prompt after a comma, as Rerender-A-Video does "
        "(empty: none)",
        kind="str",
        stage="engine",
    )
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
        7.5,
        "classifier-free guidance scale (1 or less: no CFG, half the evaluations)",
        kind="float",
        stage="engine",
        low=0.0,
    )
    sampler: str = option(
        "ddim",
        "denoising sampler: ddim (Rerender-A-Video), ddim-trailing (Hyper-SD), lcm, tcd",
        kind="str",
        stage="engine",
        choices=SAMPLERS,
    )
    preset: str | None = option(
        None,
        "few-step LoRA preset: sets sampler, steps and guidance unless they are given "
        "(lcm: 6 steps, tcd: 6, hyper: 8; all without CFG); use with --lora",
        kind="str",
        stage="engine",
        choices=tuple(PRESETS),
        nullable=True,
    )
    lora: str | None = option(
        None,
        "LoRA weights fused into the UNet: PATH[:scale] (file, folder or hub id; "
        "needs the peft package)",
        kind="str",
        stage="engine",
        nullable=True,
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
    anchor_span: int | None = option(
        180,
        "longest run of frames one anchor serves: longer clips get an anchor every span, "
        "all styled by the first (null: one anchor)",
        kind="int",
        stage="engine",
        low=2,
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
        "fresh",
        "noise of the fusion reference: fresh noise with a variance-keeping rescale as in "
        "Rerender-A-Video (fresh) or the model's own estimate (model)",
        kind="str",
        stage="engine",
        choices=STAGE2_NOISES,
    )
    stage2_reference: str = option(
        "final",
        "what the stage-2 reference shows where the anchor and the previous frame are both "
        "occluded: the first pass's finished frame (final, Rerender-A-Video) or its "
        "clean-image estimate at the last fused step (window-end: the first pass stops "
        "there; 40 instead of 48 evaluations per frame at the defaults)",
        kind="str",
        stage="engine",
        choices=STAGE2_REFERENCES,
    )
    smooth_boundary: bool = option(
        True,
        "fresh stage-2 noise: no variance-keeping rescale on the fusion mask's boundary "
        "(Rerender-A-Video's smooth_boundary)",
        kind="bool",
        stage="engine",
        cli=False,
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
    vae: str | None = option(
        DEFAULT_VAE,
        "VAE hub id or folder for encode and decode (null: the model's own; Rerender-A-Video "
        "warns that quality degrades without the ft-mse fine-tune)",
        kind="str",
        stage="engine",
        nullable=True,
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
    compile: bool = option(
        False,
        "torch.compile UNet and ControlNet (GPUs: faster after a slow first frame)",
        kind="bool",
        stage="run",
    )
    state_every: int = option(
        10,
        "resume checkpoint: keep the attention state of every n-th frame (0: none; a resume "
        "recomputes at most n-1 frames, or back to the anchor)",
        kind="int",
        stage="run",
        low=0,
        cli=False,
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
        if self.preset is not None and self.sampler != PRESETS[self.preset]["sampler"]:
            raise SettingsError(
                f"setting preset={self.preset!r} runs sampler "
                f"{PRESETS[self.preset]['sampler']!r}, not {self.sampler!r}; drop one of them"
            )
        if self.lora is not None:
            from .lora import parse_lora

            parse_lora(self.lora)

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
        preset = data.get("preset")
        if preset in PRESETS:  # the preset fills what was not given
            data = {**PRESETS[preset], **data}
        try:
            return cls(**data)
        except TypeError as exc:  # wrong value types, e.g. a string for a range
            raise SettingsError(f"engine settings: {exc}") from exc

    def replace(self, **changes: Any) -> EngineSettings:
        """A copy with some fields changed (validated, unknown names rejected)."""
        return EngineSettings.from_dict({**self.to_dict(), **changes})

    def steps_in(self, name: str) -> frozenset[int]:
        """The schedule steps of range setting ``name`` (see the module docstring)."""
        return steps_in(getattr(self, name), self.steps, open_=name == "stage2_range")

    @property
    def full_prompt(self) -> str:
        """The prompt the text encoder reads: the user's plus the added prompt."""
        return f"{self.prompt}, {self.added_prompt}" if self.added_prompt else self.prompt

    @property
    def uses_cfg(self) -> bool:
        """Classifier-free guidance runs (two UNet evaluations per step) above 1."""
        return self.guidance > 1.0

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


def steps_in(window: tuple[float, float], steps: int, *, open_: bool = False) -> frozenset[int]:
    """Steps ``i`` of a ``steps``-step schedule inside the fractions ``window``: closed
    (``lo * steps <= i <= hi * steps``) or open at both ends; a non-empty window that
    catches none takes the step whose fraction ``i / steps`` is nearest to it."""
    lo, hi = window[0] * steps, window[1] * steps
    inside = [i for i in range(steps) if (lo < i < hi if open_ else lo <= i <= hi)]
    if inside or window[0] >= window[1]:
        return frozenset(inside)
    return frozenset({min(range(steps), key=lambda i: (max(lo - i, i - hi), -i))})
