"""Cross-entropy with optional label smoothing.

With smoothing eps the target is (1 - eps) * one-hot + eps / K, i.e. the loss is
(1 - eps) * NLL + eps * mean_k(-log p_k): the same as timm's LabelSmoothingCrossEntropy that the
official CondenseNetV2 recipe uses.
"""
import torch
from torch import nn


class GatherCrossEntropy(nn.Module):
    """The same loss as ``nn.CrossEntropyLoss(label_smoothing=eps)``, written with ``log_softmax`` and
    ``gather``: CUDA's ``nll_loss`` is not deterministic, so ``deterministic: true`` uses this one."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = logits.log_softmax(dim=1)
        loss = -logp.gather(1, target.unsqueeze(1)).squeeze(1)
        if self.label_smoothing:
            loss = (1.0 - self.label_smoothing) * loss - self.label_smoothing * logp.mean(dim=1)
        return loss.mean()


def build_cross_entropy(config) -> nn.Module:
    if config.deterministic:
        return GatherCrossEntropy(config.label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
