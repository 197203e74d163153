"""The agent contract: an agent owns one experiment. It assembles what its task needs (model, data,
loss) from graphs/ and datasets/, trains with the engine, and hands every other mode to a command.

Whatever a command needs from the agent is the :class:`commands.Context` protocol (config, device,
dist, dirs, logger, model, loaders, ...); an agent for another task (detection) provides the same.
"""
import os
from abc import ABC, abstractmethod
from typing import Callable, Dict, List, Optional, Tuple

from engine.accumulate import optimizer_steps, resolve_global_batch
from engine.checkpoint import CheckpointManager
from engine.ema import ModelEma, check_ema
from engine.loggers import RunLogger, setup_logging
from engine.optim import build_optimizer, check_optimizer, param_groups, scaled_lr
from engine.schedules import LRSchedule, check_schedule
from engine.seed import seed_everything
from engine.trainer import Task, Trainer, TrainerContext, TrainerSettings
from graphs.layers.sync_bn import convert_sync_batchnorm
from utils.config import Settings
from utils.distributed import init_distributed
from utils.errors import CheckpointError, ConfigError, UserError
from utils.experiment import ExperimentFolder


class BaseAgent(ABC):
    #: mode -> command(agent); ``train`` is the agent's own
    commands: Dict[str, Callable] = {}

    def __init__(self, config, experiment: Optional[ExperimentFolder] = None):
        """``experiment``: the run's experiment folder (main.py's, which removes it again if the run fails
        before training has written a checkpoint)."""
        self.dist, self.device = init_distributed(config.device, config.dist_timeout)
        #: the resolved config, its device-dependent values included; never assigned to afterwards
        self.config = config = self.resolve_runtime(config)
        self.run_logger: Optional[RunLogger] = None     # metrics.csv and TensorBoard, from build_trainer on
        self.experiment = experiment or ExperimentFolder(config)
        self.dirs = self._prepare_experiment()
        self.logger = setup_logging(os.path.join(self.dirs.logs, f"{config.mode}.log"), self.dist.is_main)
        seed_everything(config.seed, config.deterministic)
        #: (path, state) of the checkpoint a non-training mode evaluates (state None: foreign weights), or None
        self.source: Optional[Tuple[str, Optional[dict]]] = None
        if config.mode != "train":
            self.source = CheckpointManager(self.dirs.checkpoints, logger=self.logger).find_eval(config.checkpoint)

    def resolve_runtime(self, config: Settings) -> Settings:
        """``config`` with the values that depend on the device and the process count resolved, once, before
        anything reads them: the per-step batch (``global_batch_size``), and ``amp`` 'fp16' (the recipe's
        training precision) runs in fp32 in the other modes without CUDA."""
        config = resolve_global_batch(config, self.dist.world_size)
        if config.amp == "fp16" and self.device.type != "cuda":
            if config.mode == "train":
                raise ConfigError("amp 'fp16' needs a CUDA device and none is available; use --set amp=bf16 (or "
                                  "none) to train on the CPU")
            config = config.replace(amp="none")
        return config

    @property
    def source_state(self) -> Optional[dict]:
        """The evaluated training checkpoint of this project (its identity builds the model), or None."""
        return self.source[1] if self.source else None

    def check_source(self, arch: str, model_args: dict) -> dict:
        """The evaluated checkpoint's ``model_args``, after checking that the config does not contradict
        it: another model, other (non-empty) model_args or another explicit num_classes is one sentence
        naming both; what the config leaves out comes from the checkpoint."""
        path, state = self.source
        if state["arch"] != arch:
            raise CheckpointError(f"{path} holds model {state['arch']!r} but the config builds {arch!r}; set model "
                                  f"to match the checkpoint, or pass a checkpoint of {arch!r}")
        stored = dict(state.get("model_args") or {})
        if model_args and dict(model_args) != stored:
            raise CheckpointError(f"{path} was trained with model_args {stored} but the config sets {dict(model_args)}; "
                                  f"remove model_args from the config to use the checkpoint's")
        n = self.config.num_classes
        if n is not None and state.get("num_classes") is not None and n != state["num_classes"]:
            raise CheckpointError(f"{path} has {state['num_classes']} classes but the config sets num_classes {n}; "
                                  f"set num_classes to null to use the checkpoint's")
        return stored

    def _prepare_experiment(self):
        """The experiment folders (rank 0 creates them; a training run locks the folder first); every rank
        stops when rank 0 cannot have the folder, none waits for it."""
        train, error = self.config.mode == "train", None
        try:
            dirs = self.experiment.prepare(self.dist.is_main, lock=train)
        except UserError as e:
            error = e
        if self.dist.any(error is not None, self.device):
            raise error or ConfigError(f"the experiment folder {self.experiment.dirs.root} cannot be used; rank 0's "
                                       f"error above says why")
        return dirs

    @classmethod
    def check_config(cls, config) -> None:
        """Check, before any work starts, the rules of what the agent assembles: here the engine's (schedule,
        optimizer, EMA); an agent adds its data, model and loss (their names included) after super()."""
        check_schedule(config)
        check_optimizer(config)
        check_ema(config)

    def run(self):
        """Run the configured mode: ``train``, or the command registered for it."""
        mode = self.config.mode
        if mode == "train":
            return self.train()
        if mode not in self.commands:
            raise ConfigError(f"{type(self).__name__} has no mode {mode!r}; its modes are: train, "
                              f"{', '.join(self.commands)}")
        return self.commands[mode](self)

    def batch_line(self) -> str:
        """What the run uses per optimizer step, for the start-up line."""
        cfg, world = self.config, self.dist.world_size
        return (f"{cfg.batch_size * cfg.grad_accum_steps} images per optimizer step = {world} process(es) x "
                f"{cfg.batch_size // world} x {cfg.grad_accum_steps} accumulation step(s)")

    def ready_to_train(self, trainer) -> bool:
        """False (and one log line) when the resumed ``trainer`` has already reached ``max_epoch``; else
        training starts, and the resolved config is saved in the experiment folder."""
        if trainer.state.epoch >= self.config.max_epoch:
            self.logger.info(f"{self.config.exp_name}: already trained for {self.config.max_epoch} epochs; "
                             f"nothing to do")
            return False
        if self.dist.is_main:
            self.experiment.save_config(self.config)
        return True

    # ------------------------------------------------------------------ training
    def param_groups(self) -> List[dict]:
        """The optimizer's parameter groups (engine.optim.param_groups: the weight-decay rules)."""
        return param_groups(self.model, self.config.weight_decay, self.config.weight_decay_mode)

    @abstractmethod
    def build_task(self) -> Task:
        """The task the Trainer trains (engine.trainer.Task): loss, metrics, validation, checkpoint identity."""

    def build_trainer(self) -> Trainer:
        """The Trainer of this run, resumed where the configuration says: the model (SyncBatchNorm under DDP
        with ``sync_bn``), optimizer, LR schedule, EMA, checkpoints and logs, and the agent's task."""
        cfg = self.config
        loaders = self.loaders
        if self.dist.enabled and cfg.sync_bn:
            self.model = convert_sync_batchnorm(self.model, self.device)
            if cfg.memory_efficient and self.model.supports("memory_efficient") and self.dist.is_main:
                self.logger.warning("sync_bn: the memory-efficient layers run their plain form with SyncBatchNorm "
                                    "and store their BN outputs, as with memory_efficient false; lower batch_size "
                                    "if memory runs out")
        lr = scaled_lr(cfg.lr, cfg.batch_size * cfg.grad_accum_steps, cfg.lr_scale_batch)
        optimizer = build_optimizer(self.param_groups(), cfg.optimizer, lr, cfg.momentum, cfg.nesterov, cfg.opt_eps,
                                    cfg.opt_betas, fused=self.device.type == "cuda")
        # the schedule, condensation, EMA and recovery files count optimizer steps
        steps = optimizer_steps(len(loaders[0]), cfg.grad_accum_steps)
        schedule = LRSchedule(cfg.lr_schedule, lr, steps, cfg.max_epoch, cfg.warmup_epochs, cfg.warmup_lr,
                              cfg.lr_milestones, cfg.lr_gamma, min_lr=cfg.min_lr, warmup_iters=cfg.warmup_iters,
                              lr_step=cfg.lr_step)
        ema = ModelEma(self.model, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema else None
        self.model.set_memory_efficient(cfg.memory_efficient)
        task = self.build_task()
        self.run_logger = RunLogger(self.dirs.summaries, self.dirs.metrics, self.logger, cfg.max_epoch,
                                    self.dist.is_main, fields=task.fields)
        checkpoints = CheckpointManager(self.dirs.checkpoints, self.dist.is_main, cfg.recovery_keep,
                                        self.dist.barrier, self.logger)
        context = TrainerContext(self.dist, self.device, checkpoints, self.run_logger, self.logger)
        trainer = Trainer(self.model, loaders, optimizer, schedule, task, TrainerSettings.from_config(cfg), context,
                          ema)
        trainer.resume()
        return trainer

    @abstractmethod
    def train(self):
        """The whole training run, from the current (possibly resumed) position to the last epoch."""

    def finalize(self) -> None:
        """Release resources (writers, process groups)."""
        if self.run_logger is not None:
            self.run_logger.close()
        self.dist.destroy()
