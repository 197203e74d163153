"""Classification networks as multi-scale detection backbones (the body under an FPN).

A body is the network's ``features`` Sequential cut after the deepest tapped stage: torchvision's
``IntermediateLayerGetter`` keeps the children up to the last returned one, so the classifier head
(pool, SE, fc, classifier) is neither run nor held (no unused parameters under DDP). Stages and
channels are the :func:`~graphs.models.features.feature_stages` of the model's ``feature_info`` (this
project's models) or, for the torchvision baselines (MobileNetV2/V3, ShuffleNetV2: the comparison rows of
the CondenseNetV2 README's COCO table), of one probing pass that records each child's output stride
(:func:`~graphs.models.features.probe_feature_info`), as for the Python API's ``FeatureExtractor``.

``trainable_backbone_layers`` counts stages from the deepest, as torchvision's
``_resnet_fpn_extractor`` / ``_mobilenet_extractor`` do: stage i holds the children after stage
i-1's tap up to and including its own (the stem belongs to stage 1); with k trainable layers the
first ``num_stages - k`` stages get ``requires_grad=False``. Frozen BN replaces every BatchNorm2d
by ``torchvision.ops.FrozenBatchNorm2d`` with the same statistics and affine parameters
(torchvision's ``norm_layer=FrozenBatchNorm2d if is_trained``).
"""
from collections import OrderedDict
from typing import Optional, Union

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from graphs.models import create_model, list_models, load_weights
from graphs.models.features import feature_stages, probe_feature_info
from graphs.models.pretrained import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from utils.errors import ConfigError, closest


# Families of this project usable as ImageNet-stride backbones (training-time and converted forms).
PROJECT_BACKBONES = ("cdnv2_a", "cdnv2_b", "cdnv2_c", "condensenet_74_g4", "condensenet_74_g8",
                     "rexnet_0_9", "rexnet_1_0", "rexnet_1_3", "rexnet_1_5", "rexnet_2_0", "rexnet_3_0",
                     "rexnet_lite_1_0", "rexnet_lite_1_3", "rexnet_lite_1_5", "rexnet_lite_2_0")
# torchvision baselines: name -> builder; no weights are downloaded (load a file with backbone_weights).
TORCHVISION_BACKBONES = {
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    "shufflenet_v2_x0_5": torchvision.models.shufflenet_v2_x0_5,
    "shufflenet_v2_x1_0": torchvision.models.shufflenet_v2_x1_0,
    "shufflenet_v2_x1_5": torchvision.models.shufflenet_v2_x1_5,
}
_TORCHVISION_TYPES = (torchvision.models.MobileNetV2, torchvision.models.MobileNetV3,
                      torchvision.models.ShuffleNetV2)


def list_backbones() -> list:
    """Names accepted as ``backbone`` by :func:`graphs.detection.create_detector`."""
    return sorted(PROJECT_BACKBONES) + sorted(TORCHVISION_BACKBONES)


class Backbone:
    """A classification network prepared for detection: its ``features`` Sequential and its stages.

    ``stages``: ``[dict(child=name, reduction=r, num_chs=c)]`` ordered by depth, one per output
    stride (the deepest child at that stride). ``flops_rule``/``data_cfg`` describe the source model.
    """

    def __init__(self, name: str, features: nn.Sequential, stages: list, flops_rule: str, data_cfg: dict,
                 is_converted: bool):
        self.name, self.features, self.stages = name, features, stages
        self.flops_rule, self.data_cfg, self.is_converted = flops_rule, data_cfg, is_converted

    @property
    def reductions(self) -> list:
        return [s["reduction"] for s in self.stages]


def _stages(name: str, features: nn.Sequential, info: list) -> list:
    """The feature stages of ``info`` as children of ``features``: ``[dict(child, reduction, num_chs)]``."""
    children = dict(features.named_children())
    stages = []
    for entry in feature_stages(info):
        prefix, _, child = entry["module"].partition(".")
        if prefix != "features" or child not in children:
            raise ConfigError(f"{name}.feature_info names {entry['module']!r}, which is not a child of its "
                              f"features Sequential, so it cannot be a detection backbone")
        stages.append(dict(child=child, reduction=entry["reduction"], num_chs=entry["num_chs"]))
    return stages


def _torchvision_features(model: nn.Module) -> nn.Sequential:
    if isinstance(model, torchvision.models.ShuffleNetV2):
        # ShuffleNetV2 has no features Sequential; its forward is conv1, maxpool, stage2-4, conv5, pool.
        return nn.Sequential(OrderedDict((n, getattr(model, n)) for n in
                                         ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")))
    return model.features


def load_backbone(backbone: Union[str, nn.Module], converted: bool = False,
                  weights: Union[None, str, dict] = None) -> Backbone:
    """Build (or take) a classification model and describe its stages.

    ``backbone``: a name of :func:`list_backbones` or an already-built model (this project's, or a
    torchvision MobileNetV2/V3 / ShuffleNetV2). ``weights``: a path or state dict loaded with
    ``graphs.models.load_weights`` (strict) before the body is cut. ``converted`` builds the
    deployable CondenseNet form (ReXNet and torchvision models have none).
    """
    if isinstance(backbone, str):
        name = backbone
        if name in TORCHVISION_BACKBONES:
            if converted:
                raise ConfigError(f"{name} has no converted (deployment) form; set converted to false")
            model = TORCHVISION_BACKBONES[name](weights=None)
        elif name in list_models():
            model = create_model(name, converted=converted)
        else:
            valid = list_backbones()
            raise ConfigError(f"unknown backbone {name!r}{closest(name, valid)}; valid backbones are: "
                              f"{', '.join(valid)}")
    elif isinstance(backbone, nn.Module):
        model, name = backbone, type(backbone).__name__
    else:
        raise ConfigError(f"backbone must be a model name or an nn.Module, got {type(backbone).__name__}")
    if weights is not None:
        load_weights(model, weights)
    if isinstance(model, _TORCHVISION_TYPES):
        features = _torchvision_features(model)
        return Backbone(name, features, _stages(name, features, probe_feature_info(features)), "macs",
                        dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD), False)
    info = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)) or not info or not isinstance(getattr(model, "features", None),
                                                                         nn.Sequential):
        raise ConfigError(f"{name} is a classification-only model (it has no feature_info over a "
                          f"features Sequential) and cannot be a detection backbone; use one of "
                          f"{', '.join(list_backbones())}")
    stages = _stages(name, model.features, info)
    cfg = model.pretrained_cfg
    norm = dict(mean=cfg.mean or IMAGENET_DEFAULT_MEAN, std=cfg.std or IMAGENET_DEFAULT_STD)
    return Backbone(name, model.features, stages, model.flops_rule, norm, model.is_converted)


def check_reductions(backbone: Backbone, reductions) -> list:
    """``reductions`` as a sorted list of strides the backbone has (ConfigError otherwise)."""
    try:
        reds = [int(r) for r in reductions]
    except (TypeError, ValueError):
        raise ConfigError(f"fpn_reductions must be a list of integers, got {reductions!r}") from None
    if not reds or sorted(set(reds)) != reds:
        raise ConfigError(f"fpn_reductions must be increasing strides without repeats, got {list(reductions)}")
    missing = [r for r in reds if r not in backbone.reductions]
    if missing:
        raise ConfigError(f"backbone {backbone.name} has no feature map at stride {missing[0]} (it has "
                          f"{backbone.reductions}; a CIFAR-stem model ends at stride 8 or less), so it "
                          f"cannot feed fpn_reductions {reds}")
    return reds


def resolve_trainable_layers(trainable: Optional[int], is_trained: bool, num_stages: int) -> int:
    """torchvision's ``_validate_trainable_layers``: all stages train without pretrained weights."""
    if not is_trained:
        if trainable is not None and trainable != num_stages:
            import warnings
            warnings.warn(f"trainable_backbone_layers={trainable} has no effect without backbone weights; "
                          f"all {num_stages} backbone stages are trained")
        return num_stages
    trainable = 3 if trainable is None else trainable
    if not (isinstance(trainable, int) and 0 <= trainable <= num_stages):
        raise ConfigError(f"trainable_backbone_layers must be an integer in [0, {num_stages}], got {trainable!r}")
    return trainable


def freeze_stages(backbone: Backbone, trainable: int, last_child: str) -> None:
    """``requires_grad=False`` for the children of the first ``num_stages - trainable`` stages."""
    n_frozen = len(backbone.stages) - trainable
    if n_frozen <= 0:
        return
    boundary = backbone.stages[n_frozen - 1]["child"]
    for child, module in backbone.features.named_children():
        module.requires_grad_(False)
        if child == boundary or child == last_child:
            break


def frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d under ``module`` by a FrozenBatchNorm2d with its statistics (in place)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                with torch.no_grad():
                    if child.affine:
                        frozen.weight.copy_(child.weight)
                        frozen.bias.copy_(child.bias)
                    if child.track_running_stats:
                        frozen.running_mean.copy_(child.running_mean)
                        frozen.running_var.copy_(child.running_var)
                ref = child.running_mean if child.running_mean is not None else child.weight
                if ref is not None:
                    frozen.to(ref.device)
                setattr(parent, name, frozen)
    return module
