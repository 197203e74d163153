"""Model registry: every published variant is a builder function registered by name, with its
``pretrained_cfg`` (:class:`graphs.models.pretrained.PretrainedCfg`) registered beside it; each family file generates both
from its one variant table (:func:`register_variant`)."""
import fnmatch
import inspect
from typing import Callable, Dict, List, Optional

from torch import nn

from utils.errors import ConfigError, closest

from .pretrained import WEIGHTS, PretrainedCfg

_MODELS: Dict[str, Callable] = {}
_CFGS: Dict[str, PretrainedCfg] = {}


def register_variant(name: str, model_class: type, args: dict, cfg: PretrainedCfg,
                     build: Optional[Callable] = None) -> None:
    """Register the published variant ``name`` of its family's variant table: a builder
    ``name(num_classes=<cfg.num_classes>, converted=False, **kwargs)`` and its ``pretrained_cfg`` (with its
    released weights, ``graphs.models.pretrained.WEIGHTS``).

    The builder returns ``build(model_class, name, args, num_classes, converted, kwargs)``; by default
    ``model_class(num_classes=..., converted=..., **{**args, **kwargs})`` (the caller's ``kwargs`` override
    the variant's ``args``). ``model_class`` is where the builder's ``**kwargs`` go, so unknown arguments
    are caught by name (:func:`check_model_args`).
    """
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    build = build or _construct

    def builder(num_classes=cfg.num_classes, converted=False, **kwargs):
        return build(model_class, name, args, num_classes, converted, kwargs)
    builder.__name__ = builder.__qualname__ = name
    builder.__module__ = model_class.__module__
    builder.__doc__ = f"{model_class.__name__} {name}: {', '.join(f'{k}={v!r}' for k, v in args.items())}."
    builder.model_class = model_class
    _MODELS[name] = builder
    _CFGS[name] = cfg.replace(weights=dict(WEIGHTS.get(name, {})))


def _construct(model_class, name, args, num_classes, converted, kwargs):
    return model_class(num_classes=num_classes, converted=converted, **{**args, **kwargs})


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    get_builder(name)
    return _CFGS[name]


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted names of the registered models, optionally filtered by a glob ``pattern``."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_builder(name: str) -> Callable:
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}{closest(name, _MODELS)}; "
                          f"valid models are: {', '.join(list_models())}")
    return _MODELS[name]


def model_arg_names(name: str) -> set:
    """Keyword arguments a model accepts: its builder's and its class constructor's."""
    builder = get_builder(name)
    names = set()
    for fn in (builder, getattr(builder, "model_class", None)):
        if fn is None:
            continue
        fn = fn.__init__ if inspect.isclass(fn) else fn
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
    return names


def check_model_args(name: str, kwargs: dict) -> None:
    """Raise ConfigError naming the closest valid argument for any unknown keyword in ``kwargs``."""
    valid = model_arg_names(name)
    for key in kwargs:
        if key not in valid:
            raise ConfigError(f"model {name!r} has no argument {key!r}{closest(key, valid)}; "
                              f"valid arguments are: {', '.join(sorted(valid))}")


def create_model(name: str, pretrained: Optional[str] = None, **kwargs) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` (num_classes, converted, ...) go to its builder.

    ``pretrained``: a registry tag of the variant (``official``, ``timm``, ...), a path or a URL, loaded
    as :func:`graphs.models.hub.load_pretrained` does (another class count gets a new classifier; the
    released converted CondenseNet files build the converted model). The model carries its variant's
    ``pretrained_cfg``; where the build arguments change the input geometry (a CIFAR stem on an ImageNet
    variant, or the reverse) the model's own geometry is kept and the published figures, which are for
    the other geometry, are dropped.
    """
    check_model_args(name, kwargs)
    if pretrained is not None:
        from .hub import load_pretrained, pretrained_entry
        entry = pretrained_entry(pretrained, get_pretrained_cfg(name))
        if entry is not None and entry.converted:
            kwargs.setdefault("converted", True)
        model = create_model(name, **kwargs)
        load_pretrained(model, pretrained)
        return model
    model = get_builder(name)(**kwargs)
    cfg = get_pretrained_cfg(name)
    own = model.pretrained_cfg
    if own.input_size == cfg.input_size:
        model.pretrained_cfg = cfg
    else:
        model.pretrained_cfg = own.replace(weights=cfg.weights, paper=cfg.paper, classifier=cfg.classifier,
                                           first_conv=cfg.first_conv, num_classes=cfg.num_classes)
    return model
