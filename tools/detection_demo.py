"""A short real detection run: Faster R-CNN with a CondenseNetV2-A backbone on a small COCO-format set.

    python tests/_coco_data.py /tmp/coco_demo 64 16          # generate the set (real photos + shapes)
    python tools/detection_demo.py /tmp/coco_demo --iters 300 --out /tmp/coco_demo_out

Plain torch loop (the DetectionAgent will do this through the Trainer): SGD, momentum 0.9, weight
decay 1e-4, linear warmup from lr/3, condensation progress ``it / iters`` forwarded to the backbone
every iteration (``model.set_progress``), COCO box AP on the val split before and after (pycocotools),
and the detections of the first val images drawn into ``--out``. Small heads (64 FPN channels, 64
sampled RoIs) and 128-px images keep it to minutes on a shared CPU.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from commands.detection import draw_detections  # noqa: E402
from datasets.coco import CocoIndex, CocoLoader, read_image  # noqa: E402
from engine.coco_eval import evaluate_coco  # noqa: E402
from graphs.detection import create_detector  # noqa: E402


@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    outputs = {}
    for images, targets in loader:
        for t, o in zip(targets, model(images)):
            outputs[int(t["image_id"])] = o
    model.train()
    return evaluate_coco(loader.coco_gt, outputs, loader.label_to_cat, image_ids=loader.image_ids), outputs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_root")
    p.add_argument("--backbone", default="cdnv2_a")
    p.add_argument("--detector", default="fasterrcnn", choices=("fasterrcnn", "retinanet", "fcos"))
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--min-size", type=int, default=128)
    p.add_argument("--max-size", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="folder for the drawn val detections")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train = CocoLoader(CocoIndex(a.data_root, "train", train=True), batch_size=a.batch, train=True, device="cpu",
                       seed=a.seed)
    val = CocoLoader(CocoIndex(a.data_root, "val", train=False), batch_size=4, train=False, device="cpu")
    small = dict(box_batch_size_per_image=64, rpn_batch_size_per_image=64, rpn_pre_nms_top_n_train=300,
                 rpn_post_nms_top_n_train=100) if a.detector == "fasterrcnn" else {}
    model = create_detector(a.detector, a.backbone, num_classes=train.num_classes, min_size=a.min_size,
                            max_size=a.max_size, fpn_channels=64, **small)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9, weight_decay=1e-4)
    ap0, _ = evaluate(model, val)
    print(f"before: AP {ap0['AP']:.4f}  AP50 {ap0['AP50']:.4f}", flush=True)
    it, epoch, t0 = 0, 0, time.time()
    model.train()
    while it < a.iters:
        train.set_epoch(epoch)
        for images, targets in train:
            if it >= a.iters:
                break
            warm = min(1.0, (it + 1) / a.warmup)
            for g in opt.param_groups:
                g["lr"] = a.lr * (1 / 3 + 2 / 3 * warm)
            model.set_progress(it / a.iters)
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            it += 1
            if it % 25 == 0:
                print(f"iter {it}/{a.iters}  loss {loss.item():.3f}  {time.time() - t0:.0f}s", flush=True)
        epoch += 1
    ap1, outputs = evaluate(model, val)
    print(f"after {a.iters} iterations ({epoch} epochs, {time.time() - t0:.0f}s): AP {ap1['AP']:.4f}  "
          f"AP50 {ap1['AP50']:.4f}  AP75 {ap1['AP75']:.4f}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        val_index = CocoIndex(a.data_root, "val", train=False)
        for path, iid, w, h, *_ in val_index.samples[:4]:
            o = outputs[iid]
            dest = os.path.join(a.out, f"{iid}.png")
            draw_detections(read_image(path, w, h), o["boxes"], o["labels"], o["scores"], val.class_names, dest,
                            score_threshold=0.5)
            print(f"wrote {dest}")


if __name__ == "__main__":
    main()
