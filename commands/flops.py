"""``--mode flops``: params and FLOPs under the papers' counting rules (graphs.flops)."""
from typing import List, Tuple

from torch import nn

from deploy.forms import model_forms
from graphs.flops import profile

from .common import input_size


def flops(ctx) -> List[Tuple[str, float, float]]:
    """Each form of the model: training-time, converted (CondenseNets), fused (the forms --mode benchmark times)."""
    return print_flops(ctx, model_forms(ctx.model, ctx.config.prune_classifier))


def print_flops(ctx, rows: List[Tuple[str, nn.Module]]) -> List[Tuple[str, float, float]]:
    size = input_size(ctx)
    results = []
    for label, model in rows:
        n_flops, params = profile(model, size)
        results.append((label, n_flops, params))
        ctx.logger.info(f"{ctx.config.model} ({label}) at {size[1]}x{size[2]}: "
                        f"{n_flops / 1e6:.2f}M FLOPs, {params / 1e6:.4f}M params ({params:,.0f})")
    return results
