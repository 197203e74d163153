"""The agent contract: an agent owns one experiment and runs the mode its config asks for."""
from abc import ABC, abstractmethod


class BaseAgent(ABC):
    def __init__(self, config):
        self.config = config

    def run(self):
        """Run the configured mode (train, validate, ...)."""
        handler = getattr(self, f"run_{self.config.mode}", None)
        if handler is None:
            raise NotImplementedError(f"{type(self).__name__} has no mode {self.config.mode!r}")
        return handler()

    def run_train(self):
        return self.train()

    @abstractmethod
    def train(self):
        """The whole training run, from the current (possibly resumed) position to the last epoch."""

    @abstractmethod
    def train_one_epoch(self, epoch):
        """One pass over the training data; returns the epoch's training metrics."""

    @abstractmethod
    def validate(self, model=None):
        """Evaluate on the validation split; returns loss, top-1 and top-5."""

    @abstractmethod
    def save_checkpoint(self, best=False):
        """Write the training state atomically."""

    @abstractmethod
    def load_checkpoint(self, path):
        """Restore the training state from ``path``."""

    def finalize(self):
        """Release resources (writers, process groups)."""
