"""One module per command; each is a function of the agent's :class:`Context` that the CLI dispatches to.

    validate   top-1/top-5 of a checkpoint, per-class CSV, confusion matrix
    convert    condensed CondenseNet -> standard group-convolution checkpoint
    flops      params and FLOPs under the papers' counting rules
    export     ONNX (+ onnxruntime parity) and TorchScript of the deployable model
    benchmark  latency, throughput, training step and peak memory
    predict    top-5 classes of image files
    visualize  training curves and feature-reuse heatmaps

``deploy.forms.deployable`` is the one place that turns any model into its deployment form.
"""
from typing import List, Optional, Protocol, Tuple

import torch
from torch import nn

from .benchmark import benchmark
from .convert import convert
from .export import export
from .flops import flops
from .predict import predict
from .validate import validate
from .visualize import visualize

__all__ = ["Context", "COMMANDS"]


class Context(Protocol):
    """What a command uses of the agent that runs it."""

    config: object                  # the resolved, read-only config (utils.config.Settings)
    device: torch.device
    dist: object                    # utils.distributed.DistContext
    dirs: object                    # experiment folders (utils.experiment.experiment_dirs)
    logger: object
    model: nn.Module
    num_classes: int
    pretrained: Optional[str]       # the pretrained weight file the agent loaded, if any
    source: Optional[Tuple[str, Optional[dict]]]    # the checkpoint a mode evaluates: (path, state or None)
    eval_cfg: object                # graphs.models.pretrained.PretrainedCfg with the eval transform in force
    loaded_checkpoint: Optional[dict]   # the training checkpoint a command loaded, if any

    @property
    def loaders(self) -> Tuple[object, object]: ...

    def build_model(self, converted: bool = False) -> nn.Module: ...

    def checkpoint_meta(self, converted: bool = False) -> dict: ...

    def class_names(self) -> List[str]: ...


COMMANDS = {"validate": validate, "convert": convert, "flops": flops, "visualize": visualize,
            "predict": predict, "export": export, "benchmark": benchmark}
