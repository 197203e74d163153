"""The agent contract: an agent owns one experiment. It assembles what its task needs (model, data,
loss) from graphs/ and datasets/, trains with the engine, and hands every other mode to a command.

Whatever a command needs from the agent is the :class:`commands.Context` protocol (config, device,
dist, dirs, logger, model, loaders, ...); an agent for another task (detection) provides the same.
"""
import os
from abc import ABC, abstractmethod
from typing import Callable, Dict, Optional

from utils.distributed import init_distributed
from utils.errors import ConfigError, UserError
from utils.experiment import ExperimentFolder, resolve_device, seed_everything, setup_logging


class BaseAgent(ABC):
    #: mode -> command(agent); ``train`` is the agent's own
    commands: Dict[str, Callable] = {}

    def __init__(self, config, experiment: Optional[ExperimentFolder] = None):
        """``experiment``: the run's experiment folder (main.py's, which removes it again if the run fails
        before training has written a checkpoint)."""
        self.config = config
        self.dist = init_distributed(config.device, config.dist_timeout)
        self.device = resolve_device(config.device, self.dist.local_rank)
        if config.amp == "fp16" and self.device.type != "cuda":
            if config.mode == "train":
                raise ConfigError("amp 'fp16' needs a CUDA device and none is available; use --set amp=bf16 (or "
                                  "none) to train on the CPU")
            config.amp = "none"     # the training precision of the recipe: other modes run in fp32 here
        self.experiment = experiment or ExperimentFolder(config)
        self.dirs = self._prepare_experiment()
        self.logger = setup_logging(os.path.join(self.dirs.logs, f"{config.mode}.log"), self.dist.is_main)
        seed_everything(config.seed, config.deterministic)

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
        """Check the names the agent will assemble (model, dataset, loss, ...) before any work starts."""

    def run(self):
        """Run the configured mode: ``train``, or the command registered for it."""
        mode = self.config.mode
        if mode == "train":
            return self.train()
        if mode not in self.commands:
            raise ConfigError(f"{type(self).__name__} has no mode {mode!r}; its modes are: train, "
                              f"{', '.join(self.commands)}")
        return self.commands[mode](self)

    def ready_to_train(self, trainer) -> bool:
        """False (and one log line) when the resumed ``trainer`` has already reached ``max_epoch``; else
        training starts, and the resolved config is saved in the experiment folder."""
        if trainer.state.epoch >= self.config.max_epoch:
            self.logger.info(f"{self.config.exp_name}: already trained for {self.config.max_epoch} epochs; "
                             f"nothing to do")
            return False
        if self.dist.is_main:
            self.experiment.save_config()
        return True

    @abstractmethod
    def train(self):
        """The whole training run, from the current (possibly resumed) position to the last epoch."""

    def finalize(self) -> None:
        """Release resources (writers, process groups)."""
        self.dist.destroy()
