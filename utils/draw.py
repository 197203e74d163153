"""Draw detections (boxes, class names, scores) onto an image and save it as a PNG, atomically."""
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.atomic_io import atomic_write

# Distinct colours for the classes (tab10), cycled.
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def to_pil(image) -> Image.Image:
    """A PIL RGB image from a PIL image, a (3, H, W) float tensor in [0, 1] or uint8, or an HWC array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = _numpy(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(a, "RGB")


def draw_detections(image, boxes, labels, scores, class_names: Sequence[str], path: str,
                    score_threshold: float = 0.0, label_offset: int = 1) -> Optional[str]:
    """Draw x1y1x2y2 ``boxes`` with ``class_names[label - label_offset]`` and the score; write ``path``.

    ``label_offset`` 1 is the detectors' convention (label 0 = background). Boxes under
    ``score_threshold`` are left out. The PNG appears complete or not at all. Returns ``path``.
    """
    img = to_pil(image).copy()
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for box, label, score in zip(_numpy(boxes).reshape(-1, 4).tolist(), _numpy(labels).tolist(),
                                 _numpy(scores).tolist()):
        if score < score_threshold:
            continue
        k = int(label) - label_offset
        name = class_names[k] if 0 <= k < len(class_names) else f"class {int(label)}"
        colour = _PALETTE[k % len(_PALETTE)]
        x1, y1, x2, y2 = box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text = f"{name} {score:.2f}"
        tx, ty = x1, max(0.0, y1 - 11)
        left, top, right, bottom = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
        draw.text((tx, ty), text, fill=(255, 255, 255), font=font)
    return atomic_write(path, lambda f: img.save(f, format="PNG"), "detection image")
