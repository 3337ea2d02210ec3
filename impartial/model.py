"""The network: a plain 2-D U-Net with dropout that stays on at inference (MC dropout).

Level ``l`` (0 = full resolution, ``depth`` = bottleneck) has ``base * 2**l`` channels. Each level is two
3x3 convolutions with ReLU (no batch norm, so MC-dropout samples are not skewed by batch statistics) followed
by per-pixel dropout. The encoder halves the resolution ``depth`` times with max pooling; the decoder upsamples
bilinearly, concatenates the skip connection and applies the same conv pair. A final 1x1 convolution gives the
output channels. Input height and width must therefore be multiples of ``2**depth``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig


class PixelDropout(nn.Dropout):
    """Per-element inverted dropout like ``nn.Dropout``, two to three times faster on the CPU.

    torch's own dropout draws one Bernoulli sample per element, which costs as much as ten 3x3
    convolutions of the same tensor and dominated MC-dropout prediction. Here every element gets
    one random byte (eight per 64-bit draw) and is dropped when the byte is below ``round(256 p)``,
    so the dropout rate is ``p`` to within 1/512 and the kept values are scaled to keep the mean.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        cutoff = round(256 * self.p)
        if cutoff >= 256:
            return x * 0.0
        return torch.where(_random_bytes_like(x) >= cutoff, x, 0.0).mul_(256 / (256 - cutoff))


def _random_bytes_like(x: torch.Tensor) -> torch.Tensor:
    """Uniform uint8 values with x's shape and memory layout (x must be dense, e.g. NCHW or channels-last)."""
    draws = torch.empty(x.numel() // 8 + 1, dtype=torch.int64, device=x.device)
    draws.random_(-2 ** 63, None)  # the full 64-bit range: all eight bytes uniform
    return draws.view(torch.uint8)[:x.numel()].as_strided(x.size(), x.stride())


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with ReLU, then dropout (kept active for MC-dropout sampling)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            PixelDropout(dropout),
        )


class UNet(nn.Module):
    """U-Net mapping (B, in_channels, H, W) to (B, out_channels, H, W).

    Args:
        in_channels: image channels.
        out_channels: network outputs (``RunConfig.n_outputs``).
        depth: number of 2x downsamplings; H and W must be multiples of ``2**depth``.
        base: channels of the full-resolution level; level ``l`` has ``base * 2**l``.
        dropout: per-pixel dropout probability after every conv pair.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 4, base: int = 64,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.depth = depth
        widths = [base * 2 ** level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            ConvBlock(in_channels if level == 0 else widths[level - 1], widths[level], dropout)
            for level in range(depth + 1)
        )
        # Decoder block l takes the upsampled level l + 1 concatenated with the skip of level l.
        self.decoder = nn.ModuleList(
            ConvBlock(widths[level + 1] + widths[level], widths[level], dropout) for level in range(depth)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        # NHWC convolutions train 1.3-1.6x faster on CPU (benchmarks/bench_model_speed.py); callers never see it.
        self.use_memory_format(torch.channels_last)

    def use_memory_format(self, memory_format: torch.memory_format) -> UNet:
        """Lay out weights and activations as ``memory_format`` (inputs and outputs stay NCHW). Returns self."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) float32 -> (B, out_channels, H, W) raw outputs (logits and mean maps)."""
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"input size {height}x{width} is not a multiple of {self.size_multiple}")
        x = x.contiguous(memory_format=self.memory_format)
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(self.depth)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.decoder[level](torch.cat([x, skips[level]], dim=1))
        return self.head(x).contiguous()


def build_model(config: RunConfig) -> UNet:
    """The U-Net for a run: ``config.n_channels`` in, ``config.n_outputs`` out, shape from ``config.model``."""
    shape = config.model
    return UNet(config.n_channels, config.n_outputs, depth=shape.depth, base=shape.base, dropout=shape.dropout)


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode everywhere except the dropout layers, which sample (MC dropout). Returns the model."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
    return model
