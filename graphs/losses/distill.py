"""Knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015).

    loss = (1 - alpha) * CE(student, y) + alpha * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))

The tau^2 factor keeps the soft term's gradient scale independent of the temperature (Hinton et al.,
section 2); the KL term is timm's ``LogitDistillationTask`` form (``F.kl_div`` of log-softmaxes,
``batchmean``). ``y`` may be class indices (CE with optional label smoothing) or soft targets from
mixup/cutmix (soft-target CE, smoothing already inside them). The teacher is any registered model with
weights; it stays in eval mode, frozen, and runs under ``no_grad`` on the student's (mixed) input.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import ConfigError


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean CE over the batch; ``target`` class indices (with smoothing) or per-class probabilities."""
    if target.is_floating_point():
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, alpha: float,
                      tau: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton et al.'s loss from logits (computed in fp32, whatever autocast gave the logits)."""
    student, teacher = student.float(), teacher.float()
    ce = soft_cross_entropy(student, target, label_smoothing)
    kd = F.kl_div(F.log_softmax(student / tau, dim=-1), F.log_softmax(teacher / tau, dim=-1),
                  reduction="batchmean", log_target=True) * (tau * tau)
    return (1.0 - alpha) * ce + alpha * kd


class DistillationLoss(nn.Module):
    """``forward(student_logits, target, inputs)``: runs the frozen teacher on ``inputs``, then
    :func:`distillation_loss`. ``train()`` never switches the teacher out of eval mode."""

    def __init__(self, teacher: nn.Module, alpha: float = 0.5, tau: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"kd_alpha must be in [0, 1], got {alpha}")
        if tau <= 0:
            raise ConfigError(f"kd_tau must be positive, got {tau}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.tau, self.label_smoothing = alpha, tau, label_smoothing

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, student_logits: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if teacher_logits.shape != student_logits.shape:
            raise ConfigError(f"the teacher gives {list(teacher_logits.shape)} logits but the student "
                              f"{list(student_logits.shape)}; build the teacher for the same classes")
        return distillation_loss(student_logits, teacher_logits, target, self.alpha, self.tau, self.label_smoothing)


def build_teacher(name: str, checkpoint: str, num_classes: int, model_args: Optional[dict] = None,
                  student_cfg=None) -> nn.Module:
    """The registered model ``name`` with the weights in ``checkpoint`` (this project's checkpoint —
    EMA weights preferred, converted or not — or any layout ``load_weights`` reads), frozen, in eval.

    ``model_args`` default to the ones stored in this project's checkpoint. With ``student_cfg`` (the
    student's ``pretrained_cfg``) the teacher must expect the same input (size, mean, std): it sees the
    student's batches.
    """
    from graphs.models import create_model, load_weights
    from graphs.models.weights import read_weight_file

    if not checkpoint:
        raise ConfigError("loss 'distill' needs teacher_checkpoint: the teacher's trained weights")
    obj = read_weight_file(checkpoint)
    args = dict(model_args if model_args is not None else obj.get("model_args") or {})
    teacher = create_model(name, num_classes=num_classes, converted=bool(obj.get("converted", False)), **args)
    load_weights(teacher, obj)
    if student_cfg is not None:
        for key in ("input_size", "mean", "std"):
            a, b = getattr(teacher.pretrained_cfg, key), getattr(student_cfg, key)
            if (tuple(a) if a else a) != (tuple(b) if b else b):
                raise ConfigError(f"the teacher {name!r} expects {key} {a} but the student's data uses {b}; "
                                  f"pick a teacher trained on the same input")
    return teacher.eval().requires_grad_(False)
