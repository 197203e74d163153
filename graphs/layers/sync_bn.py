"""BatchNorm whose training statistics span all processes: ``nn.SyncBatchNorm`` on CUDA, :class:`CPUSyncBatchNorm`
for CPU (gloo) runs; :func:`convert_sync_batchnorm` swaps a model's BatchNorm2d layers for the device's."""
import torch
import torch.distributed as dist

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CPUSyncBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span all processes, for CPU/gloo runs.

    ``nn.SyncBatchNorm`` only works on CUDA. This subclass (same parameters and buffers, so state dicts
    are unchanged) computes the global mean and the biased variance in two passes with autograd-aware
    all-reduces, so its outputs and gradients equal BatchNorm over the global batch.
    """

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        c = x.size(1)
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum((0, 2, 3)), count]))
        n = sums[c]
        mean = sums[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = all_reduce((centred * centred).sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), momentum)
                self.num_batches_tracked += 1
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def convert_sync_batchnorm(module, device):
    """SyncBatchNorm for CUDA, :class:`CPUSyncBatchNorm` for the CPU; parameters and buffers are kept."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, torch.nn.BatchNorm2d) and type(module) is not CPUSyncBatchNorm:
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.train(module.training)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        return new
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child, device)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
