"""The deployable form of a model: the one place that turns any model into what is exported or timed
(``--mode export``, ``--mode benchmark``, ``--mode flops`` and ``benchmarks/deploy_suite.py``)."""
import copy
from typing import List, Tuple

from torch import nn

from graphs.layers.runtime import runtime_graph

__all__ = ["deployable", "model_forms", "export_graph"]


def deployable(model: nn.Module, prune_classifier: bool = True, fuse: bool = False) -> nn.Module:
    """``model`` in eval mode, converted when it can be (CondenseNets; a training-time model whose
    condensation is unfinished is condensed first), and with ``fuse`` in its inference-only fused form.

    Export the unfused result (it keeps the official state-dict layout); ``fuse`` is for timing and
    eager inference (it copies the weights, so ``model`` is left as it was)."""
    model = model.eval()
    fresh = model.supports("convert")
    if fresh:
        model.set_progress(1.0)     # no-op for a trained model; finishes pruning for a random one
        model = model.convert(prune_classifier=prune_classifier).eval()
    if fuse and model.supports("fuse"):
        model = (model if fresh else copy.deepcopy(model)).fuse()
    return model


def model_forms(model: nn.Module, prune_classifier: bool = True) -> List[Tuple[str, nn.Module]]:
    """``(form, module)`` for each form of ``model`` that ``--mode flops`` counts and ``--mode benchmark``
    times: the model as built ('training-time', or 'converted' when built converted), its converted form
    (CondenseNets) and its fused inference-only form (models with ``fuse()``), in that order."""
    forms = [("converted" if getattr(model, "is_converted", False) else "training-time", model)]
    if model.supports("convert"):
        forms.append(("converted", deployable(model, prune_classifier)))
    if forms[-1][1].supports("fuse"):      # BN folded, dense blocks in one buffer
        forms.append(("fused", deployable(forms[-1][1], prune_classifier, fuse=True)))
    return forms


def export_graph(model: nn.Module) -> nn.Module:
    """What goes to the runtimes: a converted CondenseNet's runtime form (BN folded, no gathers or
    scatters, same logits), any other model as it is."""
    return runtime_graph(model) if getattr(model, "is_converted", False) else model
