"""Run by tests/test_distributed.py under torchrun: train (or validate) one config, dump per-rank state."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agents import build_agent  # noqa: E402
from commands import validate  # noqa: E402
from engine.evaluator import evaluate  # noqa: E402
from utils.config import load_config  # noqa: E402


def main(config_path, out_dir, mode):
    agent = build_agent(load_config(config_path, mode=mode))
    try:
        if mode == "train":
            agent.train()
            stats = evaluate(agent.model, agent.loaders[1], agent.device, agent.dist, agent.num_classes)
        else:
            stats = validate(agent)
        masks = {k: v for k, v in agent.model.state_dict().items() if k.endswith("_mask")}
        torch.save({"model": agent.model.state_dict(), "val": stats, "masks": masks},
                   os.path.join(out_dir, f"rank{agent.dist.rank}.pth"))
    finally:
        agent.finalize()


if __name__ == "__main__":
    main(*sys.argv[1:4])
