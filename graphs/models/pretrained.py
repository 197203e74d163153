"""What a model variant is, in one record (timm's ``pretrained_cfg``), and every released weight file.

Every registered variant carries one :class:`PretrainedCfg` (``model.pretrained_cfg``): its eval
transform (input size, mean/std, crop_pct, interpolation), class count, classifier and first-conv
module names, the published FLOPs/params/top-1 with their source, and the released weights
(:class:`WeightEntry`, by tag). Transforms, the FLOPs table, the paper-tables tool, the tests and the
README read these facts from here, so each is written once. The family files build their variants'
records with :func:`cifar_cfg` / :func:`imagenet_cfg`; the registry adds each variant's
``WEIGHTS[variant]`` (``register_variant``), where ``pretrained: <tag>`` finds them.

Every officially released ImageNet-1k weight file: ``WEIGHTS[variant][tag] = WeightEntry(...)``. Every URL
comes from the line cited above it (the repositories as fetched: ShichenLiu/CondenseNet README @833a91d,
jianghaojun/CondenseNetV2 README @4431162, clovaai/rexnet README @61debcc, timm rexnet.py @8db20dc (last
version with GitHub release URLs) and @aa4b585 (HF hub ids)). Hashes: only the sha256 prefixes that timm's file names publish;
the official files publish none, so ``hash`` stays None and the strict load is the check.

Hosts:
* Dropbox: the README links end in ``?dl=0`` (a preview page); ``?dl=1`` is Dropbox's direct download.
* Google Drive: ``/file/d/<id>/view`` is a page. The entries use the direct form
  ``https://drive.usercontent.google.com/download?id=<id>&export=download&confirm=t`` (``confirm=t``
  skips the "cannot scan for viruses" page of files over 100 MB). NOT verified from this machine
  (no network); if Drive answers with a page (quota, sign-in), ``resolve_pretrained`` refuses it and the
  note says how to fetch the file by hand.
* Tsinghua Cloud: ``/f/<id>/?dl=1`` is direct (the README gives it for CondenseNetV2-C unconverted);
  ``smart-link`` URLs are pages, so the converted V2 files use their Google Drive mirror.
* ReXNet v1 0.9: no weights were ever released (the README lists 0.9 only as a COCO backbone).
* timm ``rexnet_300``: only on the HF hub (``pytorch_model.bin``, 139 MB, no hash in its name).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Published", "WeightEntry", "PretrainedCfg", "cifar_cfg", "imagenet_cfg", "WEIGHTS"]

# The normalisation that ImageNet-trained weights expect (timm's IMAGENET_DEFAULT_MEAN/STD), written here
# rather than imported from timm.data: importing timm loads torchvision and timm's model zoo, seconds at start
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Published:
    """Figures printed by the paper or the official README, as printed (strings keep their rounding)."""

    flops: Optional[str] = None        # e.g. "46M" (FLOPs as the family counts them; ReXNet: MACs)
    params: Optional[str] = None       # e.g. "2.0M"
    top1: Optional[float] = None       # top-1 accuracy in % on ``dataset``
    top5: Optional[float] = None
    dataset: str = "imagenet"          # the data set the figures are for
    source: str = ""                   # where they are printed


@dataclass(frozen=True)
class WeightEntry:
    """One released weight file."""

    url: str
    file_name: str
    layout: str = "official"           # 'official' | 'timm' | 'paddle'
    converted: bool = False            # CondenseNets: converted (deployable) or training-time weights
    num_classes: int = 1000
    hash: Optional[str] = None         # sha256 prefix, only where one is published (torch.hub checks it)
    license: str = ""
    note: str = ""                     # e.g. how to fetch the file by hand when the host needs a browser


@dataclass(frozen=True)
class PretrainedCfg:
    """The facts of one model variant (see the module docstring)."""

    input_size: tuple = (3, 224, 224)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    mean: Optional[tuple] = IMAGENET_DEFAULT_MEAN   # None: the data set's own constants (CIFAR)
    std: Optional[tuple] = IMAGENET_DEFAULT_STD
    num_classes: int = 1000
    classifier: str = "classifier"     # module name of the final classifier
    first_conv: str = "features.init_conv"
    paper: str = ""                    # "Title (Authors, venue)", arXiv link
    published: Optional[Published] = None
    weights: dict = field(default_factory=dict)      # tag -> WeightEntry

    def replace(self, **changes) -> "PretrainedCfg":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain types (for checkpoints, JSON and logs)."""
        return dataclasses.asdict(self)


def cifar_cfg(**changes) -> PretrainedCfg:
    """Eval geometry of the CIFAR models: 32x32, no resize or crop, the data set's own mean/std."""
    return PretrainedCfg(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear", mean=None, std=None,
                         num_classes=10).replace(**changes)


def imagenet_cfg(**changes) -> PretrainedCfg:
    """Eval geometry of the ImageNet models: resize 256, centre-crop 224, ImageNet mean/std."""
    return PretrainedCfg().replace(**changes)


# ------------------------------------------------------------------------------------------------
# Released weights
# ------------------------------------------------------------------------------------------------
_GD = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"


def _gd_note(file_id: str) -> str:
    return (f"open https://drive.google.com/file/d/{file_id}/view, press Download, and save the file "
            f"under the cache path named above")


def _official_gd(file_id, file_name, converted, license_):
    return WeightEntry(url=_GD.format(file_id), file_name=file_name, layout="official", converted=converted,
                       num_classes=1000, hash=None, license=license_, note=_gd_note(file_id))


def _dropbox(file_id, file_name):
    """The official converted CondenseNet files: Dropbox's direct form (``?dl=1``) of the README links."""
    page = f"https://www.dropbox.com/s/{file_id}/{file_name}"
    return WeightEntry(url=page + "?dl=1", file_name=file_name, layout="official", converted=True, num_classes=1000,
                       hash=None, license="MIT", note=f"open {page} and press Download")


_TIMM_REL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-rexnet/"


def _timm_release(file_name, hash_prefix):
    return WeightEntry(url=_TIMM_REL + file_name, file_name=file_name, layout="timm", converted=False,
                       num_classes=1000, hash=hash_prefix, license="mit",
                       note="timm's copy of the NAVER weights (also on the HF hub as timm/<name>.nav_in1k)")


WEIGHTS = {
    # ---------------------------------------------------------------- CondenseNet (v1), converted
    # ShichenLiu/CondenseNet README.md:109
    # | CondenseNet-74 (C=G=4) | 529M | 4.8M | 26.2 | 8.3 | [Download (18.69M)](https://www.dropbox.com/s/sj26rm4so3uhdmg/converted_condensenet_4.pth.tar?dl=0) |
    "condensenet_74_g4": {"official": _dropbox("sj26rm4so3uhdmg", "converted_condensenet_4.pth.tar")},
    # ShichenLiu/CondenseNet README.md:110
    # | CondenseNet-74 (C=G=8) | 274M | 2.9M | 29.0 | 10.0 | [Download (11.68M)](https://www.dropbox.com/s/aj1xpd6zcnclous/converted_condensenet_8.pth.tar?dl=0) |
    "condensenet_74_g8": {"official": _dropbox("aj1xpd6zcnclous", "converted_condensenet_8.pth.tar")},
    # ---------------------------------------------------------------- CondenseNetV2
    # jianghaojun/CondenseNetV2 README.md:99
    # | CondenseNetV2-A | 46M | 2.0M | 35.6 | [Tsinghua Cloud](https://cloud.tsinghua.edu.cn/smart-link/34933e0e-565b-4633-b1ea-a5266d3d3fcc/) / [Google Drive](https://drive.google.com/file/d/1fhHeAGkdZnOEgv9f-IUCy_uNfc-QHcZ_/view?usp=sharing) | - |
    "cdnv2_a": {
        "official": _official_gd("1fhHeAGkdZnOEgv9f-IUCy_uNfc-QHcZ_", "converted_cdnv2_a.pth.tar", True, "MIT"),
    },
    # jianghaojun/CondenseNetV2 README.md:100
    # | CondenseNetV2-B | 146M | 3.6M | 28.1 | [Tsinghua Cloud](https://cloud.tsinghua.edu.cn/smart-link/444627eb-a296-458e-9a44-db38aca8a761/) / [Google Drive](https://drive.google.com/file/d/1xFR3GcV1tsGq4tHhPS50XCW7AMnfWs6E/view?usp=sharing) | - |
    "cdnv2_b": {
        "official": _official_gd("1xFR3GcV1tsGq4tHhPS50XCW7AMnfWs6E", "converted_cdnv2_b.pth.tar", True, "MIT"),
    },
    # jianghaojun/CondenseNetV2 README.md:101
    # | CondenseNetV2-C | 309M | 6.1M | 24.1 | [Tsinghua Cloud](https://cloud.tsinghua.edu.cn/smart-link/4625ac39-54b2-48c1-bcbd-c6d21a6b42fa/) / [Google Drive](https://drive.google.com/file/d/1QaK-5KtVeK-d6ip8RMJhJ87dVmPAnWEA/view?usp=sharing) | [Tsinghua Cloud](https://cloud.tsinghua.edu.cn/f/4e4a5246fc6249829ab0/?dl=1) / [Google Drive](https://drive.google.com/file/d/12efJqELir4tzPMP-gdsH3Kl6kc5WeJgf/view?usp=sharing) |
    "cdnv2_c": {
        "official": _official_gd("1QaK-5KtVeK-d6ip8RMJhJ87dVmPAnWEA", "converted_cdnv2_c.pth.tar", True, "MIT"),
        "official_unconverted": WeightEntry(
            url="https://cloud.tsinghua.edu.cn/f/4e4a5246fc6249829ab0/?dl=1", file_name="cdnv2_c.pth.tar",
            layout="official", converted=False, num_classes=1000, hash=None, license="MIT",
            note="or open https://drive.google.com/file/d/12efJqELir4tzPMP-gdsH3Kl6kc5WeJgf/view "
                 "(the README's mirror) and press Download"),
    },
    # ---------------------------------------------------------------- ReXNet v1 (clovaai/rexnet README.md:69-73)
    # (file names: the README's loading example, README.md:123 "torch.load('./rexnetv1_1.0.pth')")
    # README.md:69  [ReXNet_1.0](https://drive.google.com/file/d/1xeIJ3wb83uOowU008ykYj6wDX2dsncA9/view?usp=sharing)  | 224x224 | 77.9 | 93.9 | 0.40B/4.8M |
    # timm rexnet.py @8db20dc:40  url='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-rexnet/rexnetv1_100-1b4dddf4.pth'
    "rexnet_1_0": {
        "official": _official_gd("1xeIJ3wb83uOowU008ykYj6wDX2dsncA9", "rexnetv1_1.0.pth", False, "MIT"),
        "timm": _timm_release("rexnetv1_100-1b4dddf4.pth", "1b4dddf4"),
    },
    # README.md:70  [ReXNet_1.3](https://drive.google.com/file/d/1x2ziK9Oyv66Y9NsxJxXsdjzpQF2uSJj0/view?usp=sharing)  | 224x224 | 79.5 | 94.7 | 0.66B/7.6M |
    # timm rexnet.py @8db20dc:42  .../v0.1-rexnet/rexnetv1_130-590d768e.pth
    "rexnet_1_3": {
        "official": _official_gd("1x2ziK9Oyv66Y9NsxJxXsdjzpQF2uSJj0", "rexnetv1_1.3.pth", False, "MIT"),
        "timm": _timm_release("rexnetv1_130-590d768e.pth", "590d768e"),
    },
    # README.md:71  [ReXNet_1.5](https://drive.google.com/file/d/1TOBGsbDhTHWBgqcRnyKIR0tHsJTOPUIG/view?usp=sharing)  | 224x224 | 80.3 | 95.2 | 0.88B/9.7M |
    # timm rexnet.py @8db20dc:44  .../v0.1-rexnet/rexnetv1_150-bd1a6aa8.pth
    "rexnet_1_5": {
        "official": _official_gd("1TOBGsbDhTHWBgqcRnyKIR0tHsJTOPUIG", "rexnetv1_1.5.pth", False, "MIT"),
        "timm": _timm_release("rexnetv1_150-bd1a6aa8.pth", "bd1a6aa8"),
    },
    # README.md:72  [ReXNet_2.0](https://drive.google.com/file/d/1R1aOTKIe1Mvck86NanqcjWnlR8DY-Z4C/view?usp=sharing)  | 224x224 | 81.6 | 95.7 | 1.5B/16M |
    # timm rexnet.py @8db20dc:46  .../v0.1-rexnet/rexnetv1_200-8c0b7f2d.pth
    "rexnet_2_0": {
        "official": _official_gd("1R1aOTKIe1Mvck86NanqcjWnlR8DY-Z4C", "rexnetv1_2.0.pth", False, "MIT"),
        "timm": _timm_release("rexnetv1_200-8c0b7f2d.pth", "8c0b7f2d"),
    },
    # README.md:73  [ReXNet_3.0](https://drive.google.com/file/d/1iXAsr8gs3pRz0QyHKomdj5SGVzPWbIs2/view?usp=sharing)  | 224x224 | 82.8 | 96.2 | 3.4B/34M |
    #   (the id that replaced 1chOnQPKtE1LaLz6WzSdzH55x6VlZ29sQ, the older 82.5% file, in the README history)
    # timm rexnet.py @aa4b585:526  'rexnet_300.nav_in1k': _cfg(hf_hub_id='timm/')  (HF hub only)
    "rexnet_3_0": {
        "official": _official_gd("1iXAsr8gs3pRz0QyHKomdj5SGVzPWbIs2", "rexnetv1_3.0.pth", False, "MIT"),
        "timm": WeightEntry(
            url="https://huggingface.co/timm/rexnet_300.nav_in1k/resolve/main/pytorch_model.bin",
            file_name="rexnet_300.nav_in1k.bin", layout="timm", converted=False, num_classes=1000, hash=None,
            license="mit", note="open https://huggingface.co/timm/rexnet_300.nav_in1k/tree/main and download "
                                "pytorch_model.bin (not model.safetensors)"),
    },
    # ---------------------------------------------------------------- ReXNet-lite (clovaai/rexnet README.md:75-78)
    # (file names: README.md:134 "torch.load('./rexnet_lite_1.0.pth', ...)"); timm has no lite models
    # README.md:75  [ReXNet-lite_1.0](https://drive.google.com/file/d/1d9G4pLwZwkoDR2TRPCQlxiWiuC7R-Oqf/view?usp=sharing) | 224x224 | 76.2 | 92.8 | 0.41B/4.7M |
    "rexnet_lite_1_0": {
        "official": _official_gd("1d9G4pLwZwkoDR2TRPCQlxiWiuC7R-Oqf", "rexnet_lite_1.0.pth", False, "MIT"),
    },
    # README.md:76  [ReXNet-lite_1.3](https://drive.google.com/file/d/1NsbsdI8qAHG6HdMxmySXcrl9NdEx3s0L/view?usp=sharing) | 224x224 | 77.8 | 93.8 | 0.65B/6.8M |
    "rexnet_lite_1_3": {
        "official": _official_gd("1NsbsdI8qAHG6HdMxmySXcrl9NdEx3s0L", "rexnet_lite_1.3.pth", False, "MIT"),
    },
    # README.md:77  [ReXNet-lite_1.5](https://drive.google.com/file/d/12QzIh9A-U0PBGaLNOIr4gX2MoZEBnRjk/view?usp=sharing) | 224x224 | 78.6 | 94.2 | 0.84B/8.3M|
    "rexnet_lite_1_5": {
        "official": _official_gd("12QzIh9A-U0PBGaLNOIr4gX2MoZEBnRjk", "rexnet_lite_1.5.pth", False, "MIT"),
    },
    # README.md:78  [ReXNet-lite_2.0](https://drive.google.com/file/d/1pGdG9HWnqSAu1FajmaMJMK5JyOJaiFyW/view?usp=sharing) | 224x224 | 80.2 | 95.0 | 1.5B/13M |
    "rexnet_lite_2_0": {
        "official": _official_gd("1pGdG9HWnqSAu1FajmaMJMK5JyOJaiFyW", "rexnet_lite_2.0.pth", False, "MIT"),
    },
}
