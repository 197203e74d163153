"""Accuracy and running sums kept on the device, so the training loop never waits for the host."""
import torch


def topk_correct(output, target, ks=(1, 5)):
    """Number of samples whose target is in the top-k predictions, for each k (device tensors)."""
    maxk = min(max(ks), output.size(1))
    pred = output.topk(maxk, dim=1).indices
    hit = pred.eq(target.unsqueeze(1))
    return [hit[:, :min(k, maxk)].any(dim=1).sum() for k in ks]


class RunningSums:
    """Sums of loss and top-1/top-5 hits over an epoch, as device tensors until ``compute()``."""

    def __init__(self, device):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, top1, top5, n

    def update(self, loss, output, target):
        n = target.size(0)
        top1, top5 = topk_correct(output.detach(), target)
        # device tensors and a Python scalar only: a host number made into a device tensor would wait for the GPU
        self.sums[:3] += torch.stack([loss.detach().double() * n, top1.double(), top5.double()])
        self.sums[3] += n

    def compute(self):
        loss, top1, top5, n = self.sums.tolist()
        n = max(n, 1.0)
        return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "count": int(n)}
