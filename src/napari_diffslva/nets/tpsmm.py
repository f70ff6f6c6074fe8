"""Thin-Plate Spline Motion Model (Zhao and Zhang, CVPR 2022) for 256x256 face animation.

Written from the paper and the published state-dict layout so that the public VoxCeleb
checkpoint ``vox.pth.tar`` loads strictly into these modules: each sub-network's
``state_dict()`` has exactly the keys and shapes listed in
``docs/checkpoints/tpsmm_vox256_*.tsv`` (config ``vox-256.yaml``: 10 TPS transforms of 5
keypoints, multi-resolution occlusion masks, background affine motion).

Coordinates are normalised (x, y) in [-1, 1], x along the width, as ``grid_sample`` expects
with ``align_corners=True``. Images are float RGB in [0, 1], NCHW, 256x256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNet18

NUM_TPS = 10
POINTS_PER_TPS = 5
IMAGE_SIZE = 256


# --------------------------------------------------------------------------- geometry


def coordinate_grid(h: int, w: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(h, w, 2) grid of normalised (x, y) pixel centres, corners at -1 and 1."""
    xs = torch.linspace(-1.0, 1.0, w, dtype=dtype, device=device)
    ys = torch.linspace(-1.0, 1.0, h, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def keypoint_heatmaps(kp: torch.Tensor, h: int, w: int, variance: float) -> torch.Tensor:
    """Gaussian blobs (B, N, h, w) centred on keypoints ``kp`` (B, N, 2)."""
    grid = coordinate_grid(h, w, dtype=kp.dtype, device=kp.device)
    diff = grid[None, None] - kp[:, :, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


def _tps_kernel(squared_distance: torch.Tensor) -> torch.Tensor:
    """Radial basis U(r) = r^2 log r^2 of the thin-plate spline, on squared distances."""
    return squared_distance * torch.log(squared_distance + 1e-9)


def tps_warp_grids(
    kp_driving: torch.Tensor, kp_source: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Sampling grids (B, K, h, w, 2) of K thin-plate splines mapping driving -> source.

    ``kp_*`` are (B, K, P, 2): K groups of P control points. Each spline is fitted on the
    driving points (exact interpolation with a 0.01 ridge on the system's diagonal) and
    evaluated at every output pixel, so ``grid_sample(source, grid)`` pulls the source
    content into the driving pose.
    """
    bs, k, p, _ = kp_driving.shape
    dtype, device = kp_driving.dtype, kp_driving.device
    radial = _tps_kernel(((kp_driving[:, :, :, None] - kp_driving[:, :, None, :]) ** 2).sum(-1))
    affine_basis = torch.cat([kp_driving, kp_driving.new_ones(bs, k, p, 1)], dim=-1)  # P x 3
    system = torch.zeros(bs, k, p + 3, p + 3, dtype=dtype, device=device)
    system[..., :p, :p] = radial
    system[..., :p, p:] = affine_basis
    system[..., p:, :p] = affine_basis.transpose(-1, -2)
    system = system + 0.01 * torch.eye(p + 3, dtype=dtype, device=device)
    targets = torch.cat([kp_source, kp_source.new_zeros(bs, k, 3, 2)], dim=2)
    params = torch.linalg.solve(system, targets)  # (B, K, P+3, 2)
    radial_weights, affine = params[..., :p, :], params[..., p:, :]

    pixels = coordinate_grid(h, w, dtype=dtype, device=device).view(1, 1, h * w, 2)
    warped = pixels @ affine[..., :2, :] + affine[..., 2:, :]  # (B, K, HW, 2)
    sq = ((pixels[:, :, :, None, :] - kp_driving[:, :, None, :, :]) ** 2).sum(-1)
    warped = warped + _tps_kernel(sq) @ radial_weights
    return warped.view(bs, k, h, w, 2)


def warp_image(image: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) at ``deformation`` (B, h, w, 2), resized if needed."""
    h, w = image.shape[2:]
    if deformation.shape[1:3] != (h, w):
        field = deformation.permute(0, 3, 1, 2)
        field = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=True)
        deformation = field.permute(0, 2, 3, 1)
    return F.grid_sample(image, deformation, align_corners=True)


def _resize_like(mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    if mask.shape[2:] != features.shape[2:]:
        mask = F.interpolate(mask, size=features.shape[2:], mode="bilinear", align_corners=True)
    return mask


# --------------------------------------------------------------------------- blocks


class _ConvNorm(nn.Module):
    """conv -> affine InstanceNorm -> ReLU, the unit every block below is made of."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
        self.norm = nn.InstanceNorm2d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock(_ConvNorm):
    """Conv unit followed by 2x average pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class UpBlock(_ConvNorm):
    """2x nearest upsampling followed by a conv unit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """Pre-activation residual block (norm -> ReLU -> conv, twice)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(ch, affine=True)
        self.norm2 = nn.InstanceNorm2d(ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


class HourglassEncoder(nn.Module):
    def __init__(self, in_ch: int, base: int, max_ch: int, num_blocks: int) -> None:
        super().__init__()
        chans = [in_ch] + [min(max_ch, base * 2 ** (i + 1)) for i in range(num_blocks)]
        pairs = zip(chans[:-1], chans[1:], strict=True)
        self.down_blocks = nn.ModuleList(DownBlock(a, b) for a, b in pairs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, in_ch: int, base: int, max_ch: int, num_blocks: int) -> None:
        super().__init__()
        blocks = []
        self.out_channels: list[int] = []
        for i in reversed(range(num_blocks)):
            width_in = min(max_ch, base * 2 ** (i + 1)) * (1 if i == num_blocks - 1 else 2)
            width_out = min(max_ch, base * 2**i)
            blocks.append(UpBlock(width_in, width_out))
            self.out_channels.append(width_in)
        self.out_channels.append(base + in_ch)
        self.up_blocks = nn.ModuleList(blocks)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every decoder level (skip concatenated), coarsest first."""
        skips = list(skips)
        out = skips.pop()
        levels = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
            levels.append(out)
        return levels


class Hourglass(nn.Module):
    """U-Net style encoder/decoder; ``out_channels[-1]`` is the finest level's width."""

    def __init__(self, in_ch: int, base: int, max_ch: int, num_blocks: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(in_ch, base, max_ch, num_blocks)
        self.decoder = HourglassDecoder(in_ch, base, max_ch, num_blocks)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.decoder(self.encoder(x))


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then subsampling by ``1/scale`` (the fixed kernel is a stored buffer)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1.0 / scale - 1.0) / 2.0
        size = 2 * round(sigma * 4) + 1
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = (kernel / kernel.sum()).expand(channels, 1, size, size).contiguous()
        self.register_buffer("weight", kernel)
        self.step = int(round(1.0 / scale))
        self.pad = size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad,) * 4)
        x = F.conv2d(x, self.weight, groups=x.shape[1])
        return x[:, :, :: self.step, :: self.step]


# --------------------------------------------------------------------------- sub-networks


class KPDetector(nn.Module):
    """ResNet-18 regressing K*5 keypoints (B, 50, 2) in [-1, 1] from one image."""

    def __init__(self, num_tps: int = NUM_TPS) -> None:
        super().__init__()
        self.fg_encoder = ResNet18(3, num_classes=num_tps * POINTS_PER_TPS * 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        kp = torch.sigmoid(self.fg_encoder(image)) * 2 - 1
        return kp.view(image.shape[0], -1, 2)


class BGMotionPredictor(nn.Module):
    """Affine background motion (B, 3, 3) between source and driving, from a 6-channel ResNet."""

    def __init__(self) -> None:
        super().__init__()
        self.bg_encoder = ResNet18(6, num_classes=6)
        nn.init.zeros_(self.bg_encoder.fc.weight)
        with torch.no_grad():
            self.bg_encoder.fc.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        bs = source.shape[0]
        affine = self.bg_encoder(torch.cat([source, driving], dim=1)).view(bs, 2, 3)
        bottom = affine.new_tensor([0.0, 0.0, 1.0]).expand(bs, 1, 3)
        return torch.cat([affine, bottom], dim=1)


@dataclass
class DenseMotion:
    """Output of :class:`DenseMotionNetwork` (all at 64x64 except the occlusion pyramid)."""

    deformation: torch.Tensor  # (B, 64, 64, 2) sampling grid into the source
    contribution_maps: torch.Tensor  # (B, K+1, 64, 64) softmax weights of the transforms
    deformed_source: torch.Tensor  # (B, K+1, 3, 64, 64) source warped by each transform
    occlusion_maps: list[torch.Tensor]  # (B, 1, s, s) for s = 32, 64, 128, 256


class DenseMotionNetwork(nn.Module):
    """Blends K TPS transforms + background into one flow and predicts occlusion masks."""

    def __init__(
        self,
        num_tps: int = NUM_TPS,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 1024,
        num_blocks: int = 5,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_tps = num_tps
        self.kp_variance = kp_variance
        self.down = AntiAliasDownsample(num_channels, scale_factor)
        in_ch = num_channels * (num_tps + 1) + num_tps * POINTS_PER_TPS + 1
        self.hourglass = Hourglass(in_ch, block_expansion, max_features, num_blocks)
        widths = self.hourglass.out_channels
        finest = widths[-1]
        self.maps = nn.Conv2d(finest, num_tps + 1, 7, padding=3)
        up_count = int(round(math.log2(1 / scale_factor)))
        self.up = nn.ModuleList(
            UpBlock(finest // 2**i, finest // 2 ** (i + 1)) for i in range(up_count)
        )
        heads = [widths[-2], finest] + [finest // 2 ** (i + 1) for i in range(up_count)]
        self.occlusion = nn.ModuleList(nn.Conv2d(c, 1, 7, padding=3) for c in heads)

    def forward(
        self,
        source: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        bg_param: torch.Tensor | None = None,
    ) -> DenseMotion:
        small = self.down(source)
        bs, _, h, w = small.shape
        heat = keypoint_heatmaps(kp_driving, h, w, self.kp_variance) - keypoint_heatmaps(
            kp_source, h, w, self.kp_variance
        )
        heat = torch.cat([heat.new_zeros(bs, 1, h, w), heat], dim=1)

        identity = coordinate_grid(h, w, dtype=small.dtype, device=small.device)
        identity = identity.expand(bs, 1, h, w, 2)
        if bg_param is not None:
            homog = torch.cat([identity, identity.new_ones(bs, 1, h, w, 1)], dim=-1)
            homog = (bg_param.view(bs, 1, 1, 1, 3, 3) @ homog.unsqueeze(-1)).squeeze(-1)
            identity = homog[..., :2] / homog[..., 2:]
        tps = tps_warp_grids(
            kp_driving.view(bs, self.num_tps, -1, 2), kp_source.view(bs, self.num_tps, -1, 2), h, w
        )
        grids = torch.cat([identity, tps], dim=1)  # (B, K+1, h, w, 2)

        n = self.num_tps + 1
        repeated = small.unsqueeze(1).expand(bs, n, *small.shape[1:]).reshape(bs * n, -1, h, w)
        deformed = F.grid_sample(repeated, grids.reshape(bs * n, h, w, 2), align_corners=True)
        deformed = deformed.view(bs, n, -1, h, w)

        levels = self.hourglass(torch.cat([heat, deformed.view(bs, -1, h, w)], dim=1))
        contribution = F.softmax(self.maps(levels[-1]), dim=1)
        deformation = (grids * contribution.unsqueeze(-1)).sum(dim=1)

        occlusion = [torch.sigmoid(self.occlusion[0](levels[-2]))]
        feat = levels[-1]
        occlusion.append(torch.sigmoid(self.occlusion[1](feat)))
        for i, up in enumerate(self.up):
            feat = up(feat)
            occlusion.append(torch.sigmoid(self.occlusion[2 + i](feat)))
        return DenseMotion(deformation, contribution, deformed, occlusion)


class InpaintingNetwork(nn.Module):
    """Encodes the source, warps each scale by the dense flow, masks occluded parts, decodes."""

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 3,
    ) -> None:
        super().__init__()
        self.first = _ConvNorm(num_channels, block_expansion, kernel=7)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.down_blocks = nn.ModuleList(DownBlock(a, b) for a, b in pairs)
        ins = [max_features, max_features, max_features // 2]
        outs = [max_features // 2, max_features // 4, max_features // 8]
        self.up_blocks = nn.ModuleList(UpBlock(a, b) for a, b in zip(ins, outs, strict=True))
        self.resblock = nn.ModuleList(ResBlock(c) for c in ins for _ in range(2))
        self.final = nn.Conv2d(block_expansion, num_channels, 7, padding=3)

    def forward(self, source: torch.Tensor, motion: DenseMotion) -> torch.Tensor:
        """The source re-rendered in the driving pose, (B, 3, H, W) in [0, 1]."""
        features = [self.first(source)]
        for block in self.down_blocks:
            features.append(block(features[-1]))
        occ = motion.occlusion_maps
        out = warp_image(features[-1], motion.deformation)
        out = out * _resize_like(occ[0], out)
        levels = len(self.up_blocks)
        for i in range(levels):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            skip = warp_image(features[-(i + 2)], motion.deformation)
            skip = skip * _resize_like(occ[i + 1], skip)
            if i < levels - 1:
                out = torch.cat([out, skip], dim=1)
        last = occ[-1]
        out = torch.sigmoid(self.final(out * (1 - last) + skip))
        warped_source = warp_image(source, motion.deformation)
        return out * (1 - last) + warped_source * last


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear/BatchNorm1d/ReLU stack (indices 0,1,2, 3,4,5, ...), last Linear bare."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class AVDNetwork(nn.Module):
    """Animation via disentanglement: pose of the driving keypoints, identity of the source's."""

    def __init__(
        self, num_tps: int = NUM_TPS, id_bottle_size: int = 128, pose_bottle_size: int = 128
    ) -> None:
        super().__init__()
        size = num_tps * POINTS_PER_TPS * 2
        self.id_encoder = _mlp([size, 256, 512, 1024, id_bottle_size])
        self.pose_encoder = _mlp([size, 256, 512, 1024, pose_bottle_size])
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, 1024, 512, 256, size])

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        bs = kp_source.shape[0]
        pose = self.pose_encoder(kp_driving.reshape(bs, -1))
        ident = self.id_encoder(kp_source.reshape(bs, -1))
        return self.decoder(torch.cat([pose, ident], dim=1)).view(bs, -1, 2)


# --------------------------------------------------------------------------- whole model


SUBNETWORKS = (
    "kp_detector",
    "dense_motion_network",
    "inpainting_network",
    "avd_network",
    "bg_predictor",
)


class TPSMM(nn.Module):
    """The five vox-256 sub-networks under the checkpoint's own top-level keys."""

    def __init__(self) -> None:
        super().__init__()
        self.kp_detector = KPDetector()
        self.dense_motion_network = DenseMotionNetwork()
        self.inpainting_network = InpaintingNetwork()
        self.avd_network = AVDNetwork()
        self.bg_predictor = BGMotionPredictor()

    def animate(
        self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor, DenseMotion]:
        """Render ``source`` moved from ``kp_source`` to ``kp_driving`` (no background motion,
        as in the authors' demo)."""
        motion = self.dense_motion_network(source, kp_driving, kp_source)
        return self.inpainting_network(source, motion), motion


def relative_keypoints(
    kp_source: torch.Tensor, kp_driving: torch.Tensor, kp_driving_initial: torch.Tensor
) -> torch.Tensor:
    """The demo's "relative" mode: the driver's motion since its first frame, scaled by the
    ratio of the keypoint convex-hull sizes, added to the source keypoints. This keeps the
    source's face shape (identity) and moves it like the driver."""
    scale = math.sqrt(_hull_area(kp_source[0]) / max(_hull_area(kp_driving_initial[0]), 1e-12))
    return kp_source + (kp_driving - kp_driving_initial) * scale


def _hull_area(points: torch.Tensor) -> float:
    from scipy.spatial import ConvexHull

    return float(ConvexHull(points.detach().cpu().double().numpy()).volume)
