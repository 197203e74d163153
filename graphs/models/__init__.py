"""Model zoo: ``create_model(name, num_classes=..., converted=...)``, ``list_models()``, ``load_weights``.

Importing this package registers every family (DenseNet-BC, CondenseNet, CondenseNetV2, ReXNet).
"""
from .registry import create_model, list_models, register_model  # noqa: F401
from .weights import load_weights  # noqa: F401
from . import densenet, condensenet, condensenetv2, rexnet  # noqa: F401,E402  (register the families)
