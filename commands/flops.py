"""``--mode flops``: params and FLOPs under the papers' counting rules (utils.flops)."""
from typing import List, Tuple

from torch import nn

from utils.flops import profile

from .common import input_size


def flops(ctx) -> List[Tuple[str, float, float]]:
    """The training-time model and, for a CondenseNet, its converted form."""
    convertible = ctx.model.supports("convert")
    rows = [("training-time" if convertible else "model", ctx.model)]
    if convertible:
        rows.append(("converted", ctx.build_model(converted=True)))
    return print_flops(ctx, rows)


def print_flops(ctx, rows: List[Tuple[str, nn.Module]]) -> List[Tuple[str, float, float]]:
    size = input_size(ctx)
    results = []
    for label, model in rows:
        n_flops, params = profile(model, size)
        results.append((label, n_flops, params))
        ctx.logger.info(f"{ctx.config.model} ({label}) at {size[1]}x{size[2]}: "
                        f"{n_flops / 1e6:.2f}M FLOPs, {params / 1e6:.4f}M params")
    return results
