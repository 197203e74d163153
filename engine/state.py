"""The training position as one serialisable record."""
from dataclasses import asdict, dataclass

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Where training stands: the next epoch and the next batch within it, optimizer steps taken, best
    validation metric so far. Stored in checkpoints under the keys below (``global_step`` and
    ``best_acc1`` are the names older checkpoints of this project use)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_metric: float = -1.0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "global_step": self.step, "best_acc1": self.best_metric}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.step, self.best_metric = int(state["global_step"]), float(state["best_acc1"])

    def as_dict(self) -> dict:
        return asdict(self)
