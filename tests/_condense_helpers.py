"""Helpers shared by the CondenseNet / CondenseNetV2 tests."""
import torch
import torch.nn as nn


def randomize_bn(model, seed=0):
    """Non-trivial BN affine parameters and running statistics (so BN mapping bugs show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def condensed(model, seed=0):
    """Random BN, then every pruning event (progress 1.0); eval mode."""
    randomize_bn(model, seed)
    model.set_progress(1.0)
    return model.eval()
