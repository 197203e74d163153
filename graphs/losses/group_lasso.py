"""Group-lasso regulariser of CondenseNet: the sum of every layer's ``lasso_term()``."""
import torch


def group_lasso(model):
    """Sum of ``m.lasso_term()`` over the modules of ``model`` that define it (0-dim zero if none)."""
    total = None
    for m in model.modules():
        fn = getattr(m, "lasso_term", None)
        if callable(fn):
            term = fn()
            total = term if total is None else total + term
    if total is None:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return total
