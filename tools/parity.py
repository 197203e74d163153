"""Official-training parity guard: replay a fixture's training run with this project's training code.

    python tools/parity.py FIXTURE_DIR [--memory-efficient] [--lr-step {iter,epoch}]

A fixture (format: ../shared/fixtures/parity/README.md) is a short float64 training run of the official
code: the architecture (``family`` + ``arch``), the recipe, the initial weights, the batches (batch i of
every epoch is ``inputs[i*B:(i+1)*B]``), the per-step lr and loss, and the final weights, masks, EMA
weights and eval logits. This tool builds the registered model of that architecture, loads the initial
weights (official or timm layout) and trains it in float64 through the user's own path —
``ClassificationAgent.build_trainer`` (parameter groups, optimizer, LR schedule, loss with label
smoothing, group lasso, EMA) and ``Trainer.fit`` — with the recipe mapped onto config keys and only the
data replaced by the fixture's batches. The task's criterion and regulariser are wrapped to record each
step's lr, criterion and regulariser; nothing in the Trainer changes.

It prints the per-step lr / loss / criterion differences and the final weight, mask, logit and EMA
differences, and exits 0 when all are within 1e-9 and the masks are identical, 1 otherwise, and 2 with one
sentence on bad input (a missing file, an unsupported recipe value). ``--lr-step`` replays the run with
the other schedule granularity (what per-iteration stepping changes in a per-epoch recipe: expect 1).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from agents.classification import ClassificationAgent  # noqa: E402
from graphs.models import FAMILIES, get_pretrained_cfg, list_models, load_weights  # noqa: E402
from graphs.models.layouts import adapt_state_dict  # noqa: E402
from graphs.models.rexnet import WIDTHS  # noqa: E402
from utils.config import LR_STEPS, resolve  # noqa: E402
from utils.errors import ConfigError, DataError, UserError  # noqa: E402

TOL = 1e-9
# recipe field -> config key (the README of the fixtures gives the official semantics of each field)
RECIPE_KEYS = {"seed": "seed", "epochs": "max_epoch", "batch_size": "batch_size", "lr": "lr",
               "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay",
               "weight_decay_mode": "weight_decay_mode", "schedule": "lr_schedule", "warmup_epochs": "warmup_epochs",
               "warmup_lr": "warmup_lr", "lr_step": "lr_step", "label_smoothing": "label_smoothing",
               "group_lasso_lambda": "group_lasso_lambda"}
OPTIONAL = {"min_lr": 0.0, "ema_warmup": False, "optimizer": "sgd"}   # fields older fixtures leave out
CHOICES = {"schedule": ("cosine", "multistep"), "lr_step": LR_STEPS, "weight_decay_mode": ("all", "ndim2"),
           "optimizer": ("sgd",)}
# the official CondenseNet CIFAR multistep: x0.1 from epoch >= 0.5 E, x0.01 from epoch >= 0.75 E
MULTISTEP = {"lr_milestones": [0.5, 0.75], "lr_gamma": 0.1}
# ReXNet variants are their width: the arch's width (this argument) picks the registered builder
WIDTH_ARGS = {"rexnet": "width_mult", "rexnet_lite": "multiplier"}
STRUCTURE = ("_mask", "_count", "_stage")    # condensation buffers: compared exactly


# ---------------------------------------------------------------------------------------------- the fixture
def _load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise DataError(f"the fixture {folder!r} has no {name}; point to a folder in the format of "
                        f"fixtures/parity/README.md")
    try:
        if name.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise DataError(f"cannot read {path} ({type(e).__name__}); regenerate the fixture") from e


def read_fixture(folder: str) -> dict:
    """meta.json and the tensors of a fixture folder (one sentence when something is missing)."""
    if not os.path.isdir(folder):
        raise DataError(f"fixture folder {folder!r} does not exist; pass a folder such as "
                        f"../shared/fixtures/parity/condensenet_cifar_cosine")
    fx = {"meta": _load(folder, "meta.json")}
    for key in ("family", "arch", "recipe", "trajectory"):
        if key not in fx["meta"]:
            raise DataError(f"{folder}/meta.json has no {key!r}; regenerate the fixture")
    for name in ("init_state_dict", "batches", "final_state_dict", "eval"):
        fx[name] = _load(folder, name + ".pth")
    if fx["meta"]["recipe"].get("ema_decay") is not None:
        fx["final_ema_state_dict"] = _load(folder, "final_ema_state_dict.pth")
    return fx


def recipe_config(recipe: dict, lr_step: Optional[str] = None) -> dict:
    """The config keys that run ``recipe`` (one sentence for an unknown field or unsupported value)."""
    known = set(RECIPE_KEYS) | set(OPTIONAL) | {"iters_per_epoch", "ema_decay"}
    for field in recipe:
        if field not in known:
            raise ConfigError(f"recipe field {field!r} is not supported by tools/parity.py; the supported fields "
                              f"are {', '.join(sorted(known))}")
    missing = [f for f in list(RECIPE_KEYS) + ["iters_per_epoch", "ema_decay"] if f not in recipe]
    if missing:
        raise ConfigError(f"the recipe has no {missing[0]!r}; regenerate the fixture")
    recipe = {**OPTIONAL, **recipe, **({"lr_step": lr_step} if lr_step else {})}
    for field, valid in CHOICES.items():
        if recipe[field] not in valid:
            raise ConfigError(f"recipe {field} {recipe[field]!r} is not supported; use one of {', '.join(valid)}")
    cfg = {key: recipe[field] for field, key in RECIPE_KEYS.items()}
    cfg.update(min_lr=recipe["min_lr"], optimizer=recipe["optimizer"])
    if recipe["schedule"] == "multistep":
        cfg.update(MULTISTEP)
    if recipe["ema_decay"] is not None:
        cfg.update(ema=True, ema_decay=recipe["ema_decay"], ema_warmup=recipe["ema_warmup"])
    elif recipe["ema_warmup"]:
        raise ConfigError("the recipe sets ema_warmup without ema_decay; set ema_decay or drop ema_warmup")
    return cfg


def model_config(family: str, arch: dict, input_shape: Sequence[int]) -> dict:
    """The config keys (``model``, ``model_args``, ``num_classes``, ``drop_rate``, ``drop_path``) that
    build ``arch``: the family's registered builder, given every architecture argument."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r}; the registered families are {', '.join(FAMILIES)}")
    args = dict(arch)
    if "num_classes" not in args:
        raise DataError("the fixture's arch has no num_classes; regenerate the fixture")
    cfg = {"num_classes": args.pop("num_classes")}
    if "drop_rate" in args:
        cfg["drop_rate"] = args.pop("drop_rate")
    if "drop_path_rate" in args:
        cfg["drop_path"] = args.pop("drop_path_rate")
    names = list_models(FAMILIES[family])
    if family in WIDTH_ARGS:
        key = WIDTH_ARGS[family]
        width = args.pop(key, 1.0)
        names = [n for n in names if WIDTHS[n] == width]
        what = f"{key} {width}"
    else:   # the CIFAR or the ImageNet variants, by the fixture's input size (their stem differs)
        names = [n for n in names if tuple(get_pretrained_cfg(n).input_size) == tuple(input_shape)]
        what = f"{'x'.join(map(str, input_shape))} inputs"
    if not names:
        raise ConfigError(f"no registered {family} model has {what}; build the fixture with a registered variant")
    return {"model": names[0], "model_args": args, **cfg}


class FixtureLoader:
    """The loader interface of datasets/loader.py over fixed, already normalised batches: batch i of every
    epoch is ``inputs[i*B:(i+1)*B]`` (no shuffling, no augmentation)."""

    def __init__(self, inputs, labels, batch_size, num_classes, mean, std, channels_last=False):
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        self.inputs, self.labels, self.batch_size = inputs, labels, batch_size
        self.input_size, self.mean, self.std = tuple(inputs.shape[1:]), tuple(mean), tuple(std)
        self.num_classes, self.class_names = num_classes, [f"class_{i}" for i in range(num_classes)]
        self.readable_class_names, self.dataset_name = None, "fixture"
        self.dataset_size = self.num_samples = len(labels)
        self.skipped_images, self.epoch, self.start_batch = 0, 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self):
        return math.ceil(self.dataset_size / self.batch_size)

    def __iter__(self):
        b = self.batch_size
        for i in range(self.start_batch, len(self)):
            yield self.inputs[i * b:(i + 1) * b], self.labels[i * b:(i + 1) * b]


class FixtureAgent(ClassificationAgent):
    """The user's ClassificationAgent; only its data are the fixture's batches and eval images."""

    def __init__(self, config, fixture):
        super().__init__(config)
        cl, n, b = self.config.channels_last, self.num_classes, config.batch_size
        ev, stats = fixture["eval"], (fixture["meta"]["mean"], fixture["meta"]["std"])
        self._loaders = (FixtureLoader(fixture["batches"]["inputs"], fixture["batches"]["labels"], b, n, *stats, cl),
                         FixtureLoader(ev["inputs"], ev["labels"], len(ev["labels"]), n, *stats, cl))


# ---------------------------------------------------------------------------------------------- the replay
def mask_density(model: torch.nn.Module) -> float:
    """Fraction of ones over all ``_mask`` buffers (1 for a model without masks)."""
    masks = [b for name, b in model.named_buffers() if name.endswith("_mask")]
    total = sum(m.numel() for m in masks)
    return float(sum(float(m.sum()) for m in masks) / total) if total else 1.0


def replay(fx: dict, memory_efficient: bool, lr_step: Optional[str] = None, exp_root: Optional[str] = None):
    """Train the fixture's run through ClassificationAgent + Trainer; returns (config, trainer, per-step
    records)."""
    meta, recipe = fx["meta"], fx["meta"]["recipe"]
    training = recipe_config(recipe, lr_step)
    inputs = fx["batches"]["inputs"]
    if len(inputs) != recipe["iters_per_epoch"] * recipe["batch_size"]:
        raise DataError(f"batches.pth holds {len(inputs)} images, not iters_per_epoch x batch_size "
                        f"({recipe['iters_per_epoch']} x {recipe['batch_size']}); regenerate the fixture")
    config = {"exp_name": "parity", "agent": "ClassificationAgent", "dataset": "synthetic", "device": "cpu",
              "exp_root": exp_root, "num_workers": 0, "memory_efficient": memory_efficient, **training,
              **model_config(meta["family"], meta["arch"], inputs.shape[1:])}
    config["validate_every"] = config["max_epoch"]     # validation changes nothing: only after the last epoch
    config = resolve(config, source="the fixture's recipe")
    FixtureAgent.check_config(config)
    agent = FixtureAgent(config, fx)
    try:
        load_weights(agent.model, fx["init_state_dict"])
        trainer = agent.build_trainer()
        records = []
        task = trainer.task
        criterion, regulariser = task.criterion, task.regulariser

        def recorded_criterion(output, target, x):
            ce = criterion(output, target, x)
            records.append({"lr": trainer.optimizer.param_groups[0]["lr"], "ce": float(ce.detach()), "reg": 0.0,
                            "mask_density": mask_density(trainer.model)})
            return ce

        def recorded_regulariser(model):
            term = regulariser(model)
            records[-1]["reg"] = float(term.detach())
            return term

        task.criterion = recorded_criterion
        if regulariser is not None:
            task.regulariser = recorded_regulariser
        trainer.fit()
    finally:
        agent.finalize()
    return config, trainer, records


# ---------------------------------------------------------------------------------------------- comparison
def _as_project(model, state: dict) -> dict:
    """A fixture state dict in the project's names (timm's ReXNet layout is translated)."""
    return adapt_state_dict(model, dict(state))


def compare_states(ours: dict, theirs: dict, skip: Sequence[str] = ()):
    """(max |float difference|, its key, keys whose exact buffers differ, keys only on one side); entries
    whose last name is in ``skip`` are not compared."""
    worst, worst_key, unequal = 0.0, None, []
    odd = sorted(set(ours) ^ set(theirs))
    for key in ours:
        if key not in theirs or key.rsplit(".", 1)[-1] in skip:
            continue
        a, b = ours[key].detach(), theirs[key].to(ours[key].device)
        if a.shape != b.shape:
            unequal.append(key)
        elif key.rsplit(".", 1)[-1] in STRUCTURE or not a.is_floating_point():
            if not torch.equal(a.to(b.dtype), b):
                unequal.append(key)
        elif a.numel():
            d = float((a - b).abs().max())
            if not d <= worst:
                worst, worst_key = d, key
    return worst, worst_key, unequal, odd


@torch.no_grad()
def logits(model: torch.nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    model.eval()
    return model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)


def report(fx: dict, trainer, records: list, channels_last: bool, out=print) -> bool:
    """Print every difference (``channels_last``: the eval images' memory format); True when all are within
    TOL and the masks are identical."""
    traj = fx["meta"]["trajectory"]
    ok = len(records) == len(traj)
    if not ok:
        out(f"FAIL: the project took {len(records)} optimizer steps, the official run {len(traj)}")
    out(f"{'step':>4} {'epoch':>5} {'batch':>5} {'lr':>12} {'d lr':>9} {'loss':>12} {'d loss':>9} {'d ce':>9} "
        f"{'density':>8}")
    worst = {"lr": 0.0, "loss": 0.0, "ce": 0.0}
    density_ok = True
    for i, (ours, theirs) in enumerate(zip(records, traj)):
        d = {"lr": abs(ours["lr"] - theirs["lr"]), "ce": abs(ours["ce"] - theirs["ce"]),
             "loss": abs(ours["ce"] + ours["reg"] - theirs["loss"])}
        for k in worst:
            worst[k] = max(worst[k], d[k]) if d[k] == d[k] else math.inf
        same_density = ours["mask_density"] == theirs["mask_density"]
        density_ok &= same_density
        out(f"{i:>4} {theirs['epoch']:>5} {theirs['batch']:>5} {theirs['lr']:>12.6g} {d['lr']:>9.1e} "
            f"{theirs['loss']:>12.8f} {d['loss']:>9.1e} {d['ce']:>9.1e} "
            f"{ours['mask_density']:>8.4f}{'' if same_density else ' != ' + format(theirs['mask_density'], '.4f')}")

    def line(what, value, passed, detail=""):
        out(f"{what:<44} {value:<12} {'ok' if passed else 'FAIL'}{'  ' + detail if detail else ''}")
        return passed

    for k in ("lr", "loss", "ce"):
        ok &= line(f"max |{k} - official| per step", f"{worst[k]:.2e}", worst[k] <= TOL)
    ok &= line("mask density after every step", "identical" if density_ok else "differs", density_ok)
    model, cl = trainer.model, channels_last
    checks = [("final", model, fx["final_state_dict"], fx["eval"]["logits"], ())]
    if trainer.ema is not None or "final_ema_state_dict" in fx:
        if trainer.ema is None or "final_ema_state_dict" not in fx:
            line("EMA", "missing on one side", False)
            return False
        # the EMA's BN counters: the official CondenseNetV2 ModelEma leaves them at 0, timm's ModelEmaV3 and
        # this project copy the model's; BN with a momentum never reads them
        checks.append(("EMA", trainer.ema.module, fx["final_ema_state_dict"], fx["eval"]["ema_logits"],
                       ("num_batches_tracked",)))
    for name, net, state, official_logits, skip in checks:
        worst_w, key, unequal, odd = compare_states(net.state_dict(), _as_project(model, state), skip)
        ok &= line(f"{name} weights and BN statistics, max |diff|", f"{worst_w:.2e}", worst_w <= TOL,
                   f"at {key}" if key else "")
        ok &= line(f"{name} masks and other exact buffers", "identical" if not unequal else f"{len(unequal)} differ",
                   not unequal, ", ".join(unequal[:3]))
        ok &= line(f"{name} state-dict keys", "same" if not odd else f"{len(odd)} differ", not odd,
                   ", ".join(odd[:3]))
        d = float((logits(net, fx["eval"]["inputs"], cl) - official_logits).abs().max())
        ok &= line(f"{name} eval logits ({len(official_logits)} images), max |diff|", f"{d:.2e}", d <= TOL)
    return ok


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Replay an official float64 training fixture with this project's "
                                            "training code and compare every step (tolerance 1e-9).")
    p.add_argument("fixture", help="fixture folder, e.g. ../shared/fixtures/parity/condensenet_cifar_cosine")
    p.add_argument("--memory-efficient", action="store_true", help="train with the memory-efficient dense layers")
    p.add_argument("--lr-step", choices=LR_STEPS, help="replay with this lr_step instead of the recipe's")
    args = p.parse_args(argv)
    start = time.perf_counter()
    torch.set_default_dtype(torch.float64)
    # float64 convolutions take the slow im2col path in small pieces: one thread is as fast as two on a quiet
    # machine and many times faster on a busy one (OpenMP workers wait on each other)
    torch.set_num_threads(1)
    try:
        fx = read_fixture(args.fixture)
        meta = fx["meta"]
        with tempfile.TemporaryDirectory(prefix="parity-") as exp_root:
            cfg, trainer, records = replay(fx, args.memory_efficient, args.lr_step, exp_root)
            print(f"{os.path.basename(os.path.normpath(args.fixture))}: {meta['family']} (builder {cfg.model}, "
                  f"model_args {dict(cfg.model_args)}), {cfg.max_epoch} epochs x {len(trainer.train_loader)} "
                  f"iterations of {cfg.batch_size}, lr_step {cfg.lr_step}, memory_efficient "
                  f"{'on' if cfg.memory_efficient else 'off'}, channels_last {'on' if cfg.channels_last else 'off'}")
            ok = report(fx, trainer, records, cfg.channels_last)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"parity {'PASS' if ok else 'FAIL'} (tolerance {TOL:g}) in {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
