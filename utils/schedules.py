"""Learning-rate schedules, evaluated per iteration (as the official CondenseNet/V2 code does)."""
import math


class LRSchedule:
    """``lr_at(step)`` for cosine (optional linear warmup) or multistep decay.

    cosine:    lr = min_lr + 0.5 * (lr0 - min_lr) * (1 + cos(pi * (t - W) / (T - W)))   after warmup (t >= W)
    warmup:    lr = warmup_lr + (lr0 - warmup_lr) * t / W            for t < W
    multistep: lr = lr0 * gamma ** (number of milestones passed)
    with t the global iteration (optimizer step), T the total and W the warmup iterations (``warmup_iters``,
    else ``warmup_epochs`` x iterations per epoch). ``min_lr`` is
    the cosine floor of timm's ``CosineLRScheduler`` (``lr_min``); 0 gives the official formula.
    A milestone m (in epochs, or m x ``epochs`` when every milestone is below 1) is passed from the first
    epoch e >= m, as the official CondenseNet's ``epoch >= args.epochs * 0.5``: the lr changes at an epoch
    boundary also when m x ``epochs`` is not a whole number.
    """

    def __init__(self, kind, base_lr, iters_per_epoch, epochs, warmup_epochs=0.0, warmup_lr=0.0,
                 milestones=(), gamma=0.1, min_lr=0.0, warmup_iters=0):
        self.kind = kind
        self.min_lr = min_lr
        self.base_lr = base_lr
        self.total = iters_per_epoch * epochs
        # warmup_iters: mmdet's linear warmup counted in iterations (detection recipes)
        self.warmup = int(warmup_iters) or int(round(warmup_epochs * iters_per_epoch))
        self.warmup_lr = warmup_lr
        as_fraction = milestones and all(m < 1 for m in milestones)
        self.milestones = [math.ceil(m * epochs if as_fraction else m) * iters_per_epoch for m in milestones]
        self.gamma = gamma

    def lr_at(self, step):
        if step < self.warmup:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * step / self.warmup
        if self.kind == "cosine":
            t = (step - self.warmup) / max(1, self.total - self.warmup)
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t))
        return self.base_lr * self.gamma ** sum(step >= m for m in self.milestones)
