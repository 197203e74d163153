"""The deployable form of a model: the one place that turns any model into what is exported or timed."""
import copy

from torch import nn

__all__ = ["deployable"]


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
