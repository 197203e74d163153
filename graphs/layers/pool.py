"""Global average pooling as a mean over H and W."""
import torch
from torch import nn


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d(1)`` computed as ``x.mean((2, 3))``: the same value, but its backward is a plain
    expand, which is deterministic on CUDA (``adaptive_avg_pool2d``'s backward is not, so
    ``deterministic: true`` could not make a resumed GPU run repeat itself)."""

    def __init__(self):
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)
