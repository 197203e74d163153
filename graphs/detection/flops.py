"""Backbone FLOPs for the detection table, counted with this project's counter (``graphs.flops.profile``).

Each family is counted with its own paper's rule (the model's ``flops_rule``: 'v1' CondenseNet,
'v2' CondenseNetV2, 'macs' ReXNet and the torchvision baselines, whose papers count
multiply-accumulates) at 224 x 224, as the classification tables the detection table quotes do
("V2-A (46M)"). Two numbers per backbone: the whole classification network (comparable with the
published figures) and the detection body alone (the stages feeding the FPN, no classifier head).

Published mAPs: the CondenseNetV2 README's COCO table (mmdetection, 1x schedule). "MobileNet 1.0x"
is taken to be MobileNetV2 1.0x (the README does not say which MobileNet).
"""
from typing import Optional

from torchvision.models._utils import IntermediateLayerGetter

from graphs.models import create_model
from graphs.flops import profile

from .backbones import TORCHVISION_BACKBONES, check_reductions, load_backbone

# (detector, backbone) -> published COCO box mAP (%), CondenseNetV2 README.
PUBLISHED_MAP = {
    ("fasterrcnn", "cdnv2_a"): 23.5, ("fasterrcnn", "cdnv2_b"): 27.9, ("fasterrcnn", "cdnv2_c"): 31.4,
    ("fasterrcnn", "shufflenet_v2_x0_5"): 22.1, ("fasterrcnn", "shufflenet_v2_x1_0"): 27.4,
    ("fasterrcnn", "shufflenet_v2_x1_5"): 30.2, ("fasterrcnn", "mobilenet_v2"): 30.6,
    ("retinanet", "cdnv2_c"): 31.7, ("retinanet", "mobilenet_v2"): 29.7,
    ("retinanet", "shufflenet_v2_x1_5"): 29.1,
}
TABLE_ROWS = [("fasterrcnn", "cdnv2_a"), ("fasterrcnn", "cdnv2_b"), ("fasterrcnn", "cdnv2_c"),
              ("fasterrcnn", "shufflenet_v2_x0_5"), ("fasterrcnn", "shufflenet_v2_x1_0"),
              ("fasterrcnn", "shufflenet_v2_x1_5"), ("fasterrcnn", "mobilenet_v2"),
              ("fasterrcnn", "condensenet_74_g4"), ("fasterrcnn", "rexnet_1_0"),
              ("retinanet", "cdnv2_c"), ("retinanet", "mobilenet_v2"), ("retinanet", "shufflenet_v2_x1_5")]


def _converted_default(name: str) -> bool:
    # CondenseNets are charged as deployed (the published ImageNet CondenseNet figures are of the
    # converted network); ReXNet and torchvision models have one form only.
    return name.startswith(("cdnv2_", "condensenet_"))


def backbone_flops(name: str, input_size: int = 224, fpn_reductions=(8, 16, 32),
                   converted: Optional[bool] = None) -> dict:
    """``dict(rule, model_flops, body_flops)`` of backbone ``name`` for one ``input_size`` image."""
    converted = _converted_default(name) if converted is None else converted
    model = TORCHVISION_BACKBONES[name](weights=None) if name in TORCHVISION_BACKBONES else \
        create_model(name, converted=converted)
    bb = load_backbone(model)
    rule = bb.flops_rule
    reds = check_reductions(bb, fpn_reductions)
    taps = {s["child"]: str(i) for i, s in enumerate(bb.stages) if s["reduction"] in reds}
    body = IntermediateLayerGetter(bb.features, taps)
    model_flops, _ = profile(model, input_size=(3, input_size, input_size), rule=rule)
    body_flops, _ = profile(body, input_size=(3, input_size, input_size), rule=rule)
    return dict(rule=rule, model_flops=model_flops, body_flops=body_flops)


def table_rows(rows=TABLE_ROWS, input_size: int = 224) -> list:
    """``(detector, backbone, rule, model FLOPs, body FLOPs, published mAP)`` strings for docs/detection.md."""
    out = []
    for arch, name in rows:
        f = backbone_flops(name, input_size)
        pub = PUBLISHED_MAP.get((arch, name))
        out.append((arch, name, f["rule"], f"{f['model_flops'] / 1e6:.1f}M", f"{f['body_flops'] / 1e6:.1f}M",
                    "–" if pub is None else f"{pub:.1f}"))
    return out
