"""CIFAR-10 / CIFAR-100 from the standard python batches, held in memory as uint8 tensors.

Layout (as released): ``<data_root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<data_root>/cifar-100-python/{train, test, meta}``. Each batch is a pickled dict with ``data`` (uint8,
N x 3072, channel-major) and ``labels`` (CIFAR-100: ``fine_labels``). md5 sums are NOT checked (the
offline copy differs from the original release). Train: random crop 32 with 4 px zero padding and a
horizontal flip on whole batches on the device; eval: normalisation only (CondenseNet recipe, §1.4).
"""
import os
import pickle

import numpy as np
import torch

from utils.errors import DataError

URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES = {
    "cifar10": dict(train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    meta="batches.meta", names_key="label_names", labels_key="labels", classes=10),
    "cifar100": dict(train=["train"], test=["test"], meta="meta", names_key="fine_label_names",
                     labels_key="fine_labels", classes=100),
}
MEAN = {"cifar10": (0.4914, 0.4824, 0.4467), "cifar100": (0.5071, 0.4867, 0.4408)}
STD = {"cifar10": (0.2471, 0.2435, 0.2616), "cifar100": (0.2675, 0.2565, 0.2761)}
PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

# The label names of the releases' meta files, for when the data is not on this machine (predict).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The CIFAR-100 fine labels in label-index order (the order of ``fine_label_names`` in ``meta``).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)

_cache = {}


def _missing(folder, spec):
    names = spec["train"] + spec["test"] + [spec["meta"]]
    return [n for n in names if not os.path.isfile(os.path.join(folder, n))]


def _download(name, root):
    from torchvision.datasets.utils import download_and_extract_archive
    try:
        os.makedirs(root, exist_ok=True)
        download_and_extract_archive(URLS[name], download_root=root, md5=None)
    except Exception as e:  # no network, HTTP error, disk full, bad archive ...
        raise DataError(f"{PRETTY[name]} could not be downloaded into {root} ({type(e).__name__}: {e}); "
                        f"put the python batches in {os.path.join(root, FOLDERS[name])} by hand") from None


def _unpickle(path):
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise DataError(f"{path} is truncated or corrupt ({type(e).__name__}); delete it and re-download") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is truncated or corrupt (not a dict); delete it and re-download")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _read_batches(folder, files, labels_key, num_classes):
    xs, ys = [], []
    for fname in files:
        path = os.path.join(folder, fname)
        d = _unpickle(path)
        if "data" not in d or labels_key not in d:
            raise DataError(f"{path} has no 'data'/{labels_key!r} entries, so it is not a CIFAR batch; "
                            f"delete it and re-download")
        data = d["data"]
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3 * 32 * 32):
            desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: 'data' must be a uint8 N x 3072 array, got {desc}; "
                            f"the file is not a CIFAR batch, delete it and re-download")
        try:
            labels = np.asarray(d[labels_key], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"{path}: {labels_key!r} is not a list of integers; delete it and re-download") from None
        if len(labels) != len(data):
            raise DataError(f"{path} has {len(data)} images but {len(labels)} labels; "
                            f"delete it and re-download")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"{path} has labels outside 0..{num_classes - 1}; delete it and re-download")
        xs.append(data)
        ys.append(labels)
    x = torch.from_numpy(np.concatenate(xs)).view(-1, 3, 32, 32)
    return x, torch.from_numpy(np.concatenate(ys))


def load_cifar(name, root, download=False):
    """(train_x, train_y, test_x, test_y, class_names) with uint8 (N, 3, 32, 32) images, int64 labels."""
    spec = FILES[name]
    root = os.path.expanduser(str(root))
    folder = os.path.join(root, FOLDERS[name])
    missing = _missing(folder, spec)
    if missing and download:
        _download(name, root)
        missing = _missing(folder, spec)
    if missing:
        raise DataError(f"{PRETTY[name]} not found: put the python batches ({', '.join(missing)}) in "
                        f"{folder} or set download: true")
    paths = [os.path.join(folder, n) for n in spec["train"] + spec["test"] + [spec["meta"]]]
    key = (name, tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths))
    if key in _cache:
        return _cache[key]
    meta_path = os.path.join(folder, spec["meta"])
    meta = _unpickle(meta_path)
    names = meta.get(spec["names_key"])
    if not isinstance(names, (list, tuple)) or len(names) != spec["classes"]:
        raise DataError(f"{meta_path} must hold {spec['classes']} {spec['names_key']!r}; "
                        f"delete it and re-download")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    train_x, train_y = _read_batches(folder, spec["train"], spec["labels_key"], spec["classes"])
    test_x, test_y = _read_batches(folder, spec["test"], spec["labels_key"], spec["classes"])
    _cache.clear()  # keep only the last data set (150 MB)
    _cache[key] = (train_x, train_y, test_x, test_y, names)
    return _cache[key]


def class_names(name, root=None):
    """The label names of ``name`` ('cifar10' | 'cifar100'): from the meta file under ``root`` when it is
    readable, else the releases' names."""
    spec = FILES[name]
    path = os.path.join(os.path.expanduser(str(root)), FOLDERS[name], spec["meta"]) if root else None
    if path and os.path.isfile(path):
        try:
            names = _unpickle(path).get(spec["names_key"])
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            if len(names) == spec["classes"]:
                return names
        except (DataError, TypeError):
            pass    # a corrupt meta file: the standard names are just as good for printing
    return list(CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES)
