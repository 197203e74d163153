"""ONNX export of a whole detector (resize, backbone, FPN, heads, box decoding, NMS) with onnxruntime parity.

torchvision's detection models export with the TorchScript-based exporter (``dynamo=False``) at opset
>= 11 in eval mode, one image per call (torchvision's own ONNX tests do the same). The graph takes one
(3, H, W) float image in [0, 1] with dynamic H and W and returns ``boxes`` (N, 4) x1y1x2y2 in input
pixels, ``labels`` (N,) and ``scores`` (N,), N dynamic, named and ordered as the detector's output
dict (Faster R-CNN: boxes, labels, scores; RetinaNet/FCOS: boxes, scores, labels). The converted SFR's
``index_add`` uses the project's ScatterElements(add) symbolic (``graphs.layers.runtime.legacy_onnx_overrides``),
so opset 16+ is needed for a converted CondenseNetV2 backbone.
"""
import warnings
from typing import Sequence

import numpy as np
import torch

from graphs.layers.runtime import legacy_onnx_overrides
from utils.atomic_io import atomic_path, check_writable
from utils.errors import ExportError

def export_detector_onnx(model: torch.nn.Module, path: str, image_size: Sequence[int] = (3, 800, 1216),
                         opset: int = 17, check: bool = True, check_sizes: Sequence[Sequence[int]] = None,
                         atol: float = 1e-3) -> dict:
    """Export ``model`` (put in eval mode, restored afterwards) to ONNX at ``path`` (atomic).

    The trace uses a random image of ``image_size``; with ``check`` the file runs in onnxruntime
    (CPU) on that size and on each of ``check_sizes`` (default: one other aspect ratio) and must
    give the same number of detections, the same labels, and boxes/scores within ``atol`` (boxes
    relative to the image side). Returns ``{'path', 'opset', 'max_box_diff', 'max_score_diff',
    'detections'}`` (diffs None without check).
    """
    import onnxruntime as ort

    path = check_writable(path, "ONNX file")
    c, h, w = (int(s) for s in image_size)
    sizes = [(c, h, w)] + [tuple(int(v) for v in s) for s in (check_sizes or [(c, w, h)])]
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(*s, generator=g) for s in sizes]
    ref_param = next(model.parameters())
    was = model.training
    model.eval()
    try:
        with torch.no_grad():   # the graph's outputs follow the detector's dict order (arch-dependent)
            names = list(model([images[0].to(ref_param.device)])[0])
        with atomic_path(path, "ONNX file") as tmp:
            with legacy_onnx_overrides(opset), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, ([images[0].to(ref_param.device)],), tmp, dynamo=False,
                                  opset_version=opset, input_names=["image"], output_names=names,
                                  dynamic_axes={"image": {1: "height", 2: "width"},
                                                **{k: {0: "detections"} for k in names}})
            result = dict(path=path, opset=opset, max_box_diff=None, max_score_diff=None, detections=[])
            if check:
                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                sess = ort.InferenceSession(tmp, opts, providers=["CPUExecutionProvider"])
                box_diff = score_diff = 0.0
                for img in images:
                    with torch.no_grad():
                        ref = model([img.to(ref_param.device)])[0]
                    ref = {k: v.cpu().numpy() for k, v in ref.items()}
                    out = dict(zip(names, sess.run(None, {"image": img.numpy()})))
                    n = len(ref["boxes"])
                    if len(out["boxes"]) != n or sorted(out["labels"].tolist()) != sorted(ref["labels"].tolist()):
                        raise ExportError(f"the ONNX detector finds {len(out['boxes'])} boxes on a "
                                          f"{tuple(img.shape)} image where PyTorch finds {n} (or other labels)")
                    if n:
                        b, s = _matched_diffs(out, ref)
                        box_diff = max(box_diff, b / max(img.shape[-2:]))
                        score_diff = max(score_diff, s)
                    result["detections"].append(n)
                if not (box_diff <= atol and score_diff <= atol):
                    raise ExportError(f"the ONNX detector differs from PyTorch (boxes {box_diff:.3g} of the image "
                                      f"side, scores {score_diff:.3g} > {atol:g})")
                result.update(max_box_diff=box_diff, max_score_diff=score_diff)
    finally:
        model.train(was)
    return result


def _matched_diffs(out: dict, ref: dict):
    """Largest box / score difference of each ONNX detection to its closest PyTorch one of the same
    label: near-equal scores may come out of NMS / top-k in another order, so rows are matched."""
    box, score = 0.0, 0.0
    for label in np.unique(ref["labels"]):
        a, r = out["labels"] == label, ref["labels"] == label
        d = np.abs(out["boxes"][a][:, None, :] - ref["boxes"][r][None, :, :]).max(-1) \
            + np.abs(out["scores"][a][:, None] - ref["scores"][r][None, :])
        j = d.argmin(1)
        box = max(box, float(np.abs(out["boxes"][a] - ref["boxes"][r][j]).max()))
        score = max(score, float(np.abs(out["scores"][a] - ref["scores"][r][j]).max()))
    return box, score
