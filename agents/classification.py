"""ClassificationAgent: assembles a registered classifier, its data and its loss, and trains them with the
engine; every other mode is a command (commands/)."""
import os
from typing import Optional

import torch
from torch import nn

from commands import COMMANDS
from datasets import build_loaders, check_data, folder, list_datasets
from engine.checkpoint import FORMAT, plain
from engine.optim import param_groups
from engine.trainer import ClassificationTask
from graphs.losses import LOSSES, build_loss, mixing_active
from graphs.losses.group_lasso import group_lasso
from graphs.models import create_model, get_pretrained_cfg
from graphs.models.finetune import set_backbone_frozen
from graphs.models.hub import load_pretrained, pretrained_entry, resolve_pretrained
from graphs.models.pretrained import PretrainedCfg
from graphs.models.registry import check_model_args, get_builder, model_arg_names
from utils.allocator import active_allocator
from utils.config import Settings
from utils.errors import ConfigError, DataError, closest

from .base import BaseAgent

DEFAULT_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


class ClassificationAgent(BaseAgent):
    commands = COMMANDS

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.dataset == "coco":
            raise ConfigError(f"dataset 'coco' holds detection annotations: it needs agent 'DetectionAgent', not "
                              f"{config.agent!r}")
        check_data(config)
        if config.loss == "distill" and not (config.teacher and config.teacher_checkpoint):
            raise ConfigError("loss 'distill' needs teacher (a model name) and teacher_checkpoint (its weights)")
        if config.freeze_backbone_epochs and config.freeze_backbone_epochs >= config.max_epoch:
            raise ConfigError(f"freeze_backbone_epochs ({config.freeze_backbone_epochs}) must be shorter than "
                              f"max_epoch ({config.max_epoch}), or the backbone never trains")
        if config.recondense and (not config.pretrained or config.converted):
            raise ConfigError("recondense resets the masks of pretrained training-time weights: it needs pretrained "
                              "and converted false")
        for kind, name, valid in (("dataset", config.dataset, list_datasets()), ("loss", config.loss, LOSSES)):
            if name not in valid:
                raise ConfigError(f"unknown {kind} {name!r}{closest(name, valid)}; valid {kind}s are: "
                                  f"{', '.join(sorted(valid))}")
        get_builder(config.model)
        for reserved in ("num_classes", "converted", "drop_rate", "drop_path_rate"):
            if reserved in config.model_args:
                raise ConfigError(f"set {reserved.replace('_rate', '') if 'path' in reserved else reserved!r} "
                                  f"as a top-level config key, not inside model_args")
        check_model_args(config.model, config.model_args)
        if config.drop_path and "drop_path_rate" not in model_arg_names(config.model):
            raise ConfigError(f"drop_path applies to ReXNet and CondenseNetV2; model {config.model!r} has no "
                              f"residual or reactivation path to drop")
        if config.loss == "distill":
            get_builder(config.teacher)

    def __init__(self, config, experiment=None):
        super().__init__(config, experiment)
        config = self.config
        self._loaders = None
        self.pretrained = None          # the weight file loaded into the model, if any
        self.loaded_checkpoint = None   # the checkpoint a command evaluates (commands.common)
        state = self.source_state
        converted = config.converted
        if state is not None:           # a checkpoint is all a non-training mode needs: no data, no download
            self.model_args = self.check_source(config.model, config.model_args)
            self.num_classes = state.get("num_classes") or config.num_classes
            converted = bool(state.get("converted"))
        else:
            self.model_args = dict(config.model_args)
            self.num_classes = config.num_classes or DEFAULT_CLASSES.get(config.dataset) or self._folder_classes()
            entry = pretrained_entry(config.pretrained, get_pretrained_cfg(config.model)) if config.pretrained else None
            if entry is not None and entry.converted and not converted:
                self.logger.info(f"the {config.pretrained!r} weights of {config.model} are converted: building the "
                                 f"converted model")
                converted = True
        self.model = self.build_model(converted=converted)
        self.eval_cfg = self._eval_cfg((state or {}).get("eval"))
        if config.pretrained and self.source is None:
            self._load_pretrained()

    def resolve_runtime(self, config: Settings) -> Settings:
        """As BaseAgent's, and ``channels_last: null``: on for fp32 training on the CPU (faster there for every
        family: benchmarks/README.md), off otherwise."""
        config = super().resolve_runtime(config)
        if config.channels_last is None:
            config = config.replace(channels_last=self.device.type == "cpu" and config.mode == "train"
                                    and config.amp == "none")
        return config

    def _eval_cfg(self, stored: Optional[dict]) -> PretrainedCfg:
        """The eval transform (input size, crop, interpolation, mean/std): the model's ``pretrained_cfg``,
        then what the evaluated checkpoint was trained with, then the config's explicit values."""
        cfg, ecfg = self.config, self.model.pretrained_cfg
        if stored:
            ecfg = ecfg.replace(input_size=tuple(stored["input_size"]), crop_pct=stored["crop_pct"],
                                interpolation=stored["interpolation"], mean=_tuple(stored["mean"]),
                                std=_tuple(stored["std"]))
        explicit = {"input_size": cfg.input_size and (ecfg.input_size[0], cfg.input_size, cfg.input_size),
                    "crop_pct": cfg.crop_pct, "interpolation": cfg.eval_interpolation, "mean": _tuple(cfg.mean),
                    "std": _tuple(cfg.std)}
        return ecfg.replace(**{k: v for k, v in explicit.items() if v is not None})

    def _folder_classes(self):
        """The class count of a ``folder`` data set (its class folders; one sentence if unreadable)."""
        if self.config.dataset != "folder":
            return None
        return len(folder.load_folder(self.config.data_root, self.config.max_image_pixels)[2])

    def _load_pretrained(self) -> None:
        cfg = self.config
        if self.dist.is_main:        # one download, then every rank reads the cached file
            resolve_pretrained(cfg.pretrained, self.model.pretrained_cfg)
        self.dist.barrier()
        info = load_pretrained(self.model, cfg.pretrained, logger=self.logger, progress=self.dist.is_main)
        if cfg.recondense:
            self.model.reset_condensation()
            self.logger.info("recondense: the learned masks are reset; condensation runs again")
        self.pretrained = info["path"]

    # ------------------------------------------------------------------ assembly
    def build_model(self, converted: bool = False) -> nn.Module:
        cfg = self.config
        kwargs = dict(self.model_args)
        if cfg.drop_rate is not None:
            kwargs["drop_rate"] = cfg.drop_rate
        if cfg.drop_path:
            kwargs["drop_path_rate"] = cfg.drop_path
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
            cfg = self.config
            self._loaders = build_loaders(cfg, self.eval_cfg, self.device, rank=self.dist.rank,
                                          world_size=self.dist.world_size)
            n, names = self._loaders[1].num_classes, self._loaders[1].class_names
            if n != self.num_classes:
                raise ConfigError(f"the data set has {n} classes but the model was built for {self.num_classes}; "
                                  f"set num_classes to {n}")
            stored = (self.source_state or {}).get("class_names")
            if stored is not None and list(stored) != list(names):
                raise DataError(f"the data in {cfg.data_root} has the classes {_few(names)} but {self.source[0]} "
                                f"was trained on {_few(stored)}; evaluate it on data with the same class folders")
        return self._loaders

    def class_names(self):
        stored = (self.source_state or {}).get("class_names")
        if stored is not None and self._loaders is None:
            return list(stored)
        loader = self.loaders[1]
        return loader.readable_class_names or loader.class_names

    def eval_settings(self) -> dict:
        """The eval transform this run's data uses, stored in every checkpoint so that predict, export and
        validate on other data need nothing else: input size, crop_pct, interpolation, mean/std."""
        val = self.loaders[1]
        return {"input_size": list(val.input_size), "crop_pct": self.eval_cfg.crop_pct,
                "interpolation": self.eval_cfg.interpolation, "mean": list(val.mean), "std": list(val.std)}

    def checkpoint_meta(self, converted=None) -> dict:
        """The identity fields of every checkpoint this agent writes (with the class names, so that
        predict and validate can print them later without the data)."""
        cfg = self.config
        meta = {"format": FORMAT, "arch": cfg.model, "model_args": plain(self.model_args),
                "num_classes": self.num_classes, "pretrained": self.pretrained,
                "converted": self.model.is_converted if converted is None else converted, "config": plain(cfg)}
        if self._loaders is not None:
            meta["class_names"] = list(self._loaders[0].class_names)
            meta["eval"] = self.eval_settings()
        elif self.source_state is not None:      # convert: what the source checkpoint knew
            meta.update({k: self.source_state[k] for k in ("class_names", "eval") if k in self.source_state})
        return meta

    def param_groups(self) -> list:
        """The weight-decay groups, the classifier's with ``head_lr_scale``."""
        cfg = self.config
        return param_groups(self.model, cfg.weight_decay, cfg.weight_decay_mode, self.model.pretrained_cfg.classifier,
                            cfg.head_lr_scale)

    def build_task(self) -> ClassificationTask:
        cfg = self.config
        lasso = cfg.group_lasso_lambda
        return ClassificationTask(self.checkpoint_meta, self.num_classes, self._criterion(),
                                  regulariser=(lambda m: lasso * group_lasso(m)) if lasso > 0 else None,
                                  mix=self._mixup(), freeze=set_backbone_frozen if cfg.freeze_backbone_epochs else None,
                                  freeze_epochs=cfg.freeze_backbone_epochs)

    def _criterion(self):
        """``criterion(output, target, inputs)``: the configured loss (distillation also sees the inputs)."""
        cfg = self.config
        if cfg.loss == "distill":
            from graphs.losses.distill import build_teacher
            teacher = build_teacher(cfg.teacher, cfg.teacher_checkpoint, self.num_classes, cfg.teacher_args or None,
                                    self.model.pretrained_cfg).to(self.device)
            if cfg.channels_last:
                teacher = teacher.to(memory_format=torch.channels_last)
            return build_loss(cfg, teacher)
        loss = build_loss(cfg)
        return lambda output, target, inputs: loss(output, target)

    def _mixup(self):
        """Mixup/CutMix of each training batch (datasets.mixup; seeded by the batch position), or None."""
        cfg = self.config
        if not mixing_active(cfg):
            return None
        from datasets.mixup import SeededMixup
        mix = SeededMixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.mixup_mode,
                          cfg.label_smoothing, self.num_classes, cfg.mixup_off_epoch, cfg.seed)
        return lambda x, y, epoch, batch: mix(x, y, epoch, batch, self.dist.rank)

    # ------------------------------------------------------------------ training
    def train(self):
        cfg = self.config
        trainer = self.build_trainer()
        if not self.ready_to_train(trainer):
            return
        self.logger.info(f"training {cfg.model} on {cfg.dataset} for {cfg.max_epoch} epochs on {self.device} "
                         f"({self.batch_line()}; malloc: {active_allocator()}); experiment folder {self.dirs.root}")
        best = trainer.fit()
        self.logger.info(f"done: best val top-1 {best:.2f}%; checkpoints in {self.dirs.checkpoints}")
        if self.dist.is_main:
            from commands.plots import plot_training_curves
            png = plot_training_curves(self.dirs.metrics, os.path.join(self.dirs.out, "training_curves.png"))
            self.logger.info(f"wrote {png}")


def _tuple(values) -> Optional[tuple]:
    return None if values is None else tuple(values)


def _few(names) -> str:
    names = list(names)
    return ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
