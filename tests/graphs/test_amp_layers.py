"""Memory-efficient BN-act-conv under autocast: same outputs and gradients as the plain path, in bf16 on
the CPU and in fp16 on CUDA (marked ``cuda``: skipped without a GPU, run by benchmarks/gpu_check.sh).

The plain path (autograd through BatchNorm2d -> activation -> autocast conv2d) is the independent
reference; the memory-efficient path recomputes BN/activation in a hand-written backward, which once
fed oneDNN a bf16 gradient with an fp32 weight and failed ("could not create a primitive descriptor").
"""
import copy

import pytest
import torch

from graphs.layers import SFR, Conv, LearnedGroupConv


def _close(a, b, name, tol=2e-2):
    """Max error relative to the reference's largest magnitude (bf16 has 8 mantissa bits, fp16 11)."""
    assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} vs {b.dtype}"
    a, b = a.detach().float(), b.detach().float()
    err = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
    assert err < tol, f"{name}: relative error {err:.3g}"


def _layers():
    torch.manual_seed(0)
    lgc_final = LearnedGroupConv(16, 16, 1, groups=4, activation="ReLU")
    lgc_final.advance(lgc_final.final_stage)          # condensed form: channel gather + grouped conv
    assert lgc_final._condensed_ready
    return {
        "conv3x3_relu_list": (Conv(16, 8, 3, padding=1, groups=2), [(2, 8, 6, 6), (2, 8, 6, 6)], False),
        "conv1x1_hs": (Conv(16, 8, 1, activation="HS", act_name="activation"), [(2, 16, 6, 6)], False),
        "lgc_masked": (LearnedGroupConv(16, 16, 1, groups=4, activation="HS", act_name="activation"),
                       [(2, 8, 6, 6), (2, 8, 6, 6)], False),
        "lgc_condensed": (lgc_final, [(2, 16, 6, 6)], False),
        "sfr": (SFR(8, 16, groups=4), [(2, 8, 6, 6)], True),
    }


# (device, the autocast dtype): bf16 is the CPU's training precision, fp16 CUDA's
PRECISIONS = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
              pytest.param("cuda", torch.float16, id="cuda-fp16", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device, low", PRECISIONS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("low_input", [False, True], ids=["fp32-input", "low-input"])
@pytest.mark.parametrize("name", list(_layers()))
def test_memory_efficient_matches_plain_under_autocast(name, low_input, channels_last, device, low):
    layer, shapes, with_old = _layers()[name]
    layer.train().to(device)
    input_dtype = low if low_input else torch.float32
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(s, generator=g).to(device, input_dtype).contiguous(memory_format=fmt) for s in shapes]
    old = torch.randn(2, 16, 6, 6, generator=g).to(device, input_dtype) if with_old else None
    grad_out = torch.randn(2, layer.out_channels if hasattr(layer, "out_channels") else 8, 6, 6,
                           generator=g).to(device)
    results = {}
    for efficient in (False, True):
        m = copy.deepcopy(layer)
        m.memory_efficient = efficient
        xs = [f.clone().requires_grad_(True) for f in feats]
        with torch.autocast(device, low):
            arg = xs if len(xs) > 1 else xs[0]
            out = m(arg, old) if with_old else m(arg)
        out.backward(grad_out.to(out.dtype))
        results[efficient] = (out, [x.grad for x in xs], dict(m.named_parameters()), m)
    (out_p, gx_p, par_p, m_p), (out_e, gx_e, par_e, m_e) = results[False], results[True]
    # the conv runs in the autocast dtype; SFR's ``x_old + r`` promotes to an fp32 x_old
    assert out_e.dtype == out_p.dtype == (input_dtype if with_old else low)
    _close(out_e, out_p, "output", tol=1e-2)
    for i, (a, b) in enumerate(zip(gx_e, gx_p)):
        assert a.dtype == input_dtype
        _close(a, b, f"input {i} grad")
    for n, p in par_p.items():
        assert par_e[n].grad is not None and par_e[n].grad.dtype == torch.float32, n
        _close(par_e[n].grad, p.grad, f"{n} grad")
    # BN running statistics updated exactly once on both paths
    for (n, b), c in zip(m_p.state_dict().items(), m_e.state_dict().values()):
        if b.is_floating_point():
            torch.testing.assert_close(c, b, rtol=1e-2, atol=1e-3, msg=lambda s: f"{n}: {s}")
        else:
            assert torch.equal(c, b), n
