"""Where a clip's anchors go and in which order its frames are translated.

The first anchor (the user's choice, or the prepare stage's) fixes the clip's style. A clip
longer than ``anchor_span`` frames gets more anchors, one per span, so no frame is far from
an anchor (errors accumulate along long chains; Rerender-A-Video's users report it). Every
anchor is translated first, with the first anchor's style (AdaIN statistics and cross-frame
attention to it), so the new identity stays one person. Each anchor then serves the frames
nearer to it than to any other: they are translated outward from it (anchor + 1 ... end of
its segment, then anchor - 1 ... start), so every frame's "previous" frame is its neighbour
towards the anchor and no frame starts without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ClipPlan:
    """Anchors (the first one fixes the style) and the translation order."""

    anchors: tuple[int, ...]
    segments: tuple[tuple[int, int], ...]  # per anchor: its frames start..stop (half-open)

    def anchor_of(self, frame: int) -> int:
        """The anchor that serves ``frame``."""
        for anchor, (start, stop) in zip(self.anchors, self.segments, strict=True):
            if start <= frame < stop:
                return anchor
        raise IndexError(frame)

    def previous(self, frame: int) -> int:
        """The frame whose output and states ``frame`` continues from (an anchor: itself)."""
        anchor = self.anchor_of(frame)
        return frame if frame == anchor else frame - 1 if frame > anchor else frame + 1

    def chain(self, anchor: int) -> list[int]:
        """The non-anchor frames of ``anchor``'s segment in translation order."""
        start, stop = self.segments[self.anchors.index(anchor)]
        return [*range(anchor + 1, stop), *range(anchor - 1, start - 1, -1)]

    @property
    def order(self) -> list[int]:
        """Every frame once: all anchors first, then each anchor's segment outward."""
        return [*self.anchors, *(i for a in self.anchors for i in self.chain(a))]


def plan_clip(
    num_frames: int,
    first: int,
    span: int | None,
    score: Callable[[int], float] | None = None,
) -> ClipPlan:
    """Anchors every ``span`` frames around ``first`` (kept as is) and their segments.

    A clip of ``n`` frames gets ``ceil(n / span)`` anchors; the others sit near the middles
    of equal parts of the clip, moved within a quarter span to the frame ``score`` rates
    highest (ties: nearest the middle).
    """
    if not 0 <= first < num_frames:
        raise ValueError(f"anchor {first} outside the clip (0..{num_frames - 1})")
    count = 1 if span is None else max(1, math.ceil(num_frames / span))
    part = num_frames / count
    middles = [int((k + 0.5) * part) for k in range(count)]
    own = min(range(count), key=lambda k: abs(middles[k] - first))
    others = [
        _best_near(middles[k], int(part / 4), num_frames, score) for k in range(count) if k != own
    ]
    anchors = sorted({first, *others})
    bounds = [0, *((a + b + 1) // 2 for a, b in zip(anchors, anchors[1:], strict=False))]
    segments = tuple(zip(bounds, [*bounds[1:], num_frames], strict=True))
    order = [first, *(a for a in anchors if a != first)]
    return ClipPlan(tuple(order), tuple(segments[anchors.index(a)] for a in order))


def _best_near(
    middle: int, reach: int, num_frames: int, score: Callable[[int], float] | None
) -> int:
    if score is None or reach == 0:
        return middle
    window = range(max(0, middle - reach), min(num_frames, middle + reach + 1))
    return max(window, key=lambda i: (score(i), -abs(i - middle)))
