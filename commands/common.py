"""Loading a checkpoint (this project's, or plain / official weights) for the non-training commands."""
import os
from typing import Optional, Tuple

from graphs.models import load_weights
from utils.checkpoint import load_checkpoint
from utils.errors import CheckpointError

__all__ = ["load_for_eval", "load_if_available", "input_size"]


def _checkpoint_manager(ctx):
    from engine.checkpoint import CheckpointManager
    return CheckpointManager(ctx.dirs.checkpoints)


def load_for_eval(ctx, path: Optional[str] = None) -> str:
    """Load ``path`` (default: ``checkpoint``, else the experiment's best/last, else the ``pretrained``
    weights the agent loaded) into ``ctx.model``; returns the path.

    A training checkpoint of this project is checked against the config (a converted one rebuilds the
    model in converted form) and kept as ``ctx.loaded_checkpoint`` (its class names); any other file
    goes through ``load_weights`` (every known layout)."""
    manager = _checkpoint_manager(ctx)
    try:
        path = manager.eval_path(path or ctx.config.checkpoint)
    except CheckpointError:
        if ctx.pretrained:
            return ctx.pretrained
        raise
    state = None
    if not path.endswith(".pdparams"):
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            state = None
    if state is None:  # plain or foreign weights
        load_weights(ctx.model, path, prefer_ema=ctx.config.use_ema_weights)
        return path
    if bool(state.get("converted")) != ctx.model.is_converted:
        ctx.model = ctx.build_model(converted=bool(state.get("converted")))
    manager.check_compatible(state, path, ctx.config.model, ctx.config.model_args, ctx.model.is_converted,
                             ctx.num_classes)
    weights = state["ema"] if ctx.config.use_ema_weights and state.get("ema") else state["model"]
    load_weights(ctx.model, weights)
    ctx.loaded_checkpoint = state
    return path


def load_if_available(ctx) -> Optional[str]:
    """Load the given or the experiment's checkpoint; without one, warn that the weights are random."""
    try:
        return load_for_eval(ctx)
    except CheckpointError:
        if ctx.config.checkpoint:
            raise
        ctx.logger.warning(f"no checkpoint in {ctx.dirs.checkpoints} and none given: the weights are RANDOM "
                           f"(untrained); pass --checkpoint PATH for real predictions")
        return None


def input_size(ctx) -> Tuple[int, int, int]:
    """(C, H, W) of the model's input: its pretrained_cfg, or ``input_size`` from the config."""
    size = tuple(ctx.model.pretrained_cfg.input_size)
    return (size[0], ctx.config.input_size, ctx.config.input_size) if ctx.config.input_size else size


def out_path(ctx, name: str) -> str:
    return os.path.join(ctx.dirs.out, name)
