"""The edits.json format: building, describing and undoing corrections, and applying only
some frames' corrections to a real clip's face track."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffslva.errors import SettingsError
from napari_diffslva.prepare import edits as ed
from napari_diffslva.prepare.faces import EDITED, LOST, apply_edits, track_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames


def test_corrections_are_described_per_frame_and_undone():
    edits = ed.with_boxes({}, {2: [1, 2, 30, 40]})
    edits = ed.with_status(edits, [5], "occluded")
    edits = ed.with_masks(ed.with_status(edits, [2], "face"), [2, 7])
    edits = ed.with_anchor(edits, 3)
    assert ed.describe(edits) == {2: ["box", "face", "mask"], 5: ["occluded"], 7: ["mask"]}
    assert ed.anchor_frame(edits) == 3 and ed.anchor_edited(edits)
    assert ed.anchor_frame({}) is None and not ed.anchor_edited({})
    # a no-face mark drops the frame's box; a new box drops a no-face mark
    assert "5" not in ed.with_status(ed.with_boxes(edits, {5: [0, 0, 9, 9]}), [5], "lost")["boxes"]
    assert "5" not in ed.with_boxes(edits, {5: [0, 0, 9, 9]})["status"]
    undone = ed.without_frame_edits(edits, [2, 5, 7])
    assert ed.describe(undone) == {} and ed.anchor_frame(undone) == 3
    assert ed.describe(edits) != {}  # pure: the input is unchanged
    with pytest.raises(SettingsError, match="frame status 'gone'"):
        ed.with_status({}, [1], "gone")


def test_only_the_chosen_frames_corrections_reach_the_track(real_clip):
    frames = read_frames(real_clip("sl_soup.mp4"), 0, 6)
    track = run_to_end(track_faces(frames))
    moved = (track.boxes[1] + [0, 4, 0, 4]).tolist()
    edits = ed.with_status(ed.with_boxes({}, {1: moved, 3: track.boxes[3]}), [4], "lost")
    only = ed.track_edits_of(edits, [1, 4])
    assert only == {"boxes": {"1": edits["boxes"]["1"]}, "status": {"4": "lost"}}
    out = apply_edits(track, only, frames=frames)
    assert out.status[1] == EDITED and out.status[4] == LOST and out.status[3] != EDITED
    np.testing.assert_allclose(out.boxes[1], moved, atol=0.01)
