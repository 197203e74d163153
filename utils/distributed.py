"""torchrun / DistributedDataParallel helpers: the process group and collectives. A single process is world
size 1 and needs nothing. (The CPU SyncBatchNorm layer is graphs.layers.sync_bn.)"""
import datetime
import os
from typing import Tuple

import torch
import torch.distributed as dist

from utils.errors import ConfigError


class DistContext:
    def __init__(self, rank=0, world_size=1, local_rank=0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor):
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def _reduce(self, value: float, op, device) -> float:
        t = torch.tensor([float(value)], device=device)
        dist.all_reduce(t, op=op)
        return t.item()

    def any(self, flag, device):
        """True on every rank if ``flag`` is true on any rank."""
        return bool(self._reduce(bool(flag), dist.ReduceOp.MAX, device) if self.enabled else flag)

    def all_true(self, flag: torch.Tensor) -> bool:
        """True on every rank if the boolean tensor ``flag`` is true on every rank."""
        if not self.enabled:
            return bool(flag)
        t = flag.to(torch.int32).reshape(1)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def min(self, value, device):
        """The smallest ``value`` (an int) over the ranks."""
        return int(self._reduce(value, dist.ReduceOp.MIN, device)) if self.enabled else value

    def broadcast_buffers(self, module):
        """Make every rank hold rank 0's buffers (e.g. condensation masks after a pruning event)."""
        if self.enabled:
            for buf in module.buffers():
                dist.broadcast(buf, src=0)

    def destroy(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_name: str, timeout_s: int) -> Tuple[DistContext, torch.device]:
    """(the processes, this process's device for ``device_name``); under torchrun the process group too, and
    each process takes the GPU of its LOCAL_RANK (a 'cuda:N' would put every rank on one GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world_size > 1 else 0
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device_name!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
        device_name = f"cuda:{local_rank}" if device_name == "cuda" or world_size > 1 else device_name
        torch.cuda.set_device(torch.device(device_name))
    device = torch.device(device_name)
    if world_size <= 1:
        return DistContext(), device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(int(os.environ["RANK"]), world_size, local_rank), device
