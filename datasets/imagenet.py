"""ImageNet-style folders: ``<data_root>/{train,val}/<class>/<image>`` (torchvision ImageFolder rules).

Sorted class folder names give the class index; ``class_names`` are the folder names (wnids). With
exactly 1000 wnid folders, ``readable_class_names`` also gives the ImageNet-1k category names in the
same (standard) order, from torchvision's bundled metadata.
Train: RandomResizedCrop(size, scale 0.08-1, train_interpolation 'bilinear'|'bicubic'|'random'), flip
(hflip), optional timm RandAugment/AutoAugment (auto_augment) -> uint8 tensors from the workers;
normalisation on the device, then timm RandomErasing (reprob, remode) on the normalised batch.
Eval: Resize(int(size / crop_pct)) + CenterCrop(size) with the model's (or the config's) crop_pct and
interpolation.
"""
import os
import re

from utils.errors import DataError

# ImageNet's per-channel statistics: the normalisation of ImageNet-style data (imagenet, folder) when the
# model's pretrained_cfg gives none (torchvision's and timm's values)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_WNID = re.compile(r"^n\d{8}$")


def load_split(root, split):
    """(samples [(path, class_index)], class_names) of ``root/split``, ImageFolder-style."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    folder = os.path.join(os.path.expanduser(str(root)), split)
    if not os.path.isdir(folder):
        raise DataError(f"image folder {folder} does not exist; put the {split} images there as "
                        f"{split}/<class>/<image> or fix data_root")
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError:
        classes, samples = [], []
    if not samples:
        raise DataError(f"image folder {folder} holds no images (expected {split}/<class>/<image> with "
                        f"extensions {', '.join(IMG_EXTENSIONS[:4])}, ...); put the images there or fix data_root")
    return samples, classes


def imagenet1k_names():
    """The ImageNet-1k category names in the standard (sorted wnid) order, from torchvision's metadata."""
    try:
        from torchvision.models import ResNet50_Weights
        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:  # very old/new torchvision without the metadata: names stay the wnids
        return None


def readable_names(class_names):
    """ImageNet-1k category names for the 1000 standard wnid folders, else None."""
    if len(class_names) != 1000 or not all(_WNID.match(c) for c in class_names):
        return None
    return imagenet1k_names()
