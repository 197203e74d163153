"""``--mode visualize``: training curves from metrics.csv and the CondenseNets' feature-reuse heatmaps."""
import os
from typing import List

from utils.errors import ConfigError

from .common import load_for_eval, out_path


def visualize(ctx) -> List[str]:
    from .plots import plot_reuse_heatmaps, plot_training_curves
    paths = []
    if os.path.exists(ctx.dirs.metrics):
        paths.append(plot_training_curves(ctx.dirs.metrics, out_path(ctx, "training_curves.png")))
    if ctx.model.supports("reuse_maps"):
        path = load_for_eval(ctx)
        paths += plot_reuse_heatmaps(ctx.model.reuse_matrices(), ctx.dirs.out,
                                     title_prefix=f"{ctx.config.model} ({os.path.basename(path)})")
    if not paths:
        raise ConfigError(f"nothing to draw for {ctx.config.exp_name}: no metrics.csv yet (train first) and "
                          f"model {ctx.config.model!r} has no feature-reuse heatmap")
    for p in paths:
        ctx.logger.info(f"wrote {p}")
    return paths
