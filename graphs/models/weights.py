"""Load weights of any layout this project knows into a model.

``load_weights(model, source)`` accepts a path or a state dict. It unwraps training checkpoints
(this project's, the official CondenseNet/CondenseNetV2 ones, timm's), strips DataParallel/DDP
``module.`` prefixes, reads PaddlePaddle ``.pdparams`` without Paddle, translates foreign layouts
(:func:`graphs.models.layouts.adapt_state_dict`), and loads strictly. Any mismatch is reported in one
sentence, with a hint about the likely wrong setting (:func:`graphs.models.layouts.mismatch_hint`).
"""
import os
import pickle

import numpy as np
import torch

from utils.errors import CheckpointError

from .layouts import adapt_state_dict, mismatch_hint

# Containers that hold a state dict, in order of preference.
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model", "net", "params")
PADDLE_META_KEYS = ("StructuredToParameterName@@", "UnpackBigParamInfor@@")


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles Paddle's dict of numpy arrays and refuses anything else (no arbitrary code runs)."""

    ALLOWED = {("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a .pdparams file")
        return super().find_class(module, name)


def read_weight_file(path):
    """Read a ``.pth``/``.pth.tar``/``.pt`` (torch) or ``.pdparams`` (Paddle pickle) file into a dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"weight file {path!r} does not exist; check the path")
    try:
        if path.endswith(".pdparams"):
            with open(path, "rb") as f:
                obj = _NumpyUnpickler(f, encoding="latin1").load()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a corrupt file
        raise CheckpointError(f"cannot read {path!r}: the file is truncated, corrupt or not a weight "
                              f"file ({type(e).__name__}); re-download or re-save it") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, not a state dict or checkpoint")
    return obj


def unwrap_state_dict(obj, prefer_ema=True):
    """The flat ``name -> tensor`` dict inside a checkpoint, as torch tensors, without ``module.``."""
    keys = _WRAPPER_KEYS if prefer_ema else tuple(k for k in _WRAPPER_KEYS if "ema" not in k) + \
        tuple(k for k in _WRAPPER_KEYS if "ema" in k)
    while isinstance(obj, dict) and not _is_flat(obj):
        inner = next((obj[k] for k in keys if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            raise CheckpointError("the checkpoint holds no state dict (looked for keys "
                                  f"{', '.join(_WRAPPER_KEYS)}); found {', '.join(map(str, list(obj)[:8]))}")
        obj = inner
    state = {}
    for name, value in obj.items():
        if name in PADDLE_META_KEYS:
            continue
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        for prefix in ("module.", "_orig_mod."):
            while name.startswith(prefix):
                name = name[len(prefix):]
        state[name] = value
    return state


def _is_flat(obj):
    values = [v for k, v in obj.items() if k not in PADDLE_META_KEYS]
    return bool(values) and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in values)


def load_weights(model, source, strict=True, prefer_ema=True):
    """Load ``source`` (a path or a dict) into ``model``; returns the model.

    Raises CheckpointError with one sentence on any unreadable file or mismatching key/shape.
    """
    obj = read_weight_file(source) if isinstance(source, (str, os.PathLike)) else source
    state = unwrap_state_dict(obj, prefer_ema=prefer_ema)
    state = adapt_state_dict(model, state)
    check_state_dict(model, state, strict=strict)
    model.load_state_dict(state, strict=strict)
    return model


def check_state_dict(model, state, strict=True):
    """Compare keys and shapes with ``model.state_dict()`` and raise one clear sentence on mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
              and not _accepts_shape(model, k, state[k])]
    if not (shapes or (strict and (missing or unexpected))):
        return
    hint = mismatch_hint(model, missing, unexpected, shapes)
    parts = []
    if shapes:
        k, got, want = shapes[0]
        parts.append(f"{len(shapes)} tensor(s) have the wrong shape (first: {k} is {list(got)} in the "
                     f"weights but {list(want)} in the model)")
    if strict and missing:
        parts.append(f"{len(missing)} key(s) are missing (first: {missing[0]})")
    if strict and unexpected:
        parts.append(f"{len(unexpected)} key(s) are unexpected (first: {unexpected[0]})")
    raise CheckpointError(f"the weights do not fit model {type(model).__name__}: {'; '.join(parts)}"
                          f"{'; ' + hint if hint else ''}")


def _accepts_shape(model, key, value):
    """Modules may accept another layout for a key (e.g. the official C x C SFR index matrix)."""
    module_name, _, attr = key.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        return False
    accepts = getattr(module, "accepts_state_shape", None)
    return bool(accepts and accepts(attr, value))
