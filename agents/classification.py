"""ClassificationAgent: assembles a registered classifier, its data and its loss, and trains them with the
engine; every other mode is a command (commands/)."""
import os

import torch
from torch import nn

from commands import COMMANDS
from datasets import build_loaders, list_datasets
from engine.checkpoint import FORMAT, CheckpointManager
from engine.loggers import RunLogger
from engine.optim import build_optimizer, param_groups
from engine.trainer import Trainer
from graphs.losses import LOSSES, build_loss
from graphs.losses.group_lasso import group_lasso
from graphs.models import create_model
from graphs.models.registry import check_model_args, get_builder, model_arg_names
from utils.allocator import active_allocator
from utils.checkpoint import plain
from utils.distributed import convert_sync_batchnorm
from utils.ema import ModelEma
from utils.errors import ConfigError, closest
from utils.schedules import LRSchedule

from .base import BaseAgent

DEFAULT_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


class ClassificationAgent(BaseAgent):
    commands = COMMANDS

    @classmethod
    def check_config(cls, config) -> None:
        for kind, name, valid in (("dataset", config.dataset, list_datasets()), ("loss", config.loss, LOSSES)):
            if name not in valid:
                raise ConfigError(f"unknown {kind} {name!r}{closest(name, valid)}; valid {kind}s are: "
                                  f"{', '.join(sorted(valid))}")
        get_builder(config.model)
        for reserved in ("num_classes", "converted"):
            if reserved in config.model_args:
                raise ConfigError(f"set {reserved!r} as a top-level config key, not inside model_args")
        check_model_args(config.model, config.model_args)

    def __init__(self, config):
        super().__init__(config)
        self.num_classes = config.num_classes or DEFAULT_CLASSES.get(config.dataset)
        self.model = self.build_model(converted=config.converted)
        self._loaders = None
        self.run_logger = None

    # ------------------------------------------------------------------ assembly
    def build_model(self, converted: bool = False) -> nn.Module:
        kwargs = dict(self.config.model_args)
        if converted and "prune_classifier" in model_arg_names(self.config.model):
            kwargs.setdefault("prune_classifier", self.config.prune_classifier)  # v1's converted classifier
        model = create_model(self.config.model, num_classes=self.num_classes, converted=converted, **kwargs)
        model = model.to(self.device)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @property
    def loaders(self):
        if self._loaders is None:
            self._loaders = build_loaders(self.config, self.model.pretrained_cfg, self.device,
                                          rank=self.dist.rank, world_size=self.dist.world_size)
            n = self._loaders[1].num_classes
            if n != self.num_classes:
                raise ConfigError(f"the data set has {n} classes but the model was built for {self.num_classes}; "
                                  f"set num_classes to {n}")
        return self._loaders

    def class_names(self):
        loader = self.loaders[1]
        return loader.readable_class_names or loader.class_names

    def checkpoint_meta(self, converted=None) -> dict:
        """The identity fields of every checkpoint this agent writes."""
        cfg = self.config
        return {"format": FORMAT, "arch": cfg.model, "model_args": plain(cfg.model_args),
                "num_classes": self.num_classes,
                "converted": self.model.is_converted if converted is None else converted, "config": plain(cfg)}

    def build_trainer(self) -> Trainer:
        cfg = self.config
        train_loader, val_loader = self.loaders
        if self.dist.enabled and cfg.sync_bn:
            self.model = convert_sync_batchnorm(self.model, self.device)
        optimizer = build_optimizer(param_groups(self.model, cfg.weight_decay, cfg.weight_decay_mode), cfg.lr,
                                    cfg.momentum, cfg.nesterov)
        schedule = LRSchedule(cfg.lr_schedule, cfg.lr, len(train_loader), cfg.max_epoch, cfg.warmup_epochs,
                              cfg.warmup_lr, cfg.lr_milestones, cfg.lr_gamma)
        ema = ModelEma(self.model, cfg.ema_decay) if cfg.ema else None
        self.model.set_memory_efficient(cfg.memory_efficient)
        train_model = self.model
        if self.dist.enabled:
            train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            train_model = torch.compile(train_model)
        checkpoints = CheckpointManager(self.dirs.checkpoints, self.dist.is_main, cfg.recovery_keep,
                                        self.dist.barrier, self.logger)
        checkpoints.remove_partial_writes()
        self.run_logger = RunLogger(self.dirs.summaries, self.dirs.metrics, self.logger, cfg.max_epoch,
                                    self.dist.is_main)
        lasso = cfg.group_lasso_lambda
        trainer = Trainer(self.model, train_loader, val_loader, build_loss(cfg), optimizer, schedule, config=cfg,
                          dist=self.dist, device=self.device, checkpoints=checkpoints, run_logger=self.run_logger,
                          logger=self.logger, meta=self.checkpoint_meta, num_classes=self.num_classes, ema=ema,
                          train_model=train_model,
                          regulariser=(lambda m: lasso * group_lasso(m)) if lasso > 0 else None)
        trainer.resume()
        return trainer

    # ------------------------------------------------------------------ training
    def train(self):
        cfg = self.config
        trainer = self.build_trainer()
        if trainer.state.epoch >= cfg.max_epoch:
            self.logger.info(f"{cfg.exp_name}: already trained for {cfg.max_epoch} epochs; nothing to do")
            return
        self.logger.info(f"training {cfg.model} on {cfg.dataset} for {cfg.max_epoch} epochs on {self.device} "
                         f"({self.dist.world_size} process(es), malloc: {active_allocator()}); "
                         f"experiment folder {self.dirs.root}")
        best = trainer.fit()
        self.logger.info(f"done: best val top-1 {best:.2f}%; checkpoints in {self.dirs.checkpoints}")
        if self.dist.is_main:
            from utils.plots import plot_training_curves
            png = plot_training_curves(self.dirs.metrics, os.path.join(self.dirs.out, "training_curves.png"))
            self.logger.info(f"wrote {png}")

    def finalize(self):
        if self.run_logger is not None:
            self.run_logger.close()
        super().finalize()
