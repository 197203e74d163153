"""Write a ReXNet training fixture made with timm's own training components (the official ReXNet recipe
is timm's train.py), in the format of ../shared/fixtures/parity/README.md, for tools/parity.py.

    python tools/make_rexnet_fixture.py DEST

Float64, one thread, on the CPU: timm's ``RexNet`` (width 0.9, depth_mult 0.2: one block per stage, so the
run takes seconds; 32x32 inputs, 10 classes, no dropout), seeded with ``torch.manual_seed(seed)`` before
construction, trained with timm's optimizer factory (``create_optimizer_v2``: SGD, Nesterov, no decay on
1-D parameters), timm's ``create_scheduler_v2`` cosine with warmup stepped as train.py steps it (the lr
of epoch e is set by ``step(e)`` at the end of the previous epoch; ``step_update`` after every update),
timm's ``LabelSmoothingCrossEntropy`` and timm's ``ModelEmaV3`` with warmup (train.py's
``--model-ema --model-ema-warmup``), in the step order of train.py's ``train_one_epoch``: forward, loss,
backward, optimizer step, ``zero_grad``, EMA update with the update count, ``step_update``.

The data are synthetic tensors (no download, no files): ten smooth random class prototypes (a 4x4 grid
upsampled bilinearly to 32x32) plus Gaussian noise, already zero-mean / unit-scale; batch i of every
epoch is ``inputs[i*B:(i+1)*B]``. Nothing of this project's training code is used. DEST must be a new
(or empty) folder; it is written completely or not at all.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

ARCH = {"width_mult": 0.9, "depth_mult": 0.2, "num_classes": 10, "drop_rate": 0.0}   # this project's names
RECIPE = {"seed": 0, "epochs": 4, "iters_per_epoch": 3, "batch_size": 16, "lr": 0.01, "momentum": 0.9,
          "nesterov": True, "weight_decay": 1e-5, "weight_decay_mode": "ndim2", "schedule": "cosine",
          "warmup_epochs": 1, "warmup_lr": 1e-5, "min_lr": 0.0, "lr_step": "epoch", "label_smoothing": 0.1,
          "group_lasso_lambda": 0.0, "ema_decay": 0.75, "ema_warmup": True}
EVAL_IMAGES = 32


def synthetic(n: int, num_classes: int, g: torch.Generator):
    """``n`` (image, label) pairs around ``num_classes`` smooth prototypes (the prototypes drawn first)."""
    protos = F.interpolate(torch.randn(num_classes, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear",
                           align_corners=False)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return protos[labels] + 0.5 * torch.randn(n, 3, 32, 32, generator=g), labels


def train(recipe: dict, arch: dict) -> dict:
    """The run, as timm's train.py does it; returns the fixture's contents."""
    import timm
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.models.rexnet import RexNet
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    epochs, iters, b = recipe["epochs"], recipe["iters_per_epoch"], recipe["batch_size"]
    g = torch.Generator().manual_seed(recipe["seed"])
    inputs, labels = synthetic(iters * b + EVAL_IMAGES, arch["num_classes"], g)
    eval_x, eval_y = inputs[iters * b:], labels[iters * b:]
    inputs, labels = inputs[:iters * b], labels[:iters * b]

    torch.manual_seed(recipe["seed"])
    model = RexNet(width_mult=arch["width_mult"], depth_mult=arch["depth_mult"], num_classes=arch["num_classes"],
                   drop_rate=arch["drop_rate"])
    init = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = create_optimizer_v2(model, opt="sgd", lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                                    momentum=recipe["momentum"])
    scheduler, num_epochs = create_scheduler_v2(optimizer, sched="cosine", num_epochs=epochs,
                                                min_lr=recipe["min_lr"], warmup_lr=recipe["warmup_lr"],
                                                warmup_epochs=recipe["warmup_epochs"], updates_per_epoch=iters)
    assert num_epochs == epochs and scheduler.t_in_epochs
    loss_fn = LabelSmoothingCrossEntropy(smoothing=recipe["label_smoothing"])
    ema = ModelEmaV3(model, decay=recipe["ema_decay"], use_warmup=recipe["ema_warmup"])

    trajectory, num_updates = [], 0
    for epoch in range(epochs):                       # train.py's train_one_epoch, accumulation 1
        model.train()
        optimizer.zero_grad()
        for batch in range(iters):
            x, y = inputs[batch * b:(batch + 1) * b], labels[batch * b:(batch + 1) * b]
            lr = optimizer.param_groups[0]["lr"]
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            num_updates += 1
            optimizer.zero_grad()
            ema.update(model, step=num_updates)
            scheduler.step_update(num_updates=num_updates)
            trajectory.append({"epoch": epoch, "batch": batch, "progress": (epoch * iters + batch) / (epochs * iters),
                               "lr": lr, "loss": loss.item(), "ce": loss.item(), "mask_density": 1.0})
        scheduler.step(epoch + 1)                     # the lr of the next epoch
    model.eval()
    with torch.no_grad():
        logits, ema_logits = model(eval_x), ema.module(eval_x)
    meta = {"family": "rexnet", "arch": arch, "recipe": recipe, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            "data": "synthetic: 10 smooth 4x4 prototypes upsampled to 32x32 + N(0, 0.5^2) noise",
            "made_with": f"timm {timm.__version__} (tools/make_rexnet_fixture.py)",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "trajectory": trajectory}
    return {"meta.json": meta, "init_state_dict.pth": init, "batches.pth": {"inputs": inputs, "labels": labels},
            "final_state_dict.pth": model.state_dict(), "final_ema_state_dict.pth": ema.module.state_dict(),
            "eval.pth": {"inputs": eval_x, "labels": eval_y, "logits": logits, "ema_logits": ema_logits}}


def write(dest: str, files: dict) -> None:
    """All files into a temporary folder beside ``dest``, then renamed to ``dest`` in one step."""
    parent = os.path.dirname(os.path.abspath(dest))
    tmp = tempfile.mkdtemp(prefix=".rexnet-fixture-", dir=parent)
    try:
        for name, obj in files.items():
            path = os.path.join(tmp, name)
            if name.endswith(".json"):
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(obj, f, indent=1)
            else:
                torch.save(obj, path)
        if os.path.isdir(dest):
            os.rmdir(dest)                            # empty (checked by main)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Write a ReXNet parity fixture trained with timm's components.")
    p.add_argument("dest", help="new folder for the fixture")
    args = p.parse_args(argv)
    parent = os.path.dirname(os.path.abspath(args.dest))
    if not os.path.isdir(parent):
        print(f"error: the folder {parent!r} does not exist; create it or choose another DEST", file=sys.stderr)
        return 2
    if os.path.exists(args.dest) and (not os.path.isdir(args.dest) or os.listdir(args.dest)):
        print(f"error: {args.dest!r} exists and is not an empty folder; choose a new DEST", file=sys.stderr)
        return 2
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    write(args.dest, train(RECIPE, ARCH))
    print(f"wrote {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
