"""Loader benchmark: the CIFAR input pipeline against torchvision's, a markdown table and a JSON file.

    python benchmarks/loader.py [--quick] [--json PATH] [--repeat 2]

One pass over random uint8 CIFAR-sized images with the training augmentation (4-pixel pad crop, flip,
normalise), batch 64, 1 thread: ``baseline`` is the official pipeline (a Dataset of per-image
torchvision transforms through ``torch.utils.data.DataLoader``), ``optimized`` the project's
``datasets.loader.InMemoryLoader``. Fresh subprocesses, ``--repeat``, ``--quick`` and ``--allocator``
work as benchmarks/harness.py describes.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402

ROWS = {
    "cifar_loader": ("CIFAR-10 loading + train augmentation (4-pixel pad crop, flip, normalise), b64, 1 thread "
                     "(baseline: torchvision transforms per image)", "loader",
                     dict(images=10000, quick=dict(images=256))),
}
VARIANTS = {"loader": ("baseline", "optimized")}


def measure(row, variant, quick=False, threads=1, warmup=None, iters=None, profile=False):
    """One (row, variant) in this process, on 1 thread whatever ``threads`` says; a JSON-ready dict."""
    import torch
    from datasets.cifar import MEAN, STD
    torch.set_num_threads(1)
    s = harness.settings(ROWS, row, quick)
    warmup = (0 if quick else 1) if warmup is None else warmup
    iters = (1 if quick else 3) if iters is None else iters
    n, batch = s["images"], 64
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    mean, std = MEAN["cifar10"], STD["cifar10"]
    if variant == "optimized":
        from datasets.loader import InMemoryLoader
        loader = InMemoryLoader(images, labels, [str(i) for i in range(10)], batch_size=batch, train=True,
                                device="cpu", mean=mean, std=std, crop_padding=4, hflip=0.5)
    else:                      # the official pipeline: torchvision's CIFAR10 + per-image transforms
        import torchvision.transforms as T
        from PIL import Image
        arrays = images.permute(0, 2, 3, 1).numpy()
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return n

            def __getitem__(self, i):
                return tf(Image.fromarray(arrays[i])), int(labels[i])
        loader = torch.utils.data.DataLoader(Data(), batch_size=batch, shuffle=True, num_workers=0)

    def one_pass():
        for x, y in loader:
            pass
    t = harness.timed(one_pass, warmup, iters)
    if profile:
        harness.print_profile(one_pass, calls=1)
    return dict(row=row, description=ROWS[row][0], variant=variant, kind="loader", threads=1, images=n, batch=batch,
                torch_version=torch.__version__, warmup=warmup, iters=iters, quick=quick, ms=t["ms"],
                img_s=n * 1000.0 / t["ms"], ms_min=t["ms_min"])


def main(argv=None):
    return harness.main(__doc__, __file__, ROWS, VARIANTS, measure, "results_loader.json", argv)


if __name__ == "__main__":
    sys.exit(main())
