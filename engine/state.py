"""The training position as one serialisable record, and the RNG states that go with it."""
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["TrainState", "rng_state", "set_rng_state"]


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


def rng_state() -> dict:
    """All RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x
