"""Detection's task for the Trainer: the detector's summed loss dict, device-side loss-term sums, COCO box AP
(engine.coco_eval over the gathered per-image outputs), written to out/coco_eval.json."""
import json
import os
from typing import Callable, Optional

import torch
from torch import nn

from utils import shutdown
from utils.atomic_io import atomic_write

from .coco_eval import evaluate_coco, to_coco_results
from .evaluator import autocast
from .trainer import Task, TrainerContext

__all__ = ["DetectionTask", "DetectionSums", "evaluate_detector", "write_coco_eval", "detection_fields",
           "METRICS", "LOSS_TERMS"]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: the loss terms of each torchvision detector's training output
LOSS_TERMS = {"fasterrcnn": ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"),
              "retinanet": ("classification", "bbox_regression"),
              "fcos": ("classification", "bbox_regression", "bbox_ctrness")}


class DetectionSums:
    """Device-side running sums of the total loss and each loss term (read only in ``compute``)."""

    def __init__(self, device: torch.device, terms):
        self.terms = tuple(terms)
        self.sums = torch.zeros(len(self.terms) + 2, dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, output: dict, target) -> None:
        values = [loss.detach()] + [output[t].detach() for t in self.terms]
        n = len(target)
        self.sums[:-1] += torch.stack([v.double() for v in values]) * n
        self.sums[-1] += n

    def compute(self) -> dict:
        s = self.sums.tolist()
        n = max(s[-1], 1.0)
        return {"loss": s[0] / n, **{t: v / n for t, v in zip(self.terms, s[1:-1])}, "count": int(s[-1])}


def detection_fields(arch: str) -> tuple:
    """metrics.csv columns of a detection run."""
    return (("epoch", "lr", "train_loss") + tuple(f"train_{t}" for t in LOSS_TERMS[arch])
            + tuple(f"val_{m}" for m in METRICS) + tuple(f"ema_val_{m}" for m in METRICS)
            + ("epoch_time_s", "train_images_per_s"))


@torch.no_grad()
def evaluate_detector(model: nn.Module, loader, device: torch.device, dist, amp: str = "none",
                      summary: Optional[list] = None):
    """COCO box AP of ``model`` over ``loader`` (every rank its shard, outputs gathered): (metrics x100,
    COCO result dicts). The model's train/eval mode is restored; a stop request abandons the evaluation
    within a batch or two (utils.shutdown.StopRequested)."""
    was_training = model.training
    model.eval()
    outputs = {}
    checked = dist.min(len(loader), device)     # the batches every rank has (shards may differ by one)
    try:
        for i, (images, targets) in enumerate(loader):
            if i < checked:
                shutdown.check(dist, device)
            with autocast(device, amp):
                detections = model(images)
            for t, d in zip(targets, detections):
                outputs[int(t["image_id"])] = {k: v.float().cpu() if v.is_floating_point() else v.cpu()
                                               for k, v in d.items()}
    finally:
        model.train(was_training)
    if dist.enabled:
        gathered = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, outputs)
        outputs = {k: v for part in gathered for k, v in part.items()}
    metrics = evaluate_coco(loader.coco_gt, outputs, loader.label_to_cat, image_ids=loader.image_ids,
                            summary=summary)
    metrics = {k: (100.0 * v if v >= 0 else v) for k, v in metrics.items()}
    return metrics, to_coco_results(outputs, loader.label_to_cat)


def write_coco_eval(path: str, metrics: dict, results: list, **info) -> None:
    """``out/coco_eval.json``: the metrics and every detection in COCO's result format, atomically."""
    text = json.dumps({**info, "metrics": metrics, "results": results})
    atomic_write(path, text)


class DetectionTask(Task):
    """A torchvision detector of ``arch``: its summed loss dict, loss-term sums, COCO AP; the main model's
    detections go to ``out_dir``/coco_eval.json."""
    metric_key = "AP"

    def __init__(self, meta: Callable[[], dict], arch: str, out_dir: str):
        super().__init__(meta)
        self.terms, self.fields, self.out_dir = LOSS_TERMS[arch], detection_fields(arch), out_dir

    def forward_loss(self, model: nn.Module, x, target):
        losses = model(x, target)
        return sum(losses.values()), losses

    def new_sums(self, device: torch.device) -> DetectionSums:
        return DetectionSums(device, self.terms)

    def validate(self, model: nn.Module, loader, ctx: TrainerContext, amp: str, *, epoch: int, ema: bool) -> dict:
        lines = []
        metrics, results = evaluate_detector(model, loader, ctx.device, ctx.dist, amp, summary=lines)
        if ctx.dist.is_main:
            ctx.logger.info(("COCO box AP (EMA)" if ema else "COCO box AP") + "\n" + "\n".join(lines))
            if not ema:
                write_coco_eval(os.path.join(self.out_dir, "coco_eval.json"), metrics, results, epoch=epoch)
        return metrics
