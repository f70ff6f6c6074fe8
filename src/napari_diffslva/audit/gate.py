"""The identity gate: the new anchor face must be somebody else before the clip is made.

The anchor's generated face is the identity source of the whole clip (attention, fusion
and the face module all copy it), so it is checked first: the dlib distance between the
original anchor face and the new one (:mod:`.identity`). Within the same-person threshold
the anchor is translated again with the next seed, up to a configured number of tries;
if every try is still the signer the run stops with :class:`AnchorLeakError`, which says
what to change. A new anchor in which no face is found passes, and the result says so:
nothing of the signer can show in a face that is not there, unless a face fitted where
the signer's was is still recognisable, which counts as a leak.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import IdentityLeakError
from ..prepare.faces import FaceBox
from ..progress import Progress, ProgressGenerator
from .identity import SAME_PERSON_THRESHOLD, embedding_distance, face_in_place

STAGE = "identity gate"  # the stage name of its progress events
PASSED, NO_FACE, LEAK = "passed", "no face found", "leak"
NO_ORIGINAL_FACE, OFF = "no face in the original anchor", "off"


@dataclass(frozen=True)
class GateTry:
    """One translation of the anchor and what the identity model made of it."""

    seed: int
    distance: float  # to the original anchor face (of the fitted face when none was found)
    face_found: bool  # a detector found a face near the original's
    verdict: str  # PASSED, NO_FACE or LEAK


@dataclass
class GateResult:
    """What the gate did: the tries, and the seed the clip is translated with."""

    verdict: str  # PASSED, NO_FACE, LEAK, NO_ORIGINAL_FACE or OFF
    seed: int | None  # the seed of the clip (None when every try leaked)
    anchor: int
    tries: list[GateTry] = field(default_factory=list)
    threshold: float = SAME_PERSON_THRESHOLD

    @property
    def seeds(self) -> list[int]:
        return [t.seed for t in self.tries]

    @property
    def distances(self) -> list[float]:
        return [t.distance for t in self.tries]

    def message(self) -> str:
        """One line for a person: what was checked and what came of it."""
        if self.verdict == OFF:
            return "identity gate off: the anchor face was not checked"
        if self.verdict == NO_ORIGINAL_FACE:
            return f"identity gate: no tracked face in anchor frame {self.anchor}, nothing to check"
        tried = ", ".join(f"seed {t.seed}: {t.distance:.2f} ({t.verdict})" for t in self.tries)
        head = f"identity gate on anchor frame {self.anchor} (same person below {self.threshold:g})"
        if self.verdict == NO_FACE:
            return f"{head}: no face found in the new anchor, the run goes on; {tried}"
        return f"{head}: {tried}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["message"] = self.message()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateResult:
        tries = [GateTry(**t) for t in d.get("tries", [])]
        fields = {k: d[k] for k in ("verdict", "seed", "anchor", "threshold")}
        return cls(tries=tries, **fields)


class AnchorLeakError(IdentityLeakError):
    """Every seed tried gave the signer's face back on the anchor."""

    def __init__(self, result: GateResult, advice: str) -> None:
        self.result = result
        distances = ", ".join(f"{d:.2f}" for d in result.distances)
        super().__init__(
            f"the new face on anchor frame {result.anchor} is still the signer with every "
            f"seed tried ({', '.join(map(str, result.seeds))}: dlib distance {distances}, "
            f"same person below {result.threshold:g}); {advice}"
        )


def _verdict(distance: float, found: bool, threshold: float) -> str:
    if distance < threshold:
        return LEAK
    return PASSED if found else NO_FACE


def anchor_gate(
    original: np.ndarray,
    box: FaceBox | None,
    landmarks: np.ndarray | None,
    translate: Callable[[int], np.ndarray],
    seeds: Sequence[int],
    *,
    anchor: int,
    advice: str,
) -> ProgressGenerator[GateResult]:
    """Translate the anchor with each of ``seeds`` in turn (``translate(seed)`` -> RGB at
    the original's size) until its face is not the original's (``original`` frame, face
    ``box`` and ``landmarks``); yields ``Progress(STAGE, ...)`` per try.

    Returns the :class:`GateResult` (no try at all when ``box`` is None: no face to
    protect). Raises :class:`AnchorLeakError`, ending with ``advice``, when all leak.
    """
    if not seeds:
        raise ValueError("the identity gate needs at least one seed to try")
    if box is None or landmarks is None:
        return GateResult(NO_ORIGINAL_FACE, int(seeds[0]), anchor)
    from .identity import face_embedding

    reference = face_embedding(original, box, landmarks)
    result = GateResult(LEAK, None, anchor)
    for k, seed in enumerate(seeds):
        start = time.perf_counter()
        face = face_in_place(translate(seed), box)
        distance = embedding_distance(face.embedding, reference)
        verdict = _verdict(distance, face.detected, result.threshold)
        result.tries.append(GateTry(int(seed), distance, face.detected, verdict))
        yield Progress(STAGE, k + 1, len(seeds), time.perf_counter() - start)
        if verdict != LEAK:
            result.verdict, result.seed = verdict, int(seed)
            return result
    raise AnchorLeakError(result, advice)
