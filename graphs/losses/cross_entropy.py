"""Cross-entropy with optional label smoothing.

With smoothing eps the target is (1 - eps) * one-hot + eps / K, i.e. the loss is
(1 - eps) * NLL + eps * mean_k(-log p_k): the same as timm's LabelSmoothingCrossEntropy that the
official CondenseNetV2 recipe uses.
"""
from torch import nn


def build_cross_entropy(config):
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
