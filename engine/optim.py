"""Optimizers by timm's names, parameter groups with the weight-decay rules, a head lr scale, and the
linear batch-size lr rule.

``sgd`` and ``adamw`` are PyTorch's own classes (what timm's ``sgd``/``adamw`` build too); ``rmsprop``
is timm's ``RMSpropTF`` (timm ``--opt rmsproptf``: epsilon inside the square root, squared average
initialised to ones, lr folded into the momentum buffer, alpha 0.9 — the TensorFlow optimizer the
EfficientNet/ReXNet-style recipes were tuned with) and ``lamb`` is timm's ``Lamb`` (You et al., 2019).
Using timm's two classes rather than re-deriving them keeps their subtle TF semantics exactly as the
recipes that name them expect.

Every group carries ``lr_scale`` (timm's param-group convention): the schedule sets
``group["lr"] = lr * group["lr_scale"]`` (:func:`set_lr`), so a head group can train faster than the
backbone.
"""
from typing import Iterable, List, Optional, Sequence

import torch
from torch import nn

from utils.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw", "rmsprop", "lamb")
WEIGHT_DECAY_MODES = ("all", "ndim2")
# defaults when opt_eps / opt_betas are null: the classes' own (timm's for rmsprop and lamb)
DEFAULT_EPS = {"adamw": 1e-8, "rmsprop": 1e-10, "lamb": 1e-6}
DEFAULT_BETAS = (0.9, 0.999)


def check_optimizer(config) -> None:
    """Refuse betas or an epsilon the configured optimizer has none of (one sentence each)."""
    betas = config.opt_betas
    if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
        raise ConfigError(f"opt_betas must be two numbers in [0, 1), got {betas}")
    if betas is not None and config.optimizer not in ("adamw", "lamb"):
        raise ConfigError(f"opt_betas applies to adamw and lamb, not {config.optimizer}")
    if config.opt_eps is not None and config.optimizer == "sgd":
        raise ConfigError("opt_eps applies to adamw, rmsprop and lamb, not sgd")


def _is_head(name: str, prefix: Optional[str]) -> bool:
    return bool(prefix) and (name == prefix or name.startswith(prefix + "."))


def param_groups(model: nn.Module, weight_decay: float, mode: str = "all", head_prefix: Optional[str] = None,
                 head_lr_scale: float = 1.0) -> List[dict]:
    """Parameter groups: [decay, no-decay] for the body, then [decay, no-decay] for the head.

    ``mode`` 'all' decays every parameter (the official CondenseNet code); 'ndim2' exempts parameters
    with fewer than 2 dimensions (BN weights/biases, conv/linear biases), as timm's
    ``param_groups_weight_decay`` does. Head parameters are those under the module named
    ``head_prefix`` (e.g. ``classifier`` or ``output``); they get ``lr_scale = head_lr_scale`` when a
    prefix is given. Empty groups are left out, so without a head prefix (or with scale 1) and mode
    'all' the result is one group. Frozen parameters are skipped.
    """
    if mode not in WEIGHT_DECAY_MODES:
        raise ConfigError(f"weight_decay_mode must be one of {', '.join(WEIGHT_DECAY_MODES)}, got {mode!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if head_prefix and not any(_is_head(n, head_prefix) for n, _ in named):
        raise ConfigError(f"the model has no parameters under {head_prefix!r}; name its classifier module "
                          f"(e.g. 'classifier' or 'output')")
    split_head = bool(head_prefix) and head_lr_scale != 1.0
    buckets = {}
    for name, p in named:
        head = split_head and _is_head(name, head_prefix)
        decay = not (mode == "ndim2" and p.ndim < 2)
        buckets.setdefault((head, decay), []).append(p)
    groups = []
    for head in (False, True):
        for decay in (True, False):
            params = buckets.get((head, decay))
            if params:
                groups.append({"params": params, "weight_decay": weight_decay if decay else 0.0,
                               "lr_scale": head_lr_scale if head else 1.0})
    return groups


def build_optimizer(groups: Iterable[dict], name: str, lr: float, momentum: float = 0.9, nesterov: bool = True,
                    eps: Optional[float] = None, betas: Optional[Sequence[float]] = None,
                    fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``groups`` (each with its own ``weight_decay``).

    ``momentum``/``nesterov`` apply to sgd (and momentum to rmsprop), ``betas`` to adamw and lamb,
    ``eps`` to adamw, rmsprop and lamb; null takes the class default (``DEFAULT_EPS``/``DEFAULT_BETAS``).
    ``fused`` (parameters on CUDA): PyTorch's fused sgd/adamw kernels, one launch for all parameters,
    which also take the fp16 GradScaler's inf check on the device instead of reading it on the host.
    """
    groups = list(groups)
    if betas is not None:
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"opt_betas must be two numbers in [0, 1), got {list(betas)}")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas or DEFAULT_BETAS,
                                 eps=DEFAULT_EPS[name] if eps is None else eps, fused=fused or None)
    if name == "rmsprop":
        from timm.optim import RMSpropTF
        return RMSpropTF(groups, lr=lr, alpha=0.9, momentum=momentum,
                         eps=DEFAULT_EPS[name] if eps is None else eps)
    if name == "lamb":
        from timm.optim import Lamb
        return Lamb(groups, lr=lr, betas=betas or DEFAULT_BETAS, eps=DEFAULT_EPS[name] if eps is None else eps)
    raise ConfigError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``group["lr"] = lr * lr_scale`` for every group (groups from an old checkpoint have no scale: 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def scaled_lr(lr: float, global_batch: int, lr_scale_batch: Optional[int]) -> float:
    """Linear scaling rule (Goyal et al., 2017; timm's ``--lr-base-size`` with ``--lr-base-scale linear``):
    ``lr * global_batch / lr_scale_batch``, where ``global_batch`` is the effective batch
    (batch_size x grad_accum_steps); ``lr`` unchanged when ``lr_scale_batch`` is null."""
    if not lr_scale_batch:
        return lr
    return lr * global_batch / lr_scale_batch
