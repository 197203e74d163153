"""torchvision Faster R-CNN / RetinaNet / FCOS over a backbone + FPN (``create_detector``).

Detector heads, FPN and losses are torchvision's (``torchvision.models.detection``); only the body and
the anchors are chosen here, after the mmdetection 1x settings the CondenseNetV2 README's COCO table
used (its detection code was not released):

- Faster R-CNN: FPN on the tapped strides plus a max-pooled extra level (torchvision's
  ``LastLevelMaxPool``, mmdet's ``num_outs`` extra level), one anchor size per level of 8 x stride
  (mmdet ``scales=[8]``; torchvision's 32..512 on strides 4..64), ratios 0.5/1/2, RoIAlign 7x7 over
  the tapped levels only (mmdet ``featmap_strides``).
- RetinaNet: P6/P7 by stride-2 convs on C5 (torchvision ``LastLevelP6P7``, mmdet
  ``add_extra_convs='on_input'``), anchors 4 x stride x 2^{0, 1/3, 2/3} (``octave_base_scale=4``,
  ``scales_per_octave=3``), ratios 0.5/1/2.
- FCOS: P6/P7 from P5, one point per location of size stride (torchvision ``fcos_resnet50_fpn``).

Labels: the detectors see labels 1..K (``num_classes`` = K object categories); label 0 is
background for Faster R-CNN and unused for RetinaNet/FCOS, so one data set mapping fits all three.
"""
from typing import Optional, Sequence, Union

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from graphs.layers.efficient import set_memory_efficient
from graphs.layers.lgc import CondensingModule, stage_for_progress
from utils.errors import ConfigError

from .backbones import (check_reductions, freeze_stages, frozen_batchnorm, load_backbone,
                        resolve_trainable_layers)

ARCHS = ("fasterrcnn", "retinanet", "fcos")


class BackboneFPN(BackboneWithFPN):
    """torchvision's BackboneWithFPN plus the CondenseNet hooks (condensation progress, memory mode)."""

    def __init__(self, features, return_layers, in_channels_list, out_channels, extra_blocks, *,
                 name, reductions, is_converted):
        super().__init__(features, return_layers, in_channels_list, out_channels, extra_blocks=extra_blocks)
        self.backbone_name, self.reductions, self.is_converted = name, list(reductions), is_converted
        self._condensing = [m for m in self.body.modules() if isinstance(m, CondensingModule)]

    def set_progress(self, progress: float) -> int:
        """Official condensation schedule of every learned group conv / SFR in the body (host-side)."""
        return sum(m.advance(stage_for_progress(progress, m.condense_factor)) for m in self._condensing)


class _DetectorMixin:
    """What the trainer needs beyond torchvision's API (the CondenseNet Protocol on a detector)."""

    @property
    def capabilities(self) -> frozenset:
        """``condense``: the body holds training-time CondenseNet layers that prune on a schedule."""
        return frozenset({"condense"} if self.backbone._condensing else ())

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def set_progress(self, progress: float) -> int:
        """Forward the training progress in [0, 1] to the backbone; returns the pruning events applied."""
        return self.backbone.set_progress(progress)

    def set_memory_efficient(self, enabled: bool = True):
        set_memory_efficient(self.backbone.body, enabled)
        return self

    @property
    def is_converted(self) -> bool:
        return self.backbone.is_converted

    def condensing_modules(self) -> list:
        return list(self.backbone._condensing)

    def sync_condensation_state(self) -> None:
        """Refresh every body layer's host-side stage from its buffers (after masks were copied in)."""
        for m in self.backbone._condensing:
            m.sync_from_buffers()


class FasterRCNNDetector(_DetectorMixin, FasterRCNN):
    pass


class RetinaNetDetector(_DetectorMixin, RetinaNet):
    pass


class FCOSDetector(_DetectorMixin, FCOS):
    pass


def create_detector(arch: str = "fasterrcnn", backbone: Union[str, nn.Module] = "cdnv2_a", num_classes: int = 80,
                    min_size: Union[int, Sequence[int]] = 800, max_size: int = 1333,
                    trainable_backbone_layers: Optional[int] = None, converted: bool = False,
                    fpn_reductions: Sequence[int] = (8, 16, 32), backbone_weights: Union[None, str, dict] = None,
                    frozen_bn: Optional[bool] = None, fpn_channels: int = 256, **detector_kwargs) -> nn.Module:
    """A torchvision detector with a backbone of this project (or a torchvision baseline).

    Args:
        arch: 'fasterrcnn', 'retinanet' or 'fcos'.
        backbone: a name of ``list_backbones()`` or a built classification model.
        num_classes: object categories K (labels 1..K; background is added inside).
        min_size, max_size: the detector's resize (torchvision ``GeneralizedRCNNTransform``; a tuple
            of min sizes picks one at random per training batch).
        trainable_backbone_layers: stages trained counting from the deepest (default 3 with
            backbone weights; without weights every stage trains, as in torchvision).
        converted: the deployable CondenseNet backbone.
        fpn_reductions: backbone strides feeding the FPN.
        backbone_weights: a path or state dict of the classification model (``load_weights``).
        frozen_bn: FrozenBatchNorm2d in the backbone (default: when backbone weights are given).
        detector_kwargs: passed to the torchvision detector (e.g. ``box_detections_per_img``).
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown detector {arch!r}; use one of {', '.join(ARCHS)}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"num_classes must be a positive integer (object categories), got {num_classes!r}")
    bb = load_backbone(backbone, converted=converted, weights=backbone_weights)
    reds = check_reductions(bb, fpn_reductions)
    is_trained = backbone_weights is not None or not isinstance(backbone, str)
    trainable = resolve_trainable_layers(trainable_backbone_layers, is_trained, len(bb.stages))
    taps = [next(s for s in bb.stages if s["reduction"] == r) for r in reds]
    freeze_stages(bb, trainable, taps[-1]["child"])
    if frozen_bn if frozen_bn is not None else is_trained:
        frozen_batchnorm(bb.features)
    names = [str(i) for i in range(len(taps))]
    if arch == "fasterrcnn":
        extra = LastLevelMaxPool()
    elif arch == "retinanet":
        extra = LastLevelP6P7(taps[-1]["num_chs"], fpn_channels)
    else:
        extra = LastLevelP6P7(fpn_channels, fpn_channels)
    body = BackboneFPN(bb.features, {s["child"]: n for s, n in zip(taps, names)},
                       [s["num_chs"] for s in taps], fpn_channels, extra,
                       name=bb.name, reductions=reds, is_converted=bb.is_converted)
    levels = reds + [reds[-1] * 2] + ([reds[-1] * 4] if arch != "fasterrcnn" else [])
    common = dict(min_size=min_size, max_size=max_size, image_mean=list(bb.data_cfg["mean"]),
                  image_std=list(bb.data_cfg["std"]), **detector_kwargs)
    if arch == "fasterrcnn":
        anchors = AnchorGenerator(tuple((8 * s,) for s in levels), ((0.5, 1.0, 2.0),) * len(levels))
        roi = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
        model = FasterRCNNDetector(body, num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=roi,
                                   **common)
    elif arch == "retinanet":
        sizes = tuple(tuple(int(4 * s * 2 ** (i / 3)) for i in range(3)) for s in levels)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(levels))
        model = RetinaNetDetector(body, num_classes + 1, anchor_generator=anchors, **common)
    else:
        anchors = AnchorGenerator(tuple((s,) for s in levels), ((1.0,),) * len(levels))
        model = FCOSDetector(body, num_classes + 1, anchor_generator=anchors, **common)
    model.arch, model.backbone_name, model.num_object_classes = arch, bb.name, num_classes
    model.backbone_flops_rule = bb.flops_rule
    return model



# Config keys (declared in configs/schema.json) -> create_detector arguments.
CONFIG_KEYS = ("detector", "min_size", "max_size", "trainable_backbone_layers", "converted", "fpn_reductions",
               "fpn_channels", "frozen_bn", "detections_per_image")


def check_image_sizes(config) -> None:
    if not config.min_size or config.max_size < max(config.min_size):
        raise ConfigError(f"max_size ({config.max_size}) must be at least every min_size ({config.min_size})")


def detector_from_config(config, num_classes: int, backbone: Union[None, str, nn.Module] = None,
                         backbone_weights: Union[None, str, dict] = None) -> nn.Module:
    """``create_detector`` from a resolved config (``model`` names the backbone unless one is given built).

    ``backbone_weights`` is what the pretrained machinery resolved ``backbone_pretrained`` to (a path or
    state dict); ``frozen_bn: null`` and ``trainable_backbone_layers: null`` follow torchvision's defaults.
    """
    arch = config.detector
    per_image = "box_detections_per_img" if arch == "fasterrcnn" else "detections_per_img"   # torchvision's names
    return create_detector(
        arch=arch, backbone=backbone if backbone is not None else config.model, num_classes=num_classes,
        min_size=tuple(config.min_size), max_size=config.max_size,
        trainable_backbone_layers=config.trainable_backbone_layers, converted=config.converted,
        fpn_reductions=tuple(config.fpn_reductions), backbone_weights=backbone_weights, frozen_bn=config.frozen_bn,
        fpn_channels=config.fpn_channels, **{per_image: config.detections_per_image})
