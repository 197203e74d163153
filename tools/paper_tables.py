"""Print the papers' FLOPs/params tables beside this project's counts, one row per shipped config; with
``--results``, the published accuracy of each row beside the one its run measured.

    python tools/paper_tables.py                          # markdown tables for README.md
    python tools/paper_tables.py --results experiments    # the reproduced table: published vs measured top-1

The published figures come from each variant's ``pretrained_cfg.published`` (graphs/models); a config
on another data set than the figures' shows "–". Counting rules (graphs/flops.py) follow the official
``measure_model`` functions: CondenseNet and DenseNet-BC the v1 rule, CondenseNetV2 the v2 rule, ReXNet
multiply-accumulates of convs and the classifier. "training-time" counts the LGC/SFR at their final
condensed cost (as the papers do); "converted" is the deployable model (v1: classifier pruned to half).

The reproduced table reads ``<results>/<exp_name>/`` of every row (``exp_name`` is the config's name):
``metrics.csv`` for the best and the final validation top-1 (and the EMA's where the recipe keeps one) and
``config.json`` for the run's max_epoch and global batch (batch_size x grad_accum_steps). A row without a run
says "missing"; a run that trained fewer epochs than the recipe says "short"; another global batch is named.
"""
import argparse
import csv
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphs.flops import profile  # noqa: E402
from graphs.models import create_model, get_pretrained_cfg  # noqa: E402
from utils.config import load_config  # noqa: E402

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


def read_run(folder: str):
    """What the run in ``folder`` measured: epochs trained, its config's max_epoch and global batch, best
    and final val top-1 (and EMA top-1); None without a metrics.csv."""
    metrics, config = os.path.join(folder, "metrics.csv"), os.path.join(folder, "config.json")
    if not (os.path.isfile(metrics) and os.path.isfile(config)):
        return None
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(config) as f:
        cfg = json.load(f)
    run = {"epochs": max((int(r["epoch"]) for r in rows), default=0), "max_epoch": cfg["max_epoch"],
           "global_batch": cfg["batch_size"] * cfg.get("grad_accum_steps", 1)}
    for key in ("val_top1", "ema_val_top1"):
        values = [float(r[key]) for r in rows if r.get(key)]
        run[key] = (max(values), values[-1]) if values else None
    return run


def _best_final(pair):
    return "–" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"


def results_table(title: str, pattern: str, results: str) -> str:
    """Published top-1 (error) of each paper row beside the best / final top-1 of its run under ``results``."""
    lines = [f"### {title}", "",
             "| config | published top-1 (error) | measured best / final top-1 | EMA best / final top-1 | "
             "epochs: run / recipe | global batch: run / recipe | status |", "|---|---|---|---|---|---|---|"]
    for name, _ in configs(pattern):
        recipe = load_config(os.path.join(ROOT, "configs", name + ".json"))
        batch = recipe.batch_size * recipe.grad_accum_steps
        pub = get_pretrained_cfg(recipe.model).published
        shown = f"{pub.top1:.2f} ({100 - pub.top1:.2f})" if pub and pub.top1 and pub.dataset == recipe.dataset \
            else "–"
        run = read_run(os.path.join(results, recipe.exp_name))
        if run is None:
            lines.append(f"| `{name}` | {shown} | – | – | – / {recipe.max_epoch} | – / {batch} | missing |")
            continue
        notes = []
        if run["epochs"] < recipe.max_epoch:
            planned = f" (max_epoch {run['max_epoch']})" if run["max_epoch"] < recipe.max_epoch else ""
            notes.append(f"short: {run['epochs']} of {recipe.max_epoch} epochs{planned}")
        if run["global_batch"] != batch:
            notes.append(f"global batch {run['global_batch']}, not {batch}")
        if run["val_top1"] is None:
            notes.append("not validated yet")
        ema = _best_final(run["ema_val_top1"]) if recipe.ema else "–"
        lines.append(f"| `{name}` | {shown} | {_best_final(run['val_top1'])} | {ema} | {run['epochs']} / "
                     f"{recipe.max_epoch} | {run['global_batch']} / {batch} | {'; '.join(notes) or 'complete'} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", metavar="DIR", help="experiments folder: print published vs measured top-1")
    args = p.parse_args(argv)
    if args.results:
        print("\n\n".join(results_table(title, pattern, args.results) for title, pattern in TABLES))
    else:
        print("\n\n".join(table(title, pattern) for title, pattern in TABLES))


if __name__ == "__main__":
    main()
