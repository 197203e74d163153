"""``--mode convert``: a condensed CondenseNet/V2 checkpoint -> the standard group-convolution model."""
import os

from torch import nn

from engine.checkpoint import save_checkpoint
from utils.errors import ConfigError

from .common import load_for_eval
from .flops import print_flops


def convert(ctx) -> nn.Module:
    """Write ``checkpoints/converted.pth`` and print the FLOPs/params of both forms."""
    if not ctx.model.supports("convert"):
        raise ConfigError(f"model {ctx.config.model!r} has no converted form; convert applies to CondenseNets")
    path = load_for_eval(ctx)
    converted = ctx.model.convert(prune_classifier=ctx.config.prune_classifier).eval()
    out = os.path.join(ctx.dirs.checkpoints, "converted.pth")
    state = {**ctx.checkpoint_meta(converted=True), "model": converted.state_dict(), "epoch": 0, "batch": 0,
             "global_step": 0, "source": path}
    if ctx.dist.is_main:
        save_checkpoint(state, out)
    ctx.logger.info(f"converted {path} -> {out}")
    print_flops(ctx, [("training-time", ctx.model), ("converted", converted)])
    return converted
