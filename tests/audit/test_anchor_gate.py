"""The identity gate's decision on real faces (issue 12): the anchor's new face is the
signer (a leak: the next seed), another real person (passes), or no face (goes on)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffslva.audit.gate import (
    LEAK,
    NO_FACE,
    NO_ORIGINAL_FACE,
    PASSED,
    AnchorLeakError,
    GateResult,
    anchor_gate,
)
from napari_diffslva.errors import IdentityLeakError
from napari_diffslva.prepare.faces import detect_faces, face_landmarks, track_faces
from napari_diffslva.progress import Progress, run_to_end
from napari_diffslva.testing.face_swap import replace_face_part
from napari_diffslva.video import read_frames

ADVICE = "change the prompt or raise the strength"


@pytest.fixture(scope="module", params=["face_talking.mp4", "asl_house.gif", "sl_soup.mp4"])
def anchor(request, real_clip):
    """A real anchor frame, its face, and stand-in translations: the original itself, a
    darker copy (the same person), the face replaced by biden_1's, and noise."""
    frames = read_frames(real_clip(request.param), 0, 6)
    track = run_to_end(track_faces(frames))
    photo = read_frames(real_clip("faces/biden_1.jpg"))[0]
    box = max(detect_faces(photo), key=lambda b: b.area)
    other = replace_face_part(frames, track, "face", (photo, face_landmarks(photo, box)))
    t = 3
    noise = np.random.default_rng(0).integers(0, 256, frames[t].shape, dtype=np.uint8)
    looks = {"same": frames[t], "darker": frames[t] // 2 + 40, "other": other[t], "noise": noise}
    return frames[t], track.box(t), track.landmarks[t], looks


def _gate(anchor, by_seed: dict[int, str]):
    original, box, landmarks, looks = anchor
    calls = []

    def translate(seed: int) -> np.ndarray:
        calls.append(seed)
        return looks[by_seed[seed]]

    gen = anchor_gate(original, box, landmarks, translate, sorted(by_seed), anchor=3, advice=ADVICE)
    events = []
    result = run_to_end(gen, events.append)
    return result, calls, events


def test_a_leaking_seed_is_replaced_by_the_next(anchor):
    result, calls, events = _gate(anchor, {7: "same", 8: "darker", 9: "other", 10: "same"})
    assert calls == [7, 8, 9]  # stops at the first seed that is somebody else
    assert result.verdict == PASSED and result.seed == 9 and result.seeds == [7, 8, 9]
    assert [t.verdict for t in result.tries] == [LEAK, LEAK, PASSED]
    assert result.distances[0] < 0.05 and result.distances[1] < 0.6 < result.distances[2]
    assert [e.done for e in events] == [1, 2, 3] and all(isinstance(e, Progress) for e in events)
    assert "seed 9" in result.message()
    assert GateResult.from_dict(result.to_dict()) == result  # stored in the run folder


def test_every_seed_leaking_stops_with_what_to_change(anchor):
    with pytest.raises(AnchorLeakError) as info:
        _gate(anchor, {0: "same", 1: "darker", 2: "same"})
    result = info.value.result
    assert result.verdict == LEAK and result.seed is None and result.seeds == [0, 1, 2]
    assert max(result.distances) < 0.6
    assert isinstance(info.value, IdentityLeakError) and info.value.exit_code == 3
    message = str(info.value)
    assert "still the signer" in message and message.endswith(ADVICE)


def test_no_face_in_the_new_anchor_goes_on_and_says_so(anchor):
    result, calls, _ = _gate(anchor, {0: "noise", 1: "same"})
    assert calls == [0] and result.verdict == NO_FACE and result.seed == 0
    assert not result.tries[0].face_found and result.distances[0] >= 0.6
    assert "no face found in the new anchor, the run goes on" in result.message()


def test_an_anchor_without_a_face_has_nothing_to_protect(anchor):
    original = anchor[0]
    result = run_to_end(
        anchor_gate(original, None, None, lambda s: 1 / 0, [4], anchor=3, advice=ADVICE)
    )
    assert result.verdict == NO_ORIGINAL_FACE and result.seed == 4 and not result.tries
