"""BiSeNet face parser with the state-dict layout of the public ``79999_iter.pth``.

Context path only (the checkpoint has no spatial path: the stride-8 ResNet features take
its place): ResNet-18 features at strides 8/16/32, attention refinement on 16 and 32 plus
a global-context vector, a feature fusion module, one main and two auxiliary heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNet18


class ConvBNReLU(nn.Module):
    """Bias-free convolution, batch norm, ReLU (keys ``conv``, ``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinement(nn.Module):
    """3x3 conv, then channel re-weighting from the globally pooled features."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        weights = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))
        return feat * weights


class ContextPath(nn.Module):
    """Backbone plus top-down refinement: returns features at strides 8, 8 and 16."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18(num_classes=None)
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, feat8, feat16, feat32 = self.resnet.features(x)
        context = self.conv_avg(feat32.mean((2, 3), keepdim=True))
        up32 = self.arm32(feat32) + context  # broadcast = nearest upsampling of a 1x1 map
        up32 = self.conv_head32(F.interpolate(up32, size=feat16.shape[2:], mode="nearest"))
        up16 = self.arm16(feat16) + up32
        up16 = self.conv_head16(F.interpolate(up16, size=feat8.shape[2:], mode="nearest"))
        return feat8, up16, up32


class FeatureFusion(nn.Module):
    """Concatenate, 1x1 conv, and add a channel-attention re-weighted copy."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, 1)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([low, high], dim=1))
        pooled = feat.mean((2, 3), keepdim=True)
        weights = torch.sigmoid(self.conv2(F.relu(self.conv1(pooled))))
        return feat + feat * weights


class OutputHead(nn.Module):
    """3x3 ConvBNReLU then a bias-free 1x1 classifier (keys ``conv``, ``conv_out``)."""

    def __init__(self, in_ch: int, mid_ch: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.conv_out = nn.Conv2d(mid_ch, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parser: ``forward`` returns (out, out16, out32) logits at input resolution.

    Only ``out`` is used at inference; the auxiliary heads exist so the public checkpoint
    loads strictly.
    """

    def __init__(self, n_classes: int = 19) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)
        self.conv_out32 = OutputHead(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = x.shape[2:]
        feat8, up16, up32 = self.cp(x)
        fused = self.ffm(feat8, up16)
        outputs = (self.conv_out(fused), self.conv_out16(up16), self.conv_out32(up32))
        return tuple(
            F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outputs
        )
