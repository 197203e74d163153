"""Learning-rate schedules, set before every optimizer step: per iteration (the official CondenseNet/V2
code) or once per epoch (timm's train.py, the ReXNet recipe)."""
import math

from utils.config import LR_STEPS
from utils.errors import ConfigError


def check_schedule(config) -> None:
    """Refuse a warmup, floor or milestones that contradict the schedule (one sentence each)."""
    if config.warmup_epochs >= config.max_epoch and config.warmup_epochs > 0:
        raise ConfigError(f"warmup_epochs ({config.warmup_epochs}) must be shorter than max_epoch "
                          f"({config.max_epoch})")
    if config.warmup_iters and config.lr_step == "epoch":
        raise ConfigError("warmup_iters counts optimizer steps, but lr_step 'epoch' changes the lr once per epoch; "
                          "set warmup_epochs instead, or lr_step 'iter'")
    if config.warmup_iters and config.warmup_epochs:
        raise ConfigError("warmup_iters and warmup_epochs both set a warmup; set one of them to 0")
    if config.min_lr and (config.lr_schedule != "cosine" or config.min_lr > config.lr):
        raise ConfigError(f"min_lr ({config.min_lr}) is the floor of the cosine schedule and must not exceed "
                          f"lr ({config.lr})")
    if config.lr_schedule == "multistep" and sorted(config.lr_milestones) != config.lr_milestones:
        raise ConfigError(f"lr_milestones must be increasing, got {config.lr_milestones}")


class LRSchedule:
    """``lr_at(step)`` for cosine (optional linear warmup) or multistep decay.

    cosine:    lr = min_lr + 0.5 * (lr0 - min_lr) * (1 + cos(pi * x))              for t >= W
    warmup:    lr = warmup_lr + (lr0 - warmup_lr) * t / W            for t < W
    multistep: lr = lr0 * gamma ** (number of milestones passed)

    ``lr_step='iter'``: t is the global iteration (optimizer step), T the total and W the warmup
    iterations (``warmup_iters``, else ``warmup_epochs`` x iterations per epoch), and the cosine starts
    after the warmup, x = (t - W) / (T - W) (the official CondenseNet/V2 schedules).
    ``lr_step='epoch'``: t is the epoch, T = ``epochs``, W = ``warmup_epochs``, so the lr is constant within
    an epoch, and x = t / T: the warmup epochs replace the start of a cosine over all epochs — timm's
    ``CosineLRScheduler`` (``warmup_prefix`` False) as train.py steps it, ``step(epoch)`` per epoch.

    ``min_lr`` is the cosine floor of timm's ``CosineLRScheduler`` (``lr_min``); 0 gives the official formula.
    A milestone m (in epochs, or m x ``epochs`` when every milestone is below 1) is passed from the first
    epoch e >= m, as the official CondenseNet's ``epoch >= args.epochs * 0.5``: the lr changes at an epoch
    boundary also when m x ``epochs`` is not a whole number.
    """

    def __init__(self, kind, base_lr, iters_per_epoch, epochs, warmup_epochs=0.0, warmup_lr=0.0,
                 milestones=(), gamma=0.1, min_lr=0.0, warmup_iters=0, lr_step="iter"):
        if lr_step not in LR_STEPS or (lr_step == "epoch" and warmup_iters):
            raise ValueError(f"lr_step must be 'iter' or 'epoch' ('iter' with warmup_iters), got {lr_step!r}")
        self.kind = kind
        self.lr_step = lr_step
        self.min_lr = min_lr
        self.base_lr = base_lr
        self.iters_per_epoch, self.epochs, self.warmup_epochs = iters_per_epoch, epochs, warmup_epochs
        self.total = iters_per_epoch * epochs
        # warmup_iters: mmdet's linear warmup counted in iterations (detection recipes)
        self.warmup = int(warmup_iters) or int(round(warmup_epochs * iters_per_epoch))
        if warmup_iters and warmup_iters >= self.total:
            raise ConfigError(f"warmup_iters ({warmup_iters}) must be shorter than the run's {self.total} optimizer "
                              f"steps ({epochs} epochs x {iters_per_epoch}); lower warmup_iters or raise max_epoch")
        self.warmup_lr = warmup_lr
        as_fraction = milestones and all(m < 1 for m in milestones)
        self.milestones = [math.ceil(m * epochs if as_fraction else m) * iters_per_epoch for m in milestones]
        self.gamma = gamma

    def lr_at(self, step):
        per_epoch = self.lr_step == "epoch"
        t = step // self.iters_per_epoch if per_epoch else step
        warmup = self.warmup_epochs if per_epoch else self.warmup
        if t < warmup:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * t / warmup
        if self.kind == "cosine":
            x = t / self.epochs if per_epoch else (t - warmup) / max(1, self.total - warmup)
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * x))
        return self.base_lr * self.gamma ** sum(step >= m for m in self.milestones)
