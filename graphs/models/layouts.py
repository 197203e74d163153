"""Weight files of this project's families: layout translation, width guessing and mismatch hints.

:func:`graphs.models.weights.load_weights` and :func:`graphs.models.hub.load_pretrained` pass every state
dict through :func:`adapt_state_dict` before the strict load and add :func:`mismatch_hint`'s clause to the
sentence that reports keys or shapes that do not fit.

ReXNet layouts: the official one (clovaai's names, which the models use: passes through), timm's
``rexnet_XXX`` layout (``stem``/``features.0..15``/``features.16``/``head.fc``; translated by name,
classifier reshaped [C, pen] -> [C, pen, 1, 1]) and PaddlePaddle (ppim) ``.pdparams`` names
(``_mean``/``_variance``, no ``num_batches_tracked``). ``to_timm_state_dict`` writes the timm layout back;
``guess_model_name`` names the published width whose channels a file has.
"""
import re

import torch

from utils.errors import CheckpointError

from .condense import CondenseFamilyMixin
from .rexnet import VARIANTS, ReXNetV1, ReXNetV1Lite, rexnet_channels, rexnet_lite_channels

__all__ = ["adapt_state_dict", "mismatch_hint", "to_official_state_dict", "to_timm_state_dict",
           "guess_model_name"]

PADDLE_BN_NAMES = {"_mean": "running_mean", "_variance": "running_var"}


def adapt_state_dict(model, state: dict) -> dict:
    """``state`` in ``model``'s own names: a ReXNet file in any known layout is translated, others pass."""
    if isinstance(model, (ReXNetV1, ReXNetV1Lite)):
        return _adapt_rexnet(model, state)
    return state


def mismatch_hint(model, missing: list, unexpected: list, shapes: list) -> str:
    """A short clause guessing which model setting makes a weight file not fit ``model`` ('' if none)."""
    if isinstance(model, (ReXNetV1, ReXNetV1Lite)):
        return _rexnet_hint(model, missing, unexpected, shapes)
    if isinstance(model, CondenseFamilyMixin):
        return _condense_hint(model, missing, unexpected, shapes)
    return ""


# --------------------------------------------------------------------------------------------
# ReXNet (pure functions on state dicts, then the model-aware adapter and hint)
# --------------------------------------------------------------------------------------------
def _official_block_parts(has_exp, has_se):
    """timm sub-module prefix -> official ``out.`` sub-prefix for one v1 block."""
    parts, i = {}, 0
    if has_exp:
        parts["conv_exp.conv"], parts["conv_exp.bn"] = "0", "1"
        i = 3
    parts["conv_dw.conv"], parts["conv_dw.bn"] = str(i), str(i + 1)
    i += 2
    if has_se:
        parts["se.fc1"], parts["se.bn"], parts["se.fc2"] = f"{i}.fc.0", f"{i}.fc.1", f"{i}.fc.3"
        i += 1
    i += 1  # ReLU6
    parts["conv_pwl.conv"], parts["conv_pwl.bn"] = str(i), str(i + 1)
    return parts


def _is_timm(state):
    return "stem.conv.weight" in state or "head.fc.weight" in state


def _is_paddle(state):
    return any(k.endswith(("._mean", "._variance")) for k in state)


def _split(key):
    """'features.3.out.5.fc.1.weight' -> ('features.3.out.5.fc.1', 'weight')."""
    prefix, _, leaf = key.rpartition(".")
    return prefix, leaf


def timm_to_official(state):
    """timm ``rexnet_XXX`` state dict -> official names (classifier reshaped to a 1x1 conv)."""
    block_re = re.compile(r"^features\.(\d+)\.(conv_exp|conv_dw|se|conv_pwl)\.")
    blocks = {}
    for key in state:
        m = block_re.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(m.group(2))
    n = len(blocks)
    if sorted(blocks) != list(range(n)):
        raise CheckpointError(f"the timm-layout file has non-consecutive blocks {sorted(blocks)}; "
                              "it is not a timm rexnet_* state dict")
    out = {}
    for key, value in state.items():
        prefix, leaf = _split(key)
        new = None
        if prefix in ("stem.conv", "stem.bn"):
            new = {"stem.conv": "features.0", "stem.bn": "features.1"}[prefix]
        elif prefix in (f"features.{n}.conv", f"features.{n}.bn"):
            new = f"features.{n + 3 + (prefix.endswith('.bn'))}"
        elif prefix == "head.fc":
            new = "output.1"
            if leaf == "weight" and value.dim() == 2:
                value = value.reshape(value.shape[0], value.shape[1], 1, 1)
        else:
            m = re.match(r"^features\.(\d+)\.(.+)$", prefix)
            if m and int(m.group(1)) in blocks:
                j, sub = int(m.group(1)), m.group(2)
                parts = _official_block_parts("conv_exp" in blocks[j], "se" in blocks[j])
                if sub in parts:
                    new = f"features.{j + 3}.out.{parts[sub]}"
        out[f"{new}.{leaf}" if new is not None else key] = value
    return out


def _official_blocks(state):
    """{block feature index: (has_exp, has_se)} read from an official-layout v1 state dict."""
    conv_re = re.compile(r"^features\.(\d+)\.out\.(\d+)\.weight$")
    se_re = re.compile(r"^features\.(\d+)\.out\.\d+\.fc\.")
    convs, ses = {}, set()
    for key, value in state.items():
        m = conv_re.match(key)
        if m and value.dim() == 4:
            convs[int(m.group(1))] = convs.get(int(m.group(1)), 0) + 1
        m = se_re.match(key)
        if m:
            ses.add(int(m.group(1)))
    return {k: (c == 3, k in ses) for k, c in sorted(convs.items())}


def to_timm_state_dict(state):
    """Official ReXNet v1 state dict -> timm ``rexnet_XXX`` layout (head.fc becomes a Linear)."""
    if "output.4.weight" in state:
        raise CheckpointError("ReXNet-lite has no timm counterpart; convert it to the official layout only")
    blocks = _official_blocks(state)
    idx = sorted(blocks)
    if not idx or idx != list(range(3, 3 + len(idx))) or "output.1.weight" not in state:
        raise CheckpointError("the state dict is not in the official ReXNet v1 layout "
                              "(features.3.. blocks and output.1 classifier expected)")
    n = len(idx)
    inverse = {}
    for k, (has_exp, has_se) in blocks.items():
        for tname, oname in _official_block_parts(has_exp, has_se).items():
            inverse[f"features.{k}.out.{oname}"] = f"features.{k - 3}.{tname}"
    inverse.update({"features.0": "stem.conv", "features.1": "stem.bn", f"features.{n + 3}": f"features.{n}.conv",
                    f"features.{n + 4}": f"features.{n}.bn", "output.1": "head.fc"})
    out = {}
    for key, value in state.items():
        prefix, leaf = _split(key)
        if prefix not in inverse:
            raise CheckpointError(f"cannot place official key {key!r} in the timm layout")
        if prefix == "output.1" and leaf == "weight":
            value = value.reshape(value.shape[0], value.shape[1])
        out[f"{inverse[prefix]}.{leaf}"] = value
    return out


def paddle_to_torch_names(state):
    """Rename Paddle BN buffers (``_mean``/``_variance``) to PyTorch's."""
    out = {}
    for key, value in state.items():
        prefix, leaf = _split(key)
        out[f"{prefix}.{PADDLE_BN_NAMES[leaf]}" if leaf in PADDLE_BN_NAMES else key] = value
    return out


def to_official_state_dict(state, lite=False):
    """Translate any known layout to official names; returns ``(state, layout)`` with layout in
    'official' | 'timm' | 'paddle'. (num_batches_tracked and Linear transposes are added by the
    adapter (``adapt_state_dict``), which knows the model's keys.)"""
    state = dict(state)
    layout = "official"
    if _is_paddle(state):
        state, layout = paddle_to_torch_names(state), "paddle"
    if _is_timm(state):
        if lite:
            raise CheckpointError("the file is in timm's rexnet layout, which exists for ReXNet v1 only; "
                                  "build a rexnet_* (not rexnet_lite_*) model")
        state, layout = timm_to_official(state), "timm"
    return state, layout


def _published(lite):
    """{name: width} of the published ReXNet v1 (or lite) variants, and their channel schedule."""
    widths = {name: width for name, (cls, width, *_) in VARIANTS.items() if cls.lite == lite}
    return widths, (rexnet_lite_channels if lite else rexnet_channels)


def guess_model_name(state):
    """(registry name, num_classes) of the published variant an official/timm/Paddle state dict
    matches, or (None, num_classes) when its channels match no published width."""
    lite = "output.4.weight" in state
    state, _ = to_official_state_dict(state, lite=lite)
    cls = state.get("output.4.weight" if lite else "output.1.weight")
    num_classes = int(cls.shape[0]) if cls is not None else None
    if "features.0.weight" not in state:
        return None, num_classes
    stem = state["features.0.weight"].shape[0]
    # block output channels: the last conv weight of each block's ``out``
    last = {}
    for key, value in state.items():
        m = re.match(r"^features\.(\d+)\.out\.(\d+)\.weight$", key)
        if m and value.dim() == 4:
            k, i = int(m.group(1)), int(m.group(2))
            if i >= last.get(k, (-1, 0))[0]:
                last[k] = (i, value.shape[0])
    outs = [last[k][1] for k in sorted(last)]
    pen_key = f"features.{3 + len(outs)}.weight"
    pen = state[pen_key].shape[0] if pen_key in state else None
    table, schedule = _published(lite)
    for name, w in table.items():
        s, _, o, p = schedule(w)
        if (s, o, p) == (stem, outs, pen):
            return name, num_classes
    return None, num_classes


def _adapt_rexnet(model, state):
    """Translate timm / Paddle layouts to the official names of ``model``."""
    own = model.state_dict()
    state, layout = to_official_state_dict(state, lite=model.lite)
    # Paddle and pre-0.4.1 PyTorch files have no num_batches_tracked: add zeros.
    for key in list(state):
        if key.endswith(".running_mean"):
            nbt = key[:-len("running_mean")] + "num_batches_tracked"
            if nbt in own and nbt not in state:
                state[nbt] = torch.zeros((), dtype=torch.long)
    if layout == "paddle":
        # Paddle Linear weights are [in, out]; ReXNet has no Linear, but keep the rule general.
        for key, value in list(state.items()):
            if (key in own and value.dim() == 2 and own[key].dim() == 2
                    and tuple(value.shape) != tuple(own[key].shape)
                    and tuple(value.t().shape) == tuple(own[key].shape)):
                state[key] = value.t().contiguous()
    return state


def _rexnet_signature(model, shapes_of):
    """(stem, block outs, pen, classes) read from ``shapes_of(key, own_shape)``."""
    stem = shapes_of("features.0.weight")
    outs = [shapes_of(f"features.{model.first_block + j}.out.{blk.pwl_index}.weight")
            for j, blk in enumerate(model.blocks())]
    pen = shapes_of(f"features.{model.first_block + model.num_blocks}.weight")
    return stem, outs, pen


def _rexnet_hint(model, missing, unexpected, shapes):
    """A short clause naming the likely cause of a key/shape mismatch (width, classes, family)."""
    family_keys = {"output.4.weight", "output.1.running_mean"}
    if not model.lite and any(k in family_keys for k in unexpected):
        return "the file looks like a ReXNet-lite checkpoint; build a rexnet_lite_* model"
    if model.lite and "output.4.weight" in missing:
        return "the file looks like a ReXNet v1 checkpoint; build a rexnet_* model"
    block_re = re.compile(r"^features\.(\d+)\.out\.")
    if any(block_re.match(k) for k in list(missing) + list(unexpected)):
        return ("the file has a different number or kind of blocks (depth_mult / use_se differ "
                "from the model's); build the model the file was saved from")
    got = {k: g for k, g, _ in shapes}
    own = model.state_dict()

    def out_ch(key):
        if key in got:
            return got[key][0]
        return own[key].shape[0] if key in own else None

    stem, outs, pen = _rexnet_signature(model, out_ch)
    cls_key = "output.4.weight" if model.lite else "output.1.weight"
    if set(got) <= {cls_key, cls_key[:-len("weight")] + "bias"} and got:
        return (f"the file has {got[cls_key][0] if cls_key in got else '?'} classes; build the "
                f"model with num_classes={got[cls_key][0] if cls_key in got else '?'}")
    table, schedule = _published(model.lite)
    for name, w in table.items():
        s, _, o, p = schedule(w)
        if s == stem and o == outs and p == pen:
            return (f"the file looks like width {w} ({name}: stem {s}, last block {o[-1]}, "
                    f"pen {p} channels); build {name} instead")
    return (f"the file's channels (stem {stem}, last block {outs[-1] if outs else '?'}, pen {pen}) "
            f"match no published {'ReXNet-lite' if model.lite else 'ReXNet'} width "
            f"({', '.join(str(w) for w in table.values())}); check width_mult"
            + ("" if model.lite else " (timm's rexnetr_* models round channels to multiples of 8 "
               "and are a different architecture)"))


# --------------------------------------------------------------------------------------------
# CondenseNet / CondenseNetV2
# --------------------------------------------------------------------------------------------
def _condense_hint(model, missing, unexpected, shapes):
    """A short clause guessing which CondenseNet / CondenseNetV2 setting makes a weight file not fit."""
    hints = []
    miss_mask = any(k.endswith("._mask") for k in missing)
    extra_mask = any(k.endswith("._mask") for k in unexpected)
    miss_index = any(k.endswith(".index") for k in missing)
    extra_index = any(k.endswith(".index") for k in unexpected)
    if miss_mask and extra_index:
        hints.append("the file is a converted (deployable) checkpoint: build the model with converted=True")
    elif miss_index and extra_mask:
        hints.append("the file is a training-time (unconverted) checkpoint: build the model with "
                     "converted=False (and convert() it afterwards)")
    # stages from missing / extra dense layers
    pat = re.compile(r"features\.denseblock_(\d+)\.denselayer_(\d+)\.")
    stages = list(model.stages)

    def layer_ids(keys):
        found = {}
        for k in keys:
            m = pat.match(k)
            if m:
                found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        return found
    extra, gone = layer_ids(unexpected), layer_ids(missing)
    file_stages = list(stages)
    for b, ids in extra.items():
        while len(file_stages) < b:
            file_stages.append(0)
        file_stages[b - 1] = max(file_stages[b - 1], max(ids))
    for b, ids in gone.items():
        if b <= len(file_stages) and not (b in extra):
            own = _layer_keys(model, b, min(ids))
            if own and all(k in missing for k in own):
                file_stages[b - 1] = min(ids) - 1
    if file_stages != stages:
        file_stages = [s for s in file_stages]
        while file_stages and file_stages[-1] == 0:
            file_stages.pop()
        hints.append(f"the file looks like stages={'-'.join(map(str, file_stages))} "
                     f"(this model has {'-'.join(map(str, stages))})")
    # groups / condense factor / growth / classes from shapes
    for k, got, want in shapes:
        if k.endswith("conv_1.conv.weight") and len(got) == 4 and model.is_converted and got[1] != want[1] \
                and got[0] == want[0]:
            lgc = model.get_submodule(k[:-len(".conv.weight")])
            c_file = lgc.in_channels / got[1]
            hints.append(f"the file's learned group convs keep {got[1]} inputs per group, i.e. "
                         f"condense_factor={c_file:g} (this model has {lgc.condense_factor}); build the "
                         f"matching variant (e.g. the _g{int(c_file)} / G={int(c_file)} one) or pass "
                         f"group_1x1/condense_factor")
            break
        if k.endswith("conv_2.conv.weight") and len(got) == 4 and got[0] == want[0] and got[1] != want[1]:
            g_file = want[1] * model._group_3x3 / got[1]
            hints.append(f"the file's 3x3 convs look like group_3x3={g_file:g} (this model has "
                         f"{model._group_3x3})")
            break
        if k.endswith("conv_2.conv.weight") and len(got) == 4 and got[0] != want[0]:
            hints.append(f"the file's growth rate looks like {got[0]} where this model has {want[0]}")
            break
        if k.endswith("sfr.conv.weight") and len(got) == 4 and model.is_converted and got[1] != want[1]:
            sfr = model.get_submodule(k[:-len(".conv.weight")])
            hints.append(f"the file's SFR layers look like group_trans={sfr.in_channels / got[1]:g} "
                         f"(this model has {sfr.groups})")
            break
    for k, got, want in shapes:
        if k in ("classifier.weight", "classifier.linear.weight") and got[0] != want[0]:
            hints.append(f"the file has {got[0]} classes: pass num_classes={got[0]}")
            break
    return "; ".join(hints)


def _layer_keys(model, block, layer):
    prefix = f"features.denseblock_{block}.denselayer_{layer}."
    return [k for k in model.state_dict() if k.startswith(prefix)]
