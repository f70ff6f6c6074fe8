"""Default model ids, importable without torch (used by ``info`` and the widgets)."""

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNET = "lllyasviel/sd-controlnet-hed"
