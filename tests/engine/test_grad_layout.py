"""Gradients laid out as their parameters under channels_last (what DDP's gradient buckets expect: a
mismatch made every rank warn "grad strides do not match bucket view strides"); the 2-process run
through main.py is in tests/cli/test_distributed.py."""
import pytest
import torch

from graphs.layers.lgc import _MaskedWeight
from graphs.losses.group_lasso import group_lasso
from graphs.models import create_model

TINY = {"densenet_bc_100": (dict(stages=(1, 1), growth=(4, 4)), 16),     # (model_args, input side)
        "condensenet_50": (dict(stages=(1, 1), growth=(4, 4)), 16),
        "cdnv2_110": (dict(stages=(1, 1, 1), growth=(4, 4, 4)), 32),
        "rexnet_1_0": (dict(depth_mult=0.5), 32)}


def _forms(name):
    """(label, model) in train mode: masks dense, masks final, and the converted model (fine-tuning)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, **TINY[name][0])
    yield "start", model
    if model.supports("convert"):
        model.set_progress(1.0)
        yield "condensed", model
        yield "converted", model.convert(prune_classifier=False)


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_every_grad_has_its_parameters_strides_under_channels_last(name, memory_efficient):
    for label, model in _forms(name):
        model = model.train().to(memory_format=torch.channels_last)
        if memory_efficient and model.supports("memory_efficient"):
            model.set_memory_efficient(True)
        side = TINY[name][1]
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
        loss = model(x.contiguous(memory_format=torch.channels_last)).square().mean()
        (loss + 1e-3 * group_lasso(model)).backward()     # the lasso reaches the masked weights too
        grads = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
        assert len(grads) == sum(1 for p in model.parameters() if p.requires_grad), label
        wrong = [(n, tuple(p.shape), p.stride(), p.grad.stride()) for n, p in grads if p.grad.stride() != p.stride()]
        assert not wrong, (label, wrong[:3])


def test_masked_weight_is_the_product_with_its_gradient():
    """_MaskedWeight against autograd's own product, in double: values and gradients (gradcheck), and the
    channels_last weight's strides kept on the result and the gradient."""
    w = torch.randn(6, 4, 1, 1, dtype=torch.double).to(memory_format=torch.channels_last).requires_grad_()
    mask = (torch.rand(6, 4, 1, 1, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    assert torch.autograd.gradcheck(lambda w: _MaskedWeight.apply(w, mask), (w,))
    out = _MaskedWeight.apply(w, mask)
    assert torch.equal(out, w * mask) and out.stride() == w.stride() == (4, 1, 4, 4)
    out.backward(torch.ones_like(out))
    assert torch.equal(w.grad, mask) and w.grad.stride() == w.stride()
