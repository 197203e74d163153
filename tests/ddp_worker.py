"""Run by tests/cli/test_distributed.py under torchrun: train (or validate) one config, dump per-rank state."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agents import build_agent  # noqa: E402
from commands import validate  # noqa: E402
from engine.evaluator import evaluate  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.errors import TrainingError  # noqa: E402


def nan_on_rank1(agent, out_dir):
    """Rank 1 alone sees a NaN loss at its third batch: every rank must stop there with the same sentence."""
    trainer = agent.build_trainer()
    criterion, calls = trainer.task.criterion, []

    def poisoned(output, target, inputs):
        calls.append(1)
        loss = criterion(output, target, inputs)
        # a NaN loss value with finite gradients, so that rank 0's weights stay finite
        return loss + loss.detach() * float("nan") if agent.dist.rank == 1 and len(calls) == 3 else loss
    trainer.task.criterion = poisoned
    try:
        trainer.fit()
        result = {"error": None}
    except TrainingError as e:
        result = {"error": str(e)}
    torch.save({**result, "batches": len(calls)}, os.path.join(out_dir, f"rank{agent.dist.rank}.pth"))


def dropout_draws(agent, out_dir):
    """The first training batch's dropout masks, and the initial weights, of each rank."""
    trainer = agent.build_trainer()
    initial = {k: v.clone() for k, v in agent.model.state_dict().items()}
    drops = []
    for m in agent.model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.register_forward_hook(lambda mod, inp, out: drops.append((out == 0).clone()))
    trainer.fit()
    torch.save({"initial": initial, "first_drop": drops[0]}, os.path.join(out_dir, f"rank{agent.dist.rank}.pth"))


def keep_indices_after_divergent_pruning(agent, out_dir):
    """Rank 1's weights drift from rank 0's after DDP's start-up broadcast, so its own pruning decisions differ:
    after each event it must hold rank 0's masks AND the condensed-forward indices built from them."""
    trainer = agent.build_trainer()
    wrap = trainer.wrap

    def wrap_then_drift(model):
        wrapped = wrap(model)
        if agent.dist.rank == 1:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * p.abs().mean())
        return wrapped
    trainer.wrap = wrap_then_drift
    trainer.fit()
    modules = {n: m for n, m in agent.model.named_modules() if hasattr(m, "_keep_index")}
    torch.save({"keep": {n: m._keep_index.clone() for n, m in modules.items()},
                "masks": {n: m._mask.clone() for n, m in modules.items()}},
               os.path.join(out_dir, f"rank{agent.dist.rank}.pth"))


WORKERS = {"nan": nan_on_rank1, "dropout": dropout_draws, "prune": keep_indices_after_divergent_pruning}


def main(config_path, out_dir, mode):
    agent = build_agent(load_config(config_path, mode="train" if mode in WORKERS else mode))
    try:
        if mode in WORKERS:
            WORKERS[mode](agent, out_dir)
            return
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
