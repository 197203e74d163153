"""Print the papers' FLOPs/params tables beside this project's counts, one row per shipped config.

    python tools/paper_tables.py            # markdown tables for README.md

The published figures come from each variant's ``pretrained_cfg.published`` (graphs/models); a config
on another data set than the figures' shows "–". Counting rules (utils/flops.py) follow the official
``measure_model`` functions: CondenseNet and DenseNet-BC the v1 rule, CondenseNetV2 the v2 rule, ReXNet
multiply-accumulates of convs and the classifier. "training-time" counts the LGC/SFR at their final
condensed cost (as the papers do); "converted" is the deployable model (v1: classifier pruned to half).
"""
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphs.models import create_model  # noqa: E402
from utils.flops import profile  # noqa: E402

CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
TABLES = [("CondenseNet", "condensenet_*"), ("CondenseNetV2", "cdnv2_[0-9abc]*"), ("ReXNet", "rexnet_*")]


def configs(pattern):
    """(config name, config dict) of the paper-row configs whose file name matches ``pattern``."""
    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p)]  # noqa: E731
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", pattern + ".json")), key=natural):
        with open(path) as f:
            cfg = json.load(f)
        if cfg.get("agent", "ClassificationAgent") == "ClassificationAgent":
            yield os.path.basename(path)[:-5], cfg


def build(cfg, converted=False):
    return create_model(cfg["model"], num_classes=CLASSES[cfg["dataset"]], converted=converted,
                        **cfg.get("model_args", {}))


def fmt(flops, params, giga=False):
    return f"{flops / 1e9:.3f}G / {params / 1e6:.3f}M" if giga else f"{flops / 1e6:.2f}M / {params / 1e6:.4f}M"


def table(title, pattern):
    rows = list(configs(pattern))
    first = build(rows[0][1])
    convertible, giga = first.supports("convert"), first.flops_rule == "macs"
    head = "| config | model | published FLOPs / params | training-time | converted |" if convertible else \
        "| config | model | published MACs / params | this project |"
    lines = [f"### {title} — {first.pretrained_cfg.paper}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for name, cfg in rows:
        model = build(cfg)
        pub = model.pretrained_cfg.published
        shown = f"{pub.flops} / {pub.params}" if pub and pub.flops and pub.dataset == cfg["dataset"] else "–"
        cells = [f"`{name}`", f"`{cfg['model']}`", shown, fmt(*profile(model), giga=giga)]
        if convertible:
            cells.append(fmt(*profile(build(cfg, converted=True)), giga=giga))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    print("\n\n".join(table(title, pattern) for title, pattern in TABLES))


if __name__ == "__main__":
    main()
