"""Pretrained weights: ``pretrained=`` a registry tag, a local path or a URL, loaded for fine-tuning.

``resolve_pretrained(source, pretrained_cfg)`` turns the source into a local file:

* a registry tag (``official``, ``timm``, ...): an entry of ``pretrained_cfg.weights``;
* a local path, or a ``file://`` URL (read in place, never copied);
* an ``http(s)://`` URL, or a tag's URL: downloaded once into torch.hub's cache,
  ``<torch.hub.get_dir()>/checkpoints/<file name>`` (``TORCH_HOME`` moves it), as
  ``torch.hub.load_state_dict_from_url`` does, with a progress bar.

The download follows ``torch.hub.download_url_to_file`` (same User-Agent, chunks, written atomically by
utils.atomic_io: a killed download's temporary is removed by the next one) but is written out here
because that function accepts a response shorter than its ``Content-Length`` and an HTML page as a weight
file. Refused, each with one sentence that names the URL and the exact cache path where the file can be
put by hand: an unreachable host or HTTP error, an HTML/error page (Google Drive's confirmation page), a
truncated body, and a SHA-256 that does not match the published prefix (``WeightEntry.hash``, or timm's
``name-<sha256 prefix>.pth`` file names, torch.hub's ``check_hash`` rule). A cached copy whose hash does
not match is deleted, never used.

``load_pretrained(model, source)`` loads every layout :func:`graphs.models.weights.load_weights` knows. When
the file's class count differs from the model's, everything except the classifier is loaded strictly
and the model's ``reset_classifier`` re-initialises the head as its own init does (one log line says
so). Condensation state (masks, stage) comes from the file; ``model.reset_condensation()`` restarts it.
This is not a resume: no epoch, optimizer or schedule is read.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import torch

from utils.atomic_io import atomic_path, remove_stale_temporaries
from utils.errors import CheckpointError, ConfigError, closest

from .layouts import adapt_state_dict
from .weights import check_state_dict, read_weight_file, unwrap_state_dict

__all__ = ["resolve_pretrained", "load_pretrained", "pretrained_entry", "cache_path_for", "hash_prefix_for",
           "guess_family", "classifier_keys"]

log = logging.getLogger(__name__)

_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")          # a bare word: no dot, no slash
_FILE_HASH = re.compile(r"-([a-f0-9]{8,64})\.")           # timm / torch.hub: name-<sha256 prefix>.ext
_CHUNK = 1 << 16
_TIMEOUT_S = 60


# ------------------------------------------------------------------------------------ resolving
def _weights_of(pretrained_cfg) -> dict:
    return dict(getattr(pretrained_cfg, "weights", None) or {})


def _entry_for(tag: str, pretrained_cfg):
    weights = _weights_of(pretrained_cfg)
    if tag not in weights:
        if not weights:
            raise ConfigError(f"pretrained={tag!r} is a registry tag but this model publishes no weights; "
                              f"give a path or an http(s):// / file:// URL instead")
        raise ConfigError(f"unknown pretrained tag {tag!r}{closest(tag, weights)}; this model's tags are: "
                          f"{', '.join(sorted(weights))} (or give a path or URL)")
    return weights[tag]


def pretrained_entry(source, pretrained_cfg=None):
    """The registry :class:`~graphs.models.pretrained.WeightEntry` a ``pretrained`` value names, or None for a path
    or URL; read it BEFORE building the model to take ``converted`` and ``num_classes`` from it."""
    source = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(source, str) or "://" in source or os.path.exists(source) or not _TAG.match(source):
        return None
    return _entry_for(source, pretrained_cfg)


def hash_prefix_for(file_name: str, entry=None) -> Optional[str]:
    """The published SHA-256 prefix: the entry's ``hash``, else the one in a ``name-<hex>.ext`` file name."""
    if entry is not None and getattr(entry, "hash", None):
        return str(entry.hash).lower()
    m = _FILE_HASH.search(os.path.basename(file_name))
    return m.group(1) if m else None


def _file_name(url: str, entry=None) -> str:
    if entry is not None and getattr(entry, "file_name", ""):
        return os.path.basename(entry.file_name)
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name or name in (".", ".."):
        raise ConfigError(f"cannot name a cache file for {url}: its path ends in no file name; "
                          f"download it by hand and pass the local path as pretrained")
    return name


def cache_path_for(url: str, entry=None) -> str:
    """Where torch.hub keeps the download of ``url``: ``<hub dir>/checkpoints/<file name>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", _file_name(url, entry))


def resolve_pretrained(source: str, pretrained_cfg=None, progress: bool = True) -> str:
    """A local weight file for ``source`` (tag, path, ``file://`` or ``http(s)://`` URL); see the module doc."""
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ConfigError(f"pretrained must be a registry tag, a path or a URL, got {source!r}")
    source = os.fspath(source)
    scheme = urllib.parse.urlparse(source).scheme.lower()
    if scheme == "file":
        return _local(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    if scheme in ("http", "https"):
        return _cached_download(source, None, progress)
    if "://" in source:
        raise ConfigError(f"pretrained URL {source!r} has scheme {scheme!r}; use http(s):// or file://")
    if os.path.exists(source) or not _TAG.match(source):
        return _local(source)
    entry = _entry_for(source, pretrained_cfg)
    url = entry.url
    if urllib.parse.urlparse(url).scheme.lower() == "file":
        return _local(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    return _cached_download(url, entry, progress)


def _local(path: str) -> str:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained weight file {path!r} does not exist; check the path")
    return path


# ------------------------------------------------------------------------------------ downloading
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _by_hand(url: str, dst: str, entry=None) -> str:
    note = getattr(entry, "note", "") if entry is not None else ""
    return f"download it by hand (e.g. in a browser{': ' + note if note else ''}) and save it as {dst}"


def _cached_download(url: str, entry, progress: bool) -> str:
    dst = cache_path_for(url, entry)
    prefix = hash_prefix_for(dst, entry)
    if os.path.isfile(dst):
        if prefix is None or _sha256(dst).startswith(prefix):
            return dst
        os.remove(dst)  # a corrupt or foreign cached copy is never used
        log.warning("removed cached %s: its SHA-256 does not start with %s; downloading again", dst, prefix)
    remove_stale_temporaries(os.path.dirname(dst))     # a killed download's
    with atomic_path(dst, "downloaded weights", setting="TORCH_HOME", make_folder=True) as tmp:
        _download(url, tmp, dst, progress, entry)
        if prefix is not None:
            digest = _sha256(tmp)
            if not digest.startswith(prefix):
                raise CheckpointError(f"the file downloaded from {url} has SHA-256 {digest[:16]}..., not the "
                                      f"published {prefix}; it was deleted — {_by_hand(url, dst, entry)} "
                                      f"only from a source you trust")
    return dst


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip()[:64].lower()
    return text.startswith((b"<!doctype", b"<html", b"<head", b"<?xml", b"{\"error"))


def _download(url: str, tmp: str, dst: str, progress: bool, entry) -> None:
    """Stream ``url`` into ``tmp``; CheckpointError for an unreachable URL, an HTML page or a short body
    (a failed write, e.g. a full disk, is an OSError for the atomic writer to report)."""
    fail = f"cannot download {url}"
    req = urllib.request.Request(url, headers={"User-Agent": "torch.hub"})
    try:
        resp = urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise CheckpointError(f"{fail} (HTTP {e.code} {e.reason}); {_by_hand(url, dst, entry)}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(f"{fail} ({reason}; offline or unreachable); {_by_hand(url, dst, entry)}") from None
    with resp:
        ctype = (resp.headers.get("Content-Type") or "").lower()
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if ctype.startswith(("text/html", "application/xhtml")):
            raise CheckpointError(f"{fail}: the server sent a web page ({ctype.split(';')[0]}), not a weight "
                                  f"file (a login, confirmation or error page); {_by_hand(url, dst, entry)}")
        from torch.hub import tqdm
        received = 0
        with open(tmp, "xb") as f, tqdm(total=expected, disable=not progress, unit="B", unit_scale=True,
                                        unit_divisor=1024) as bar:
            while True:
                try:
                    block = resp.read(_CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                    raise CheckpointError(f"{fail}: the transfer broke off after {received} bytes "
                                          f"({type(e).__name__}: {e}); {_by_hand(url, dst, entry)}") from None
                if not block:
                    break
                if received == 0 and _looks_like_html(block):
                    raise CheckpointError(f"{fail}: the server sent a web page, not a weight file (a "
                                          f"login, confirmation or error page); {_by_hand(url, dst, entry)}")
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if received == 0 or (expected is not None and received != expected):
        raise CheckpointError(f"{fail}: the transfer is truncated ({received} of "
                              f"{expected if expected is not None else 'unknown'} bytes); "
                              f"{_by_hand(url, dst, entry)}")


# ------------------------------------------------------------------------------------ loading
def guess_family(state: dict) -> Optional[str]:
    """The model family an (official-named) state dict belongs to, from its key names, or None."""
    keys = list(state)
    if any(k.startswith("stem.conv.") or k.startswith("head.fc.") for k in keys):
        return "ReXNet (timm layout)"
    if any(k.startswith("output.4.") for k in keys):
        return "ReXNet-lite"
    if any(k.startswith("output.1.") for k in keys):
        return "ReXNet"
    if any(".sfr." in k for k in keys):
        return "CondenseNetV2"
    if any(k.endswith(("conv_1._mask", "conv_1.index")) for k in keys):
        return "CondenseNet"
    if any(k.startswith("features.transition_") and ".conv." in k for k in keys):
        return "DenseNet-BC"
    return None


def _family(model) -> str:
    name = type(model).__name__
    return {"ReXNetV1": "ReXNet", "ReXNetV1Lite": "ReXNet-lite", "DenseNetBC": "DenseNet-BC"}.get(name, name)


def classifier_keys(model, pretrained_cfg=None) -> list:
    """State-dict keys the new head replaces: ``model.classifier_keys()``, else the cfg's classifier module's."""
    if hasattr(model, "classifier_keys"):
        return list(model.classifier_keys())
    cfg = pretrained_cfg if pretrained_cfg is not None else getattr(model, "pretrained_cfg", None)
    name = getattr(cfg, "classifier", None) or "classifier"
    return [k for k in model.state_dict() if k.startswith(name + ".")]


def _class_count(state: dict, keys: list) -> Optional[int]:
    for k in keys:
        if k.endswith("weight") and k in state and hasattr(state[k], "shape"):
            return int(state[k].shape[0])
    return None


def load_pretrained(model, source, logger=None, pretrained_cfg=None, progress: bool = True,
                    prefer_ema: bool = True) -> dict:
    """Load pretrained weights into ``model`` (in place); a new head when the class counts differ.

    Returns ``{'path', 'source', 'file_classes', 'model_classes', 'new_head', 'reset_keys'}``.
    Raises CheckpointError / ConfigError with one sentence (see the module doc).
    """
    logger = logger or log
    cfg = pretrained_cfg if pretrained_cfg is not None else getattr(model, "pretrained_cfg", None)
    path = resolve_pretrained(source, cfg, progress=progress)
    state = unwrap_state_dict(read_weight_file(path), prefer_ema=prefer_ema)
    state = adapt_state_dict(model, state)
    own = model.state_dict()
    head = classifier_keys(model, cfg)
    file_classes = _class_count(state, head)
    model_classes = _class_count(own, head)
    new_head = file_classes is not None and file_classes != model_classes
    if new_head:
        # the backbone strictly from the file, the head from the model itself (then re-initialised)
        state = {k: v for k, v in state.items() if k not in head}
        state.update({k: own[k] for k in head})
    try:
        check_state_dict(model, state, strict=True)
    except CheckpointError:
        family = guess_family(state)
        if family is not None and family != _family(model):   # say the one thing that matters
            raise CheckpointError(f"{path} holds {family} weights but the model is {_family(model)}; build "
                                  f"a {family} model or choose weights of this family") from None
        raise
    model.load_state_dict(state, strict=True)
    if new_head:
        model.reset_classifier(model_classes)
        logger.info("pretrained %s: the weights have %d classes and the model %d, so everything but the "
                    "classifier (%s) was loaded and the classifier was re-initialised", source, file_classes,
                    model_classes, ", ".join(head))
    else:
        logger.info("pretrained %s: loaded all %d tensors from %s", source, len(state), path)
    return dict(path=path, source=os.fspath(source), file_classes=file_classes, model_classes=model_classes,
                new_head=new_head, reset_keys=head if new_head else [])
