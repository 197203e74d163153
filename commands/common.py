"""Loading a checkpoint (this project's, or plain / official weights) for the non-training commands."""
import os
from typing import Optional, Tuple

import torch
from torch import nn

from graphs.models import load_weights
from utils.errors import CheckpointError

__all__ = ["load_for_eval", "load_if_available", "input_size", "runtime_model"]


def load_for_eval(ctx) -> str:
    """Load the checkpoint the agent resolved (``--checkpoint``, else the experiment's best/last, else
    the ``pretrained`` weights the agent loaded) into ``ctx.model``; returns its path.

    A training checkpoint of this project already built the model (its arch, model_args, class count
    and form) and is kept as ``ctx.loaded_checkpoint``; any other file goes through ``load_weights``
    (every known layout)."""
    if ctx.source is None:
        if ctx.pretrained:
            return ctx.pretrained
        raise CheckpointError(f"no checkpoint given and none found in {ctx.dirs.checkpoints}; train first or pass "
                              f"--checkpoint PATH")
    path, state = ctx.source
    if state is None:  # plain or foreign weights
        load_weights(ctx.model, path, prefer_ema=ctx.config.use_ema_weights)
        return path
    weights = state["ema"] if ctx.config.use_ema_weights and state.get("ema") else state["model"]
    load_weights(ctx.model, weights)
    ctx.loaded_checkpoint = state
    return path


def load_if_available(ctx) -> Optional[str]:
    """Load the given or the experiment's checkpoint; without one, warn that the weights are random."""
    if ctx.source is None and not ctx.pretrained:
        ctx.logger.warning(f"no checkpoint in {ctx.dirs.checkpoints} and none given: the weights are RANDOM "
                           f"(untrained); pass --checkpoint PATH for real predictions")
        return None
    return load_for_eval(ctx)


def input_size(ctx) -> Tuple[int, int, int]:
    """(C, H, W) of the model's input: the eval transform's (checkpoint, config, model's pretrained_cfg)."""
    return tuple(ctx.eval_cfg.input_size)


def out_path(ctx, name: str) -> str:
    return os.path.join(ctx.dirs.out, name)


class _RuntimeModel(nn.Module):
    """A deployed file (deploy.runtime.Runtime) as a module: what validate and predict run instead of
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
    from deploy.runtime import check_artifact, load_runtime
    path = cfg.runtime_artifact or out_path(ctx, f"{cfg.exp_name}.{'xml' if cfg.runtime == 'openvino' else 'onnx'}")
    rt = load_runtime(path, cfg.runtime, cfg.runtime_threads or None, cfg.runtime_precision)
    check_artifact(rt, input_size(ctx), ctx.num_classes)
    ctx.logger.info(f"running {path} on {cfg.runtime}")
    return _RuntimeModel(rt)
