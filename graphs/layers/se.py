"""Squeeze-and-excitation without biases, as in CondenseNetV2 (keys ``fc.0.weight`` / ``fc.2.weight``)."""
import torch.nn as nn

from graphs.layers.pool import GlobalAvgPool2d
from utils.errors import check


class SELayer(nn.Module):
    """Global average pool -> Linear C->C/r -> ReLU -> Linear C/r->C -> Sigmoid -> channel scaling."""

    def __init__(self, inplanes, reduction=16):
        super().__init__()
        check(inplanes // reduction >= 1,
              f"SE layer with {inplanes} channels cannot use reduction {reduction}; use a smaller reduction")
        hidden = inplanes // reduction
        self.avg_pool = GlobalAvgPool2d()
        self.fc = nn.Sequential(
            nn.Linear(inplanes, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, inplanes, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        n, c = x.shape[:2]
        y = self.fc(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)
        return x * y
