"""The ControlNet HED soft-edge annotator (the layout of ``ControlNetHED.pth``).

Five VGG-style blocks (2, 2, 3, 3, 3 convolutions at 64/128/256/512/512 channels, ReLU after
each); blocks 2-5 first halve the resolution with a 2x2 max-pool. Each block ends in a 1x1
``projection`` to one channel, the side output at strides 1, 2, 4, 8 and 16. The input is
RGB in 0..255 (no /255); the network subtracts its own learned mean ``norm``. The edge map
is the sigmoid of the mean of the side outputs resized to the input size.

Parameter names match the public checkpoint so it loads with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


class HEDBlock(nn.Module):
    """``n`` 3x3 convolutions with ReLU, plus a 1x1 side-output projection."""

    def __init__(self, in_ch: int, out_ch: int, n_convs: int, pool_first: bool) -> None:
        super().__init__()
        self.pool_first = pool_first
        self.convs = nn.ModuleList(
            nn.Conv2d(in_ch if k == 0 else out_ch, out_ch, 3, padding=1) for k in range(n_convs)
        )
        self.projection = nn.Conv2d(out_ch, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features for the next block and this block's side output."""
        if self.pool_first:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class ControlNetHED(nn.Module):
    """HED edge network with the state-dict keys of ControlNet's ``ControlNetHED.pth``."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for index, (in_ch, out_ch, n_convs) in enumerate(BLOCKS, start=1):
            self.add_module(f"block{index}", HEDBlock(in_ch, out_ch, n_convs, index > 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Five side outputs (logits, strides 1..16) of RGB input in 0..255, NCHW."""
        h = x - self.norm
        sides = []
        for index in range(1, len(BLOCKS) + 1):
            h, side = getattr(self, f"block{index}")(h)
            sides.append(side)
        return sides

    def edges(self, x: torch.Tensor) -> torch.Tensor:
        """Edge probability ``(N, H, W)`` in [0, 1] for RGB input in 0..255, NCHW."""
        size = x.shape[-2:]
        sides = [
            F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            for s in self.forward(x)
        ]
        return torch.sigmoid(torch.stack(sides).mean(dim=0))[:, 0]
