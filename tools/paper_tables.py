"""Print the papers' FLOPs/params tables beside this project's counts, one row per shipped config.

    python tools/paper_tables.py            # markdown tables for README.md

Counting rules (utils/flops.py) follow the official ``measure_model`` functions: CondenseNet and
DenseNet-BC the v1 rule, CondenseNetV2 the v2 rule, ReXNet multiply-accumulates of convs and the
classifier. "training-time" counts the LGC/SFR at their final condensed cost (as the papers do);
"converted" is the deployable model (v1: classifier pruned to half its inputs).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphs.models import create_model  # noqa: E402
from utils.flops import profile  # noqa: E402

# config file -> published (FLOPs, params) as printed in the official READMEs/papers
CONDENSENET = [
    ("condensenet_50_cifar10", "28.6M / 0.22M"), ("condensenet_74_cifar10", "51.9M / 0.41M"),
    ("condensenet_86_cifar10", "65.8M / 0.52M"), ("condensenet_98_cifar10", "81.3M / 0.65M"),
    ("condensenet_110_cifar10", "98.2M / 0.79M"), ("condensenet_122_cifar10", "116.7M / 0.95M"),
    ("condensenet_182_cifar10", "513M / 4.2M"), ("condensenet_86_cifar100", "–"),
    ("condensenet_74_g4_imagenet", "529M / 4.8M"), ("condensenet_74_g8_imagenet", "274M / 2.9M"),
]
CONDENSENETV2 = [
    ("cdnv2_a_imagenet", "46M / 2.0M"), ("cdnv2_b_imagenet", "146M / 3.6M"), ("cdnv2_c_imagenet", "309M / 6.1M"),
    ("cdnv2_110_cifar10", "41M / 0.48M"), ("cdnv2_110_cifar100", "– (C100 row of the same net)"),
    ("cdnv2_146_cifar10", "62M / 0.78M"), ("cdnv2_146_cifar100", "– (C100 row of the same net)"),
]
REXNET = [
    ("rexnet_0_9_imagenet", "0.35G / 4.1M"), ("rexnet_1_0_imagenet", "0.40G / 4.8M"),
    ("rexnet_1_3_imagenet", "0.66G / 7.6M"), ("rexnet_1_5_imagenet", "0.88G / 9.7M"),
    ("rexnet_2_0_imagenet", "1.5G / 16M"), ("rexnet_3_0_imagenet", "3.4G / 34M"),
    ("rexnet_lite_1_0_imagenet", "0.41G / 4.7M"), ("rexnet_lite_1_3_imagenet", "0.65G / 6.8M"),
    ("rexnet_lite_1_5_imagenet", "0.84G / 8.3M"), ("rexnet_lite_2_0_imagenet", "1.5G / 13M"),
    ("rexnet_1_0_cifar10", "– (CIFAR adaptation)"),
]
CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def build(config_name, converted=False):
    with open(os.path.join(ROOT, "configs", config_name + ".json")) as f:
        cfg = json.load(f)
    model = create_model(cfg["model"], num_classes=CLASSES[cfg["dataset"]], converted=converted,
                         **cfg.get("model_args", {}))
    return cfg["model"], model


def fmt(flops, params, giga=False):
    return f"{flops / 1e9:.3f}G / {params / 1e6:.3f}M" if giga else f"{flops / 1e6:.2f}M / {params / 1e6:.4f}M"


def table(title, rows, convertible=True, giga=False):
    head = "| config | model | published FLOPs / params | training-time | converted |" if convertible else \
        "| config | model | published MACs / params | this project |"
    lines = [f"### {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for config_name, published in rows:
        name, model = build(config_name)
        ours = fmt(*profile(model), giga=giga)
        if convertible:
            conv = fmt(*profile(build(config_name, converted=True)[1]), giga=giga)
            lines.append(f"| `{config_name}` | `{name}` | {published} | {ours} | {conv} |")
        else:
            lines.append(f"| `{config_name}` | `{name}` | {published} | {ours} |")
    return "\n".join(lines)


def main():
    print(table("CondenseNet (Huang et al., CVPR 2018)", CONDENSENET))
    print()
    print(table("CondenseNetV2 (Yang et al., CVPR 2021)", CONDENSENETV2))
    print()
    print(table("ReXNet (Han et al., CVPR 2021)", REXNET, convertible=False, giga=True))


if __name__ == "__main__":
    main()
