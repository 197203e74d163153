"""Losses by name: the config's ``loss`` key picks one.

With mixup/cutmix active the targets are soft (label smoothing folded in by timm's ``Mixup``), so
``cross_entropy`` becomes timm's ``SoftTargetCrossEntropy`` as timm's train.py does.
"""
from graphs.losses.cross_entropy import build_cross_entropy

LOSSES = ("cross_entropy", "distill")


def mixing_active(config) -> bool:
    """True when mixup or cutmix is configured (alphas > 0)."""
    return bool(config.mixup or config.cutmix)


def build_loss(config, teacher=None):
    """The training criterion; ``loss: distill`` needs the ``teacher`` (``distill.build_teacher``)."""
    if config.loss == "distill":
        from graphs.losses.distill import DistillationLoss
        smoothing = 0.0 if mixing_active(config) else config.label_smoothing
        return DistillationLoss(teacher, config.kd_alpha, config.kd_tau, smoothing)
    if mixing_active(config):
        from timm.loss import SoftTargetCrossEntropy
        return SoftTargetCrossEntropy()
    return build_cross_entropy(config)
