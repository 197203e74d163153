"""Detection: this project's backbones (and torchvision baselines) under torchvision's detectors.

    model = create_detector("fasterrcnn", "cdnv2_a", num_classes=80, min_size=800, max_size=1333)
    losses = model(images, targets)          # train mode: dict of losses
    outputs = model(images)                  # eval mode: [dict(boxes, labels, scores)]
    model.set_progress(epoch_progress)       # CondenseNet condensation schedule (host-side)
"""
from .backbones import list_backbones, load_backbone  # noqa: F401
from .detectors import ARCHS, CONFIG_KEYS, check_image_sizes, create_detector, detector_from_config  # noqa: F401
