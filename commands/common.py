"""Loading a checkpoint (this project's, or plain / official weights) for the non-training commands."""
import os
from typing import Optional, Tuple

import torch
from torch import nn

from graphs.models import load_weights
from utils.checkpoint import load_checkpoint
from utils.errors import CheckpointError

__all__ = ["load_for_eval", "load_if_available", "input_size", "runtime_model"]


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


class _RuntimeModel(nn.Module):
    """A deployed file (utils.runtimes.Runtime) as a module: what validate and predict run instead of
    the PyTorch model when ``runtime`` is onnxruntime or openvino."""

    def __init__(self, runtime):
        super().__init__()
        self.runtime = runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime(x.float().cpu()).to(x.device)


def runtime_model(ctx) -> Optional[nn.Module]:
    """The artifact named by ``runtime``/``runtime_artifact`` (checked against the config), or None for
    ``runtime: torch``."""
    cfg = ctx.config
    if cfg.runtime == "torch":
        return None
    from utils.runtimes import check_artifact, load_runtime
    path = cfg.runtime_artifact or out_path(ctx, f"{cfg.exp_name}.{'xml' if cfg.runtime == 'openvino' else 'onnx'}")
    rt = load_runtime(path, cfg.runtime, cfg.runtime_threads or None, cfg.runtime_precision)
    check_artifact(rt, input_size(ctx), ctx.num_classes)
    ctx.logger.info(f"running {path} on {cfg.runtime}")
    return _RuntimeModel(rt)
