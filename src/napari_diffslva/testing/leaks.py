"""Stand-ins for the engine that leak the signer's identity, to test what the fronts do
with a leak: the identity gate's refusal and a self-audit that finds the signer.

Patch them over :mod:`napari_diffslva.engine.translate` (``translate_anchor``,
``translate_clip``); the core looks both up there at call time.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..progress import Progress


def anchor_as(looks):
    """A ``translate_anchor`` whose new anchor is ``looks(seed, inputs, anchor_index)``."""

    def translate_anchor(inputs, models, settings, *, style_reference=None, should_stop=None):
        return looks(settings.seed, inputs, settings.anchor_index(inputs.num_frames))

    return translate_anchor


def _original(seed: int, inputs, index: int) -> np.ndarray:
    return inputs.source_frame(index)


#: A ``translate_anchor`` whose new anchor is the original frame: every seed leaks.
original_anchor = anchor_as(_original)


def pasted_face(photo: np.ndarray, photo_landmarks: np.ndarray):
    """A ``looks`` for :func:`anchor_as`: the original anchor frame with the face of
    ``photo`` (another real person) aligned onto the signer's: a new face that passes."""
    from .face_swap import aligned_face, face_part_mask

    def looks(seed: int, inputs, index: int) -> np.ndarray:
        frame, landmarks = inputs.reader[index].copy(), inputs.track.landmarks[index]
        face = face_part_mask(landmarks, frame.shape[:2], "face")
        frame[face] = aligned_face(photo, photo_landmarks, landmarks, frame.shape[:2])[face]
        return inputs.geometry.to_work(frame)

    return looks


def original_clip(inputs, models, settings, run=None, **_):
    """A ``translate_clip`` whose result is the original frames: every frame leaks."""
    from ..engine.translate import STAGE

    n = inputs.num_frames
    for i in range(n):
        run.write_frame(STAGE, i, inputs.source_frame(i))
        run.mark_done(STAGE, i, "original")
        yield Progress("translate", i + 1, n, 0.0, (i, inputs.source_frame(i)))
    return SimpleNamespace(to_dict=lambda: {"frames": n})
