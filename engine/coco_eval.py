"""COCO box AP with the official evaluator (``pycocotools.cocoeval.COCOeval``, iouType 'bbox').

pycocotools is the reference implementation the COCO leaderboard, torchvision's
``references/detection/coco_eval.py`` and mmdetection all report with, so numbers are comparable
with the published mAPs. Detections come in as the detector's per-image outputs (boxes x1y1x2y2 in
original-image pixels, contiguous labels, scores) and are mapped back to COCO category ids here.
"""
import contextlib
import io
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _coco():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # a missing dependency is something the user fixes
        from utils.errors import ConfigError
        raise ConfigError("COCO evaluation needs pycocotools; install it with `pip install pycocotools`") from e
    return COCO, COCOeval


def as_coco(gt) -> "object":
    """A ``pycocotools.coco.COCO`` from a COCO object or a COCO-format dict (index built quietly)."""
    COCO, _ = _coco()
    if isinstance(gt, COCO):
        return gt
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def to_coco_results(outputs: Mapping[int, Mapping], label_to_cat: Union[Sequence[int], Mapping[int, int]]) -> list:
    """COCO result dicts (``image_id, category_id, bbox [x, y, w, h], score``) from per-image outputs.

    ``outputs``: ``{image_id: dict(boxes=(N, 4) x1y1x2y2, labels=(N,), scores=(N,))}`` (tensors or
    arrays). ``label_to_cat[label]`` is the COCO category id of a contiguous label.
    """
    results = []
    for image_id, out in outputs.items():
        boxes, labels, scores = (_numpy(out[k]) for k in ("boxes", "labels", "scores"))
        for (x1, y1, x2, y2), label, score in zip(boxes.reshape(-1, 4).tolist(), labels.tolist(),
                                                  scores.tolist()):
            results.append(dict(image_id=int(image_id), category_id=int(label_to_cat[int(label)]),
                                bbox=[x1, y1, x2 - x1, y2 - y1], score=float(score)))
    return results


def evaluate_coco(coco_gt, detections: Union[list, Mapping[int, Mapping]],
                  label_to_cat: Union[None, Sequence[int], Mapping[int, int]] = None,
                  image_ids: Optional[Iterable[int]] = None, summary: Optional[list] = None) -> Dict[str, float]:
    """COCO box AP: ``dict(AP, AP50, AP75, APs, APm, APl)`` as fractions (pycocotools' ``stats[0:6]``).

    ``coco_gt``: a COCO object or COCO-format dict. ``detections``: a list of COCO result dicts, or
    per-image outputs with ``label_to_cat`` (see :func:`to_coco_results`). ``image_ids``: the images
    evaluated (default all of ``coco_gt``; images without detections count as misses). No detections at
    all gives 0.0 everywhere (pycocotools cannot load an empty result list). A metric whose area range
    has no ground truth is -1.0, as pycocotools reports it. ``summary``, if a list, receives the
    evaluator's printed table lines.
    """
    _, COCOeval = _coco()
    gt = as_coco(coco_gt)
    if isinstance(detections, Mapping):
        if label_to_cat is None:
            raise ValueError("per-image outputs need label_to_cat to map labels to COCO category ids")
        detections = to_coco_results(detections, label_to_cat)
    detections = list(detections)
    if not detections:
        return {k: 0.0 for k in METRICS}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if summary is not None:
        summary.extend(line for line in buf.getvalue().splitlines() if line.startswith(" Average"))
    return {k: float(v) for k, v in zip(METRICS, ev.stats[:6])}
