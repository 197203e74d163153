"""The timm-style recipe parts: mixup/cutmix targets, optimizers and parameter groups, lr scaling, the
cosine floor, EMA warmup, drop-path / classifier dropout, distillation loss and gradient accumulation."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from datasets.mixup import TAG_MIX, SeededMixup
from datasets.transforms import mix_seed, seeded_global_rngs
from engine.accumulate import accumulated_step, group_size, is_step_end, optimizer_steps
from engine.ema import ModelEma
from engine.optim import build_optimizer, param_groups, scaled_lr, set_lr
from engine.schedules import LRSchedule
from graphs.losses.distill import DistillationLoss, distillation_loss
from graphs.models import create_model


# ---------------------------------------------------------------------------------------- mixup / cutmix
def _batch(n=4, k=4):
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(n) % k


def _smoothed(y, k, eps):
    t = torch.full((len(y), k), eps / k)
    t[torch.arange(len(y)), y] = 1 - eps + eps / k
    return t


def test_mixup_prob_zero_leaves_images_and_smooths_targets():
    x, y = _batch()
    mix = SeededMixup(0.8, 1.0, prob=0.0, label_smoothing=0.1, num_classes=4)
    out, t = mix(x.clone(), y, epoch=0, batch=0)
    assert torch.equal(out, x)
    torch.testing.assert_close(t, _smoothed(y, 4, 0.1))        # on 1 - 0.1 + 0.025, off 0.025


def test_mixup_lam_is_the_seeded_beta_draw_and_images_match_targets():
    x, y = _batch()
    mix = SeededMixup(0.4, 0.0, prob=1.0, label_smoothing=0.0, num_classes=4, seed=7)
    # timm's batch mode with mixup only: one rand() (the prob test), then beta(alpha, alpha)
    with seeded_global_rngs(mix_seed(7, 2, 5, 0, TAG_MIX)):
        np.random.rand()
        lam = float(np.random.beta(0.4, 0.4))
    out, t = mix(x.clone(), y, epoch=2, batch=5)
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
    onehot = _smoothed(y, 4, 0.0)
    torch.testing.assert_close(t, lam * onehot + (1 - lam) * onehot.flip(0))
    # reproducible for resume, different per batch, and the global numpy stream is untouched
    state = np.random.get_state()[1].copy()
    again, t2 = mix(x.clone(), y, epoch=2, batch=5)
    assert torch.equal(again, out) and torch.equal(t2, t)
    assert np.array_equal(np.random.get_state()[1], state)
    _, t3 = mix(x.clone(), y, epoch=2, batch=6)
    assert not torch.equal(t3, t)


def test_cutmix_area_equals_target_weight():
    x, y = _batch()
    mix = SeededMixup(0.0, 1.0, prob=1.0, label_smoothing=0.0, num_classes=4, seed=1)
    lams = []
    for batch in range(5):
        out, t = mix(x.clone(), y, epoch=0, batch=batch)
        from_mirror = (out != x) & (out == x.flip(0))
        pasted = from_mirror.all(1).float().mean((1, 2))          # fraction of pixels from the mirror
        assert torch.equal(pasted, pasted[:1].expand(4))            # one box for the whole batch
        lam = 1 - float(pasted[0])
        torch.testing.assert_close(t[0, y[0]], torch.tensor(lam))   # lam corrected to the clipped box
        lams.append(lam)
    assert any(0 < lam < 1 for lam in lams)


def test_mixup_off_epoch_and_odd_batch():
    x, y = _batch(5)
    mix = SeededMixup(1.0, 0.0, prob=1.0, label_smoothing=0.1, num_classes=4, off_epoch=3)
    out, t = mix(x.clone(), y, epoch=3, batch=0)
    assert torch.equal(out, x)
    torch.testing.assert_close(t, _smoothed(y, 4, 0.1))
    out, t = mix(x.clone(), y, epoch=2, batch=0)
    assert not torch.equal(out[:4], x[:4]) and torch.equal(out[4], x[4])   # odd: the last sample unmixed
    torch.testing.assert_close(t[4], _smoothed(y[4:], 4, 0.1)[0])
    torch.testing.assert_close(t.sum(1), torch.ones(5))


# ---------------------------------------------------------------------------------------- optimizers
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.classifier = nn.Linear(4, 2)

    def forward(self, x):
        return self.classifier(self.bn(self.conv(x)).mean((2, 3)))


def _ids(group):
    return {id(p) for p in group["params"]}


def test_param_groups_weight_decay_and_head_scale():
    m = _Net()
    (only,) = param_groups(m, 1e-4, "all")
    assert len(only["params"]) == 6 and only["weight_decay"] == 1e-4 and only["lr_scale"] == 1.0
    groups = param_groups(m, 1e-4, "ndim2")
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(2, 1e-4), (4, 0.0)]
    assert _ids(groups[0]) == {id(m.conv.weight), id(m.classifier.weight)}
    groups = param_groups(m, 5e-5, "ndim2", head_prefix="classifier", head_lr_scale=10.0)
    assert [(len(g["params"]), g["weight_decay"], g["lr_scale"]) for g in groups] == \
        [(1, 5e-5, 1.0), (3, 0.0, 1.0), (1, 5e-5, 10.0), (1, 0.0, 10.0)]
    assert _ids(groups[2]) == {id(m.classifier.weight)} and _ids(groups[3]) == {id(m.classifier.bias)}
    opt = build_optimizer(groups, "sgd", 0.1)
    set_lr(opt, 0.02)
    assert [g["lr"] for g in opt.param_groups] == [0.02, 0.02, pytest.approx(0.2), pytest.approx(0.2)]
    from utils.errors import ConfigError
    with pytest.raises(ConfigError, match="no parameters under 'head'"):
        param_groups(m, 1e-4, "all", head_prefix="head", head_lr_scale=2.0)


@pytest.mark.parametrize("name,cls,expect", [
    ("sgd", torch.optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True)),
    ("adamw", torch.optim.AdamW, dict(lr=0.1, betas=(0.8, 0.99), eps=1e-7)),
    ("rmsprop", None, dict(lr=0.1, alpha=0.9, momentum=0.8, eps=1e-7)),
    ("lamb", None, dict(lr=0.1, betas=(0.8, 0.99), eps=1e-7)),
])
def test_build_optimizer_classes_and_hyper_parameters(name, cls, expect):
    from timm.optim import Lamb, RMSpropTF
    cls = cls or {"rmsprop": RMSpropTF, "lamb": Lamb}[name]
    m = _Net()
    opt = build_optimizer(param_groups(m, 3e-5, "ndim2"), name, 0.1, momentum=0.8, nesterov=True, eps=1e-7,
                          betas=(0.8, 0.99))
    assert type(opt) is cls
    for g in opt.param_groups:
        for k, v in expect.items():
            assert g[k] == v, (k, g[k])
    assert [g["weight_decay"] for g in opt.param_groups] == [3e-5, 0.0]
    loss = m(torch.randn(2, 3, 5, 5)).sum()
    loss.backward()
    opt.step()                                                  # every optimizer takes a step


def test_sgd_without_momentum_drops_nesterov_and_defaults():
    opt = build_optimizer(param_groups(_Net(), 0.0), "sgd", 0.1, momentum=0.0, nesterov=True)
    assert opt.param_groups[0]["nesterov"] is False
    opt = build_optimizer(param_groups(_Net(), 0.0), "adamw", 0.1)
    assert opt.param_groups[0]["eps"] == 1e-8 and opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_lr_scale_batch_is_linear():
    assert scaled_lr(0.1, 512, 256) == pytest.approx(0.2)
    assert scaled_lr(0.1, 64 * 4, 128) == pytest.approx(0.2)    # effective batch = batch x accum steps
    assert scaled_lr(0.1, 512, None) == 0.1


# ---------------------------------------------------------------------------------------- schedule / EMA
def test_min_lr_matches_timm_cosine_lr_min():
    from timm.scheduler import CosineLRScheduler
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    timm_sched = CosineLRScheduler(opt, t_initial=50, lr_min=0.01, t_in_epochs=False)
    ours = LRSchedule("cosine", 0.4, iters_per_epoch=10, epochs=5, min_lr=0.01)
    for t in (0, 7, 25, 49):
        assert ours.lr_at(t) == pytest.approx(timm_sched._get_lr(t)[0], rel=1e-12)
    assert LRSchedule("cosine", 0.4, 10, 5).lr_at(25) == 0.5 * 0.4 * (1 + math.cos(math.pi * 0.5))


@pytest.mark.parametrize("warmup_epochs,warmup_lr,min_lr", [(0, 0.0, 0.0), (2, 1e-5, 0.0), (3, 0.01, 1e-3),
                                                            (1, 0.0, 0.05)])
def test_per_epoch_schedule_is_timm_cosine_as_train_py_steps_it(warmup_epochs, warmup_lr, min_lr):
    from timm.scheduler import create_scheduler_v2
    epochs, iters, lr0 = 10, 3, 0.4
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr0)
    sched, num_epochs = create_scheduler_v2(opt, "cosine", num_epochs=epochs, min_lr=min_lr, warmup_lr=warmup_lr,
                                            warmup_epochs=warmup_epochs)
    assert num_epochs == epochs and sched.t_in_epochs
    timm_lrs, updates = [], 0
    for epoch in range(epochs):                 # train.py: step_update after every update, step(epoch + 1)
        for _ in range(iters):
            timm_lrs.append(opt.param_groups[0]["lr"])
            updates += 1
            sched.step_update(num_updates=updates)
        sched.step(epoch + 1)
    ours = LRSchedule("cosine", lr0, iters, epochs, warmup_epochs, warmup_lr, min_lr=min_lr, lr_step="epoch")
    assert [ours.lr_at(t) for t in range(epochs * iters)] == pytest.approx(timm_lrs, rel=1e-12, abs=1e-15)
    assert len(set(timm_lrs)) == epochs                       # one value per epoch
    per_iter = LRSchedule("cosine", lr0, iters, epochs, warmup_epochs, warmup_lr, min_lr=min_lr)
    assert [per_iter.lr_at(t) for t in range(epochs * iters)] != pytest.approx(timm_lrs, rel=1e-6)


def test_per_epoch_multistep_equals_per_iteration_and_warms_up_per_epoch():
    # milestones fall on epoch boundaries: both granularities agree; the warmup steps once per epoch
    kw = dict(milestones=[0.5, 0.75], gamma=0.1)
    it, ep = LRSchedule("multistep", 0.1, 4, 6, **kw), LRSchedule("multistep", 0.1, 4, 6, lr_step="epoch", **kw)
    assert [it.lr_at(t) for t in range(24)] == [ep.lr_at(t) for t in range(24)]
    ep = LRSchedule("multistep", 0.1, 4, 6, warmup_epochs=2, warmup_lr=0.02, lr_step="epoch", **kw)
    assert [ep.lr_at(t) for t in (0, 3, 4, 7, 8, 11, 12, 19, 20)] == pytest.approx(
        [0.02, 0.02, 0.06, 0.06, 0.1, 0.1, 0.01, 0.01, 0.001], rel=1e-12)


def test_multistep_fractions_change_the_lr_at_epoch_boundaries_for_odd_epochs():
    # official CondenseNet CIFAR multistep: lr0, x0.1 from epoch >= 0.5 E, x0.01 from epoch >= 0.75 E.
    # E = 5, 10 iterations per epoch: epochs 0-2 (steps 0-29) 0.1, epoch 3 (>= 2.5) 0.01, epoch 4 (>= 3.75) 0.001
    s = LRSchedule("multistep", 0.1, 10, 5, milestones=[0.5, 0.75], gamma=0.1)
    assert [s.lr_at(t) for t in (0, 24, 25, 29, 30, 37, 38, 39, 40, 49)] == pytest.approx(
        [0.1] * 4 + [0.01] * 4 + [0.001] * 2, rel=1e-12)
    # E = 3, 4 iterations: x0.1 from epoch 2 (>= 1.5); 0.75 E = 2.25 is never reached
    s = LRSchedule("multistep", 0.1, 4, 3, milestones=[0.5, 0.75], gamma=0.1)
    assert [s.lr_at(t) for t in range(12)] == pytest.approx([0.1] * 8 + [0.01] * 4, rel=1e-12)


def test_ema_warmup_is_timm_model_ema_v3():
    from timm.utils.model_ema import ModelEmaV3
    net = nn.Linear(2, 2)
    ours = ModelEma(net, 0.9998, warmup=True)
    theirs = ModelEmaV3(net, decay=0.9998, use_warmup=True)
    for step in (1, 2, 3, 10, 1000, 10 ** 7):
        assert ours.decay_at(step) == pytest.approx(theirs.get_decay(step), rel=1e-12), step
    assert ours.decay_at(1) == 0.0 and ours.decay_at(2) == pytest.approx(1 - 2 ** (-2 / 3))
    assert ours.decay_at(10 ** 7) == 0.9998
    assert ModelEma(net, 0.9998).decay_at(1) == 0.9998          # no warmup: the constant decay
    with torch.no_grad():
        net.weight.add_(1.0)
    ours.update(step=1)                                         # decay 0: the EMA becomes a copy
    assert torch.equal(ours.module.weight, net.weight)


# ---------------------------------------------------------------------------------------- drop path / drop rate
def test_rexnet_block_drop_path_drops_whole_branches_in_train_only():
    from graphs.models.rexnet import LinearBottleneck
    torch.manual_seed(0)
    blk = LinearBottleneck(8, 12, t=6, stride=1, use_se=True, drop_path_rate=0.5)
    ref = LinearBottleneck(8, 12, t=6, stride=1, use_se=True)
    ref.load_state_dict(blk.state_dict())
    x = torch.randn(16, 8, 5, 5)
    blk.train()
    ref.train()
    out = blk(x)
    branch = ref.out(x)
    kept = 0
    for i in range(16):
        if torch.allclose(out[i, :8], x[i]) and torch.equal(out[i, 8:], torch.zeros_like(out[i, 8:])):
            continue                                            # dropped: shortcut only, extra channels 0
        torch.testing.assert_close(out[i], torch.cat([branch[i, :8] / 0.5 + x[i], branch[i, 8:] / 0.5]))
        kept += 1
    assert 0 < kept < 16
    blk.eval()
    ref.eval()
    assert torch.equal(blk(x), ref(x))


def test_rexnet_drop_path_rates_are_timms_and_drop_rate_maps_to_dropout():
    import timm
    m = create_model("rexnet_1_0", num_classes=10, drop_path_rate=0.3, drop_rate=0.1)
    rates = [b.drop_path.drop_prob if b.drop_path is not None else 0.0 for b in m.blocks()]
    # timm's rates for the same network, on the blocks with a shortcut (timm builds a DropPath on the others
    # too, never applied)
    ref = [b for b in timm.create_model("rexnet_100", drop_path_rate=0.3).features if hasattr(b, "use_shortcut")]
    expected = [b.drop_path.drop_prob if b.use_shortcut else 0.0 for b in ref]
    assert rates == pytest.approx(expected) and rates[-1] == pytest.approx(0.3)
    assert m.output[0].p == 0.1
    assert create_model("rexnet_lite_1_0", drop_rate=0.3).output[3].p == 0.3
    assert create_model("rexnet_1_0").output[0].p == 0.2        # the official default is untouched


def test_cdnv2_layer_drop_path_drops_the_whole_layer():
    from graphs.layers.dense import _SFRDenseLayer
    torch.manual_seed(0)
    layer = _SFRDenseLayer(16, 8, group_1x1=4, group_3x3=4, group_trans=4, drop_path=0.5).train()
    ref = _SFRDenseLayer(16, 8, group_1x1=4, group_3x3=4, group_trans=4).train()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(16, 16, 4, 4)
    out = layer(x)
    full = ref(x)                                               # cat([x + r, new])
    kept = 0
    for i in range(16):
        if torch.equal(out[i, :16], x[i]) and torch.equal(out[i, 16:], torch.zeros(8, 4, 4)):
            continue                                            # dropped: identity on x, zero new maps
        torch.testing.assert_close(out[i], torch.cat([x[i] + (full[i, :16] - x[i]) / 0.5, full[i, 16:] / 0.5]))
        kept += 1
    assert 0 < kept < 16
    assert torch.equal(layer.eval()(x), ref.eval()(x))
    m = create_model("cdnv2_110", stages=(2, 2, 2), drop_path_rate=0.25)
    assert [layer.drop_path for _, layer in m.dense_layers()] == pytest.approx([0.05 * j for j in range(6)])


@pytest.mark.parametrize("name,kw", [("condensenet_50", dict(stages=(1, 1, 1))),
                                     ("cdnv2_110", dict(stages=(1, 1, 1))),
                                     ("densenet_bc_100", dict(stages=(1, 1, 1)))])
def test_classifier_dropout_train_only(name, kw):
    torch.manual_seed(0)
    m = create_model(name, drop_rate=0.5, **kw)
    ref = create_model(name, **kw)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    ref.eval()
    assert torch.equal(m(x), ref(x))
    m.train()
    ref.train()
    assert not torch.allclose(m(x), ref(x))


# ---------------------------------------------------------------------------------------- distillation
def test_distillation_loss_hand_computed():
    student = torch.tensor([[0.0, 0.0]])                       # p_s = (1/2, 1/2) at any temperature
    teacher = torch.tensor([[math.log(3.0), 0.0]])             # p_t = (3/4, 1/4) at tau 1
    y = torch.tensor([0])
    ce = math.log(2.0)
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(distillation_loss(student, teacher, y, 0.0, 1.0)) == pytest.approx(ce)
    assert float(distillation_loss(student, teacher, y, 1.0, 1.0)) == pytest.approx(kl1)
    assert float(distillation_loss(student, teacher, y, 0.3, 1.0)) == pytest.approx(0.7 * ce + 0.3 * kl1)
    # tau 2: teacher logits / 2 = (ln 3 / 2, 0) -> p_t = (sqrt3, 1) / (1 + sqrt3); the KL is multiplied by 4
    r = math.sqrt(3.0)
    p, q = r / (1 + r), 1 / (1 + r)
    kl2 = p * math.log(2 * p) + q * math.log(2 * q)
    assert float(distillation_loss(student, teacher, y, 0.5, 2.0)) == pytest.approx(0.5 * ce + 0.5 * 4 * kl2)
    # soft (mixup) targets: CE = -sum t log p_s = ln 2 for any t on two classes
    soft = torch.tensor([[0.6, 0.4]])
    assert float(distillation_loss(student, teacher, soft, 0.0, 1.0)) == pytest.approx(ce)


def test_distillation_teacher_stays_frozen_in_eval():
    teacher = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.9))
    loss_fn = DistillationLoss(teacher, alpha=1.0, tau=1.0).train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student = nn.Linear(3, 2)
    x = torch.randn(8, 3)
    loss = loss_fn(student(x), torch.zeros(8, dtype=torch.long), x)
    loss.backward()
    assert teacher[0].weight.grad is None and student.weight.grad is not None
    assert float(loss_fn(teacher(x), torch.zeros(8, dtype=torch.long), x)) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------- accumulation
def test_accumulation_of_two_half_batches_equals_one_full_batch():
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)
    crit = nn.CrossEntropyLoss()
    one, two = net(), net()
    opts = [torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3) for m in (one, two)]
    for _ in range(2):                                          # momentum buffers agree too
        accumulated_step(one, crit, opts[0], [(x, y)])
        accumulated_step(two, crit, opts[1], [(x[:4], y[:4]), (x[4:], y[4:])])
    for a, b in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert optimizer_steps(10, 4) == 3 and optimizer_steps(8, 4) == 2
    assert [group_size(i, 10, 4) for i in range(10)] == [4] * 8 + [2, 2]
    assert [i for i in range(10) if is_step_end(i, 10, 4)] == [3, 7, 9]
