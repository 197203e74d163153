"""benchmarks/memory_estimate.py against a network whose saved tensors are counted by hand."""
import torch
from torch import nn

from benchmarks.memory_estimate import activation_line, state_bytes


def _net():
    torch.manual_seed(0)
    # conv (3->4, 3x3, bias: 112 parameters) -> ReLU -> flatten -> linear (256->5: 1285 parameters)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 5))


def test_saved_activations_per_image_and_fixed_part():
    # fp32: the conv saves its input (3*8*8 floats), ReLU its output (4*8*8), which the linear layer saves
    # again as a view (counted once); weights are parameters (not counted); plus the fp32 input image
    per_image, fixed = activation_line(_net(), (3, 8, 8))
    assert (per_image, fixed) == (4 * (192 + 256) + 4 * 192, 0)
    # bf16 autocast: the conv saves the bf16 copy of its input and of its weight (3*4*9), ReLU a bf16
    # output, the linear layer the bf16 copy of its weight (5*256): the weight copies do not grow with the batch
    per_image, fixed = activation_line(_net(), (3, 8, 8), "bf16")
    assert (per_image, fixed) == (2 * (192 + 256) + 4 * 192, 2 * (108 + 1280))


def test_model_state_bytes():
    params = 112 + 1285
    assert state_bytes(_net(), "sgd") == 4 * params * 3                   # weights, grads, momentum
    assert state_bytes(_net(), "sgd", momentum=0.0) == 4 * params * 2
    assert state_bytes(_net(), "adamw", ema=True) == 4 * params * 5       # + two moments + the EMA copy
    bn = nn.BatchNorm2d(4)      # 8 parameters; buffers: two 4-float statistics and an int64 counter
    assert state_bytes(bn, "sgd", ema=True) == 4 * 8 * 4 + 2 * (2 * 4 * 4 + 8)
