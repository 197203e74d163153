"""DetectionAgent: a torchvision detector (graphs.detection) on COCO data (datasets.coco), trained by the
engine's Trainer with detection's task (``engine.detection.DetectionTask``); the other modes are
commands/detection.py."""
from typing import Optional

import torch
from torch import nn

from commands.detection import DETECTION_COMMANDS
from datasets import build_loaders
from engine.checkpoint import FORMAT, plain
from engine.detection import DetectionTask
from graphs.detection import ARCHS, check_image_sizes, detector_from_config, list_backbones
from graphs.models import get_pretrained_cfg
from graphs.models.hub import resolve_pretrained
from graphs.models.registry import get_builder
from utils.config import SCHEMA_BY_NAME
from utils.errors import ConfigError, DataError, closest

from .base import BaseAgent


# keys a DetectionAgent run would silently ignore: refused instead (one sentence, before any work)
CLASSIFICATION_ONLY = ("pretrained", "freeze_backbone_epochs", "head_lr_scale", "recondense", "loss", "label_smoothing",
                       "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "mixup_mode", "mixup_off_epoch",
                       "drop_rate", "drop_path", "teacher", "teacher_args", "teacher_checkpoint", "kd_alpha",
                       "kd_tau", "group_lasso_lambda", "sync_bn", "compile", "channels_last", "input_size",
                       "crop_pct", "eval_interpolation", "train_interpolation", "mean", "std", "auto_augment",
                       "reprob", "remode", "export_formats", "calibration_size", "runtime", "runtime_artifact",
                       "runtime_threads", "runtime_precision", "benchmark_batch_size", "prune_classifier")
DETECTION_EQUIVALENT = {"pretrained": " (backbone weights: backbone_pretrained)",
                        "freeze_backbone_epochs": " (trainable_backbone_layers freezes backbone stages)",
                        "input_size": " (min_size and max_size set the detector's image size)"}


class DetectionAgent(BaseAgent):
    commands = DETECTION_COMMANDS

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        check_image_sizes(config)
        valid = list_backbones()
        if config.model not in valid:
            try:
                get_builder(config.model)
            except ConfigError:
                raise ConfigError(f"unknown backbone {config.model!r}{closest(config.model, valid)}; valid detection "
                                  f"backbones are: {', '.join(valid)}") from None
            raise ConfigError(f"model {config.model!r} is a classification-only model (no multi-scale features for "
                              f"an FPN); use one of the detection backbones: {', '.join(valid)}")
        if config.dataset != "coco":
            raise ConfigError(f"DetectionAgent reads COCO detection data: set dataset 'coco', not {config.dataset!r}")
        if config.detector not in ARCHS:
            raise ConfigError(f"unknown detector {config.detector!r}; use one of {', '.join(ARCHS)}")
        if config.model_args:
            raise ConfigError("model_args does not apply to detection backbones; use the detection keys "
                              "(detector, fpn_reductions, fpn_channels, ...)")
        if list(config.benchmark_runtimes) != SCHEMA_BY_NAME["benchmark_runtimes"].default:
            raise ConfigError("benchmark_runtimes applies to classification models; the detection benchmark "
                              "times the PyTorch detector (export it with --mode export for onnxruntime)")
        for key in CLASSIFICATION_ONLY:
            if config[key] != SCHEMA_BY_NAME[key].default:
                raise ConfigError(f"{key} applies to classification (ClassificationAgent); the detection recipe does "
                                  f"not use it, so remove it from the config{DETECTION_EQUIVALENT.get(key, '')}")

    def __init__(self, config, experiment=None):
        super().__init__(config, experiment)
        config = self.config
        # image sizes change every step: cuDNN's autotuner would benchmark anew for each (torchvision's references)
        torch.backends.cudnn.benchmark = False
        self.loaded_checkpoint = None
        self._loaders = None
        state = self.source_state
        if state is not None:       # a checkpoint is all a non-training mode needs: no data, no download
            self.check_source(f"{config.detector}:{config.model}", {})
            self.num_classes = state.get("num_classes") or config.num_classes
            self.class_names_ = list(state.get("class_names") or [])
            self.pretrained = None
            trained = state.get("config") or {}
            frozen = trained.get("frozen_bn")       # the BN form training used (null: frozen iff weights loaded)
            self._build = {"converted": bool(state.get("converted")),
                           "frozen_bn": bool(trained.get("backbone_pretrained")) if frozen is None else frozen}
        else:
            self._loaders = build_loaders(config, None, self.device, rank=self.dist.rank,
                                          world_size=self.dist.world_size)
            self.num_classes = config.num_classes or self._loaders[0].num_classes
            self.class_names_ = list(self._loaders[0].class_names)
            self.pretrained = self._backbone_weights()
            self._build = {}
        self.model = self.build_model()

    @property
    def loaders(self):
        if self._loaders is None:
            self._loaders = build_loaders(self.config, None, self.device, rank=self.dist.rank,
                                          world_size=self.dist.world_size)
            names = list(self._loaders[0].class_names)
            if self.class_names_ and names != self.class_names_:
                raise DataError(f"the COCO data in {self.config.data_root} has the categories {names[:4]}... but "
                                f"{self.source[0]} was trained on {self.class_names_[:4]}...; evaluate it on data "
                                f"with the same categories")
        return self._loaders

    def class_names(self):
        return self.class_names_

    def _backbone_weights(self) -> Optional[str]:
        """The weight file of ``backbone_pretrained`` (registry tag, path or URL; torchvision baselines: a path)."""
        source = self.config.backbone_pretrained
        if not source:
            return None
        try:
            cfg = get_pretrained_cfg(self.config.model)
        except (ConfigError, KeyError):
            cfg = None      # a torchvision baseline: not in the registry, so only a path or URL
        if self.dist.is_main:
            path = resolve_pretrained(source, cfg)
        self.dist.barrier()
        return path if self.dist.is_main else resolve_pretrained(source, cfg, progress=False)

    def build_model(self) -> nn.Module:
        model = detector_from_config(self.config.replace(**self._build), self.num_classes,
                                     backbone_weights=self.pretrained)
        return model.to(self.device)

    def checkpoint_meta(self, converted=None) -> dict:
        cfg = self.config
        return {"format": FORMAT, "arch": f"{cfg.detector}:{cfg.model}", "model_args": {},
                "num_classes": self.num_classes, "pretrained": self.pretrained,
                "converted": self.model.is_converted if converted is None else converted, "config": plain(cfg),
                "class_names": self.class_names_}

    def build_task(self) -> DetectionTask:
        return DetectionTask(self.checkpoint_meta, self.config.detector, self.dirs.out)

    def train(self):
        cfg = self.config
        trainer = self.build_trainer()
        if not self.ready_to_train(trainer):
            return
        self.logger.info(f"training {cfg.detector} with backbone {cfg.model} on coco ({self.num_classes} "
                         f"categories) for {cfg.max_epoch} epochs on {self.device} ({self.batch_line()}); experiment "
                         f"folder {self.dirs.root}")
        best = trainer.fit()
        self.logger.info(f"done: best val AP {best:.2f}; checkpoints in {self.dirs.checkpoints}")
