"""Model zoo: ``create_model(name, num_classes=..., converted=...)``, ``list_models()``, ``load_weights``.

Importing this package registers every family (DenseNet-BC, CondenseNet, CondenseNetV2, ReXNet): each
variant of its table with a builder and a ``pretrained_cfg``.
"""
from .base import ClassifierModel, ModelBase  # noqa: F401
from .registry import create_model, get_pretrained_cfg, list_models, register_variant  # noqa: F401
from .weights import load_weights  # noqa: F401
from . import densenet, condensenet, condensenetv2, rexnet  # noqa: F401,E402  (register the families)

FAMILIES = {"densenet": "densenet_bc_*", "condensenet": "condensenet_*", "condensenetv2": "cdnv2_*",
            "rexnet": "rexnet_[0-9]*", "rexnet_lite": "rexnet_lite_*"}
