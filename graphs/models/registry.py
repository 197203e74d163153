"""Model registry: every published variant is a builder function registered by name."""
import fnmatch
import inspect

from utils.errors import ConfigError, closest

_MODELS = {}


def register_model(fn=None, *, model_class=None):
    """Register a builder ``fn(num_classes=..., converted=False, **kwargs)`` under its name.

    Use bare (``@register_model``) or with the class the builder forwards ``**kwargs`` to
    (``@register_model(model_class=CondenseNet)``), so unknown arguments are caught by name.
    """
    def wrap(fn):
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        fn.model_class = model_class
        _MODELS[fn.__name__] = fn
        return fn
    return wrap(fn) if fn is not None else wrap


def list_models(pattern=None):
    """Sorted names of the registered models, optionally filtered by a glob ``pattern``."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_builder(name):
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}{closest(name, _MODELS)}; "
                          f"valid models are: {', '.join(list_models())}")
    return _MODELS[name]


def model_arg_names(name):
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


def check_model_args(name, kwargs):
    """Raise ConfigError naming the closest valid argument for any unknown keyword in ``kwargs``."""
    valid = model_arg_names(name)
    for key in kwargs:
        if key not in valid:
            raise ConfigError(f"model {name!r} has no argument {key!r}{closest(key, valid)}; "
                              f"valid arguments are: {', '.join(sorted(valid))}")


def create_model(name, **kwargs):
    """Build the registered model ``name``; ``kwargs`` (num_classes, converted, ...) go to its builder."""
    check_model_args(name, kwargs)
    return get_builder(name)(**kwargs)
