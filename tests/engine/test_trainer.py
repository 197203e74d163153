"""The Trainer on its own: gradient accumulation equals one big batch, mixup/distillation criteria."""
import logging

import pytest
import torch
from torch import nn

from datasets.loader import InMemoryLoader
from engine.checkpoint import CheckpointManager
from engine.loggers import RunLogger
from engine.optim import build_optimizer, param_groups
from engine.schedules import LRSchedule
from engine.trainer import ClassificationTask, Trainer, TrainerContext, TrainerSettings
from graphs.models.base import ModelBase
from graphs.models.finetune import set_backbone_frozen
from utils.distributed import DistContext


class Tiny(ModelBase):
    """No BatchNorm, so a big batch and accumulated micro-batches must give the same gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.classifier = nn.Linear(6, 4)

    def forward(self, x):
        return self.classifier(torch.relu(self.conv(x)).mean((2, 3)))


def _trainer(tmp_path, name, batch, accum, epochs=2, **task_args):
    """A Trainer of ``Tiny`` on 32 images; ``task_args``: the ClassificationTask's optional parts."""
    torch.manual_seed(0)
    model = Tiny()
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randint(0, 256, (32, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(32) % 4
    common = dict(device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3, seed=0)
    train = InMemoryLoader(images, labels, list("abcd"), batch_size=batch, train=True, **common)
    val = InMemoryLoader(images[:8], labels[:8], list("abcd"), batch_size=8, train=False, **common)
    settings = TrainerSettings(max_epoch=epochs, batch_size=batch, grad_accum_steps=accum, clip_grad_norm=None,
                               amp="none", validate_every=epochs, log_interval=1, recovery_every=0, seed=0,
                               compile=False, resume=None, auto_resume=False)
    opt = build_optimizer(param_groups(model, 1e-3, "all"), "sgd", 0.1, momentum=0.9, nesterov=True)
    steps = len(train) // accum
    schedule = LRSchedule("cosine", 0.1, steps, epochs)
    folder = tmp_path / name
    (folder / "ck").mkdir(parents=True)
    log = logging.getLogger("test-trainer")
    ce = nn.CrossEntropyLoss()
    meta = {"arch": "tiny", "model_args": {}, "num_classes": 4, "converted": False, "config": {}}
    task = ClassificationTask(lambda: meta, 4, lambda out, t, x: ce(out, t), **task_args)
    context = TrainerContext(DistContext(), torch.device("cpu"), CheckpointManager(str(folder / "ck")),
                             RunLogger(str(folder / "tb"), str(folder / "m.csv"), log, epochs), log)
    return model, Trainer(model, (train, val), opt, schedule, task, settings, context)


def _run(tmp_path, name, batch, accum, epochs=2):
    model, trainer = _trainer(tmp_path, name, batch, accum, epochs)
    trainer.fit()
    trainer.run_logger.close()
    return model, trainer


def test_accumulating_two_batches_equals_one_batch_of_twice_the_size(tmp_path):
    big, t_big = _run(tmp_path, "big", batch=8, accum=1)
    acc, t_acc = _run(tmp_path, "acc", batch=4, accum=2)
    assert t_big.state.step == t_acc.state.step == 8          # optimizer steps: 2 epochs x 32/8
    for (n, p), q in zip(big.named_parameters(), acc.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)
    # and it is not trivially so: a step per micro-batch trains differently
    small, _ = _run(tmp_path, "small", batch=4, accum=1)
    assert (small.conv.weight - big.conv.weight).abs().max() > 1e-4


def test_fp16_resume_from_a_checkpoint_without_a_loss_scale_starts_a_fresh_one(tmp_path, caplog):
    """A checkpoint written without amp fp16 holds an empty GradScaler state; resuming it under fp16 used to
    raise GradScaler's own "the source state dict is empty" error. It now starts a fresh scale, and says so."""
    _, trainer = _run(tmp_path, "fp32", batch=8, accum=1, epochs=1)
    state = trainer.payload()
    assert state["scaler"] == {}                    # fp32: the scaler was disabled
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)   # the fp16 run's scaler
    with caplog.at_level(logging.INFO, logger="test-trainer"):
        trainer.load(state, "last.pth")
    assert trainer.scaler.get_scale() == 1024.0 and trainer.state.epoch == 1
    assert "holds no fp16 loss scale" in caplog.text


def test_a_frozen_backbone_trains_only_the_head_then_everything_through_a_new_step_module(tmp_path):
    """freeze_backbone_epochs 1 of 2: the first epoch moves the classifier alone, the second the backbone too,
    through a step module wrapped anew (DDP reduces only the parameters that required grad when it wrapped)."""
    model, trainer = _trainer(tmp_path, "freeze", batch=8, accum=1, freeze=set_backbone_frozen, freeze_epochs=1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped, wrap = [], trainer.wrap

    def spy(m):
        wrapped.append({k: v.clone() for k, v in m.state_dict().items()})
        return wrap(m)
    trainer.wrap = spy
    trainer.fit()
    trainer.run_logger.close()
    assert len(wrapped) == 2                    # before epoch 1 (frozen) and before epoch 2 (unfrozen)
    after_1, after_2 = wrapped[1], model.state_dict()
    for k in ("conv.weight", "conv.bias"):
        assert torch.equal(after_1[k], start[k]) and not torch.equal(after_2[k], after_1[k]), k
    for k in ("classifier.weight", "classifier.bias"):
        assert not torch.equal(after_1[k], start[k]), k
