"""A style reference: what the other views of a group take from the group's first view.

Views of one utterance filmed by several cameras are translated one clip at a time. The
first view's generated anchor fixes its clip's style; a :class:`StyleReference` carries
that style to the other views as the anchor's per-step x0 channel statistics (mean and
std per latent channel, on the AdaIN steps). A view translated with a reference applies
AdaIN toward them on its *anchor* too, so its anchor, and through it every frame of the
view, gets the first view's colour statistics.

Only the statistics are shared: a few numbers per step, kept as JSON in the first view's
run folder (``style_reference.json``). The anchor's attention states are not shared: they
are hundreds of MB per frame at 512x512 (docs/performance.md), and attending across
cameras would match features of different viewpoints, which nothing here measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SettingsError
from ..project import RunFolder, atomic_write_json, read_json, settings_key

if TYPE_CHECKING:
    import torch

    from .settings import EngineSettings

FILE = "style_reference.json"

Stats = dict[int, tuple["torch.Tensor", "torch.Tensor"]]  # step -> (mean, std), (1, C, 1, 1)


@dataclass(frozen=True)
class StyleReference:
    """Per-step anchor x0 statistics of a group's first view (plain floats, any device)."""

    steps: int  # schedule length the step indices refer to
    stats: dict[int, tuple[tuple[float, ...], tuple[float, ...]]]  # step -> (means, stds)

    @property
    def key(self) -> str:
        """Identity of the reference: part of the settings key of every view that uses it."""
        return settings_key(self.steps, sorted(self.stats.items()))

    @classmethod
    def from_stats(cls, steps: int, stats: Stats) -> StyleReference:
        """From the sampler's recorded anchor statistics (tensors of shape (1, C, 1, 1))."""
        return cls(
            steps,
            {
                step: (
                    tuple(mean.flatten().double().tolist()),
                    tuple(std.flatten().double().tolist()),
                )
                for step, (mean, std) in sorted(stats.items())
            },
        )

    def targets(self, settings: EngineSettings, device: torch.device, dtype: torch.dtype) -> Stats:
        """AdaIN targets for a run with ``settings``; its AdaIN steps must all be covered."""
        import torch

        adain = settings.steps_in("adain_range")
        wanted = [s for s in range(settings.start_step, settings.steps) if s in adain]
        missing = [s for s in wanted if s not in self.stats]
        if self.steps != settings.steps or missing:
            raise SettingsError(
                f"style reference made with steps={self.steps} and AdaIN steps "
                f"{sorted(self.stats)}; this run needs steps={settings.steps}, AdaIN steps "
                f"{wanted}: give the views of a group the same steps, strength and adain_range"
            )

        def tensor(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)

        return {s: (tensor(self.stats[s][0]), tensor(self.stats[s][1])) for s in wanted}

    def save(self, run: RunFolder) -> None:
        """Write ``style_reference.json`` into ``run`` (atomically)."""
        run.ensure()
        atomic_write_json(
            run.root / FILE,
            {
                "steps": self.steps,
                "key": self.key,
                "stats": {
                    str(s): {"mean": list(m), "std": list(d)} for s, (m, d) in self.stats.items()
                },
            },
        )

    @classmethod
    def load(cls, run: RunFolder) -> StyleReference | None:
        """The reference saved in ``run``, or None when it has none."""
        data = read_json(run.root / FILE)
        if data is None:
            return None
        return cls(
            int(data["steps"]),
            {int(s): (tuple(v["mean"]), tuple(v["std"])) for s, v in data["stats"].items()},
        )
