"""Experiment configuration: JSON -> defaults -> ``--set`` overrides -> validation -> EasyDict.

Every key is declared once in ``SCHEMA`` (type, default, range, meaning); the key tables of
docs/configuration.md are generated from it (``python -m utils.config --docs``). Validation runs before
anything heavy and raises a one-sentence ConfigError for malformed JSON, unknown keys, wrong types,
out-of-range values, missing required keys and contradictory options. The names of agents, models, data
sets and losses are checked where those layers are assembled (``agents.build_agent``), so this ground floor
imports none of them.
"""
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from easydict import EasyDict

from utils.atomic_io import atomic_write
from utils.errors import ConfigError, closest

# the runtime variants deploy.compare times (it takes them from here: utils imports nothing above it)
BENCHMARK_RUNTIMES = ("eager", "compiled", "onnxruntime", "openvino", "openvino_bf16", "openvino_int8")
DEFAULT_MAX_PIXELS = 89_478_485    # max_image_pixels: Pillow's Image.MAX_IMAGE_PIXELS (1 GiB of 24-bit pixels / 4)
LR_STEPS = ("iter", "epoch")     # when the lr changes: per optimizer step or per epoch (engine.schedules)
MODES = ("train", "validate", "convert", "flops", "visualize", "predict", "export", "benchmark")
REQUIRED = object()
DOCS = "docs/configuration.md"       # the key reference, generated from SCHEMA (markdown_table)


@dataclass(frozen=True)
class Option:
    name: str
    type: str            # 'int' | 'float' | 'str' | 'bool' | 'dict' | 'list[int]' | 'list[float]'
    default: Any
    help: str
    choices: tuple = None
    min: float = None     # inclusive lower bound
    max: float = None     # inclusive upper bound
    nullable: bool = False


O = Option
SCHEMA = [
    # --- experiment ---
    O("exp_name", "str", REQUIRED, "Experiment name; outputs go to `<exp_root>/<exp_name>/`."),
    O("agent", "str", REQUIRED, "Agent class that runs the experiment (`ClassificationAgent`, or `DetectionAgent` for COCO detection)."),
    O("model", "str", REQUIRED, "Registered model name (`python main.py --list-models`); DetectionAgent: the "
      "backbone (graphs.detection.list_backbones(), torchvision baselines included)."),
    O("dataset", "str", REQUIRED, "`cifar10`, `cifar100`, `imagenet` (ImageFolder tree), `folder` (your own "
      "`train/<class>/*` + `val/<class>/*` images, any Pillow-readable type; class names = folder names), "
      "`synthetic`, or `coco` (DetectionAgent: `annotations/instances_{train,val}2017.json` + `{train,val}2017/`)."),
    O("mode", "str", "train", "What to run; `--mode` overrides it.", choices=MODES),
    O("exp_root", "str", "experiments", "Folder that holds all experiments."),
    O("model_args", "dict", {}, "Keyword arguments for the model builder (e.g. `{\"stages\": [14, 14, 14]}`)."),
    O("converted", "bool", False, "Build the converted (deployment) form of the model."),
    O("device", "str", "auto", "`auto` (cuda if available), `cpu`, `cuda` or `cuda:N`."),
    O("seed", "int", 0, "Seed for weights, data order and augmentation.", min=0),
    O("deterministic", "bool", False, "Use deterministic algorithms (slower on GPU)."),
    # --- data ---
    O("data_root", "str", "data", "Where the data set lives (CIFAR python batches or `train/`+`val/` folders)."),
    O("download", "bool", False, "Download CIFAR if missing (needs a network)."),
    O("num_classes", "int", None, "Class count; null = the data set's (for `folder`: its class folders). "
      "Required for `synthetic`.", min=1, nullable=True),
    O("mean", "list[float]", None, "Per-channel normalisation mean; null = the model's `pretrained_cfg` (the "
      "weights' statistics), else the data set's.", nullable=True),
    O("std", "list[float]", None, "Per-channel normalisation std; null as for `mean`.", nullable=True),
    O("batch_size", "int", 64, "Global training batch, split evenly over processes.", min=1),
    O("global_batch_size", "int", None, "The recipe's batch per optimizer step over all processes and "
      "accumulation steps; when set, `batch_size` and `grad_accum_steps` are derived at start-up from the process "
      "count and `max_batch_per_process`, so one config reproduces it on 1, 2, 4 or 8 GPUs.", min=1, nullable=True),
    O("max_batch_per_process", "int", None, "With `global_batch_size`: the largest batch one process (GPU) runs "
      "at once; gradient accumulation makes up the rest. null = no accumulation.", min=1, nullable=True),
    O("val_batch_size", "int", None, "Global validation batch; null = `batch_size`.", min=1, nullable=True),
    O("num_workers", "int", 4, "Loader worker processes (ImageFolder data only).", min=0),
    O("pin_memory", "bool", True, "Pin host memory for faster copies to the GPU."),
    O("drop_last", "bool", False, "Drop the last incomplete training batch."),
    O("train_subset", "int", None, "Use N training samples: the first N of CIFAR/synthetic, a class-balanced "
      "subset (fixed seed) of `imagenet`/`folder`.", min=1, nullable=True),
    O("val_subset", "int", None, "Use N validation samples, chosen as for `train_subset`.", min=1, nullable=True),
    O("input_size", "int", None, "Train/eval image size; null = the model's.", min=8, nullable=True),
    O("crop_pct", "float", None, "Eval centre-crop fraction; null = the model's.", min=0.05, max=1.0,
      nullable=True),
    O("eval_interpolation", "str", None, "Eval resize interpolation; null = the model's.",
      choices=("bilinear", "bicubic"), nullable=True),
    O("train_interpolation", "str", "bilinear", "RandomResizedCrop interpolation.",
      choices=("bilinear", "bicubic", "random")),
    O("hflip", "float", 0.5, "Horizontal-flip probability.", min=0, max=1),
    O("auto_augment", "str", None, "timm RandAugment string, e.g. `rand-m9-mstd0.5` (ImageFolder only).",
      nullable=True),
    O("reprob", "float", 0.0, "Random-erasing probability (ImageFolder only).", min=0, max=1),
    O("remode", "str", "pixel", "Random-erasing fill.", choices=("pixel", "const", "rand")),
    O("bad_images", "str", "error", "Unreadable or too large images (loaders and `predict`): stop with an "
      "error, or skip them (one warning each, counted).",
      choices=("error", "skip")),
    O("max_image_pixels", "int", DEFAULT_MAX_PIXELS, "Refuse images of more pixels (width x height; Pillow's "
      "decompression-bomb limit by default); null = no limit.", min=1, nullable=True),
    O("synthetic_train_size", "int", 512, "Synthetic data: training samples.", min=1),
    O("synthetic_val_size", "int", 256, "Synthetic data: validation samples.", min=1),
    O("synthetic_shape", "list[int]", [3, 32, 32], "Synthetic data: image shape C, H, W."),
    # --- transfer learning ---
    O("pretrained", "str", None, "Weights to start from: a registry tag of the model (`official`, `timm`, ...: "
      "`python main.py --list-models` shows them), a path, or an http(s):// or file:// URL (downloaded once "
      "to torch.hub's cache). Not a resume: epoch, optimizer and schedule start fresh; another class count "
      "gets a new classifier.", nullable=True),
    O("freeze_backbone_epochs", "int", 0, "Train only the classifier for the first N epochs (backbone weights "
      "and BN statistics stay as loaded).", min=0),
    O("head_lr_scale", "float", 1.0, "The classifier's learning rate relative to the backbone's.", min=0),
    O("recondense", "bool", False, "With `pretrained` on a training-time CondenseNet/V2: reset its learned masks "
      "and run the condensation schedule again (default: keep the file's masks; nothing is pruned again)."),
    # --- detection (DetectionAgent) ---
    O("detector", "str", "fasterrcnn", "DetectionAgent: torchvision detector.", choices=("fasterrcnn", "retinanet", "fcos")),
    O("backbone_pretrained", "str", None, "Backbone weights: the same sources as `pretrained` (registry tag, path, "
      "URL; torchvision baselines: a path); null = random init.", nullable=True),
    O("trainable_backbone_layers", "int", None, "Backbone stages trained, counted from the deepest (0-5); null = 3 "
      "with backbone weights, all without (torchvision).", min=0, max=5, nullable=True),
    O("frozen_bn", "bool", None, "FrozenBatchNorm2d in the backbone; null = frozen iff backbone weights are loaded "
      "(torchvision).", nullable=True),
    O("fpn_reductions", "list[int]", [8, 16, 32], "Backbone strides that feed the FPN.", min=2),
    O("fpn_channels", "int", 256, "FPN width.", min=1),
    O("min_size", "list[int]", [800], "Detector resize: shorter side; several values = one drawn per training "
      "batch (multi-scale), eval uses the last.", min=1),
    O("max_size", "int", 1333, "Detector resize: longer side at most.", min=1),
    O("aspect_ratio_group_factor", "int", 3, "Batch images of similar aspect ratio (torchvision's bins "
      "2**linspace(-1,1,2k+1)); 0 = off.", min=0),

    O("detections_per_image", "int", 100, "Detections kept per image (torchvision box_detections_per_img).", min=1),
    O("predict_score_threshold", "float", 0.3, "predict (detection): draw/print detections with at least this "
      "score.", min=0, max=1),
    # --- optimisation ---
    O("max_epoch", "int", 300, "Training epochs.", min=1),
    O("optimizer", "str", "sgd", "Optimizer, as timm names them (`rmsprop` is timm's TF-style `rmsproptf`).",
      choices=("sgd", "adamw", "rmsprop", "lamb")),
    O("lr", "float", 0.1, "Base learning rate.", min=0),
    O("lr_scale_batch", "int", None, "Scale `lr` linearly from this reference batch: lr * batch_size * "
      "grad_accum_steps / lr_scale_batch; null = off.", min=1, nullable=True),
    O("momentum", "float", 0.9, "SGD / RMSprop momentum.", min=0, max=1),
    O("nesterov", "bool", True, "Nesterov momentum (sgd)."),
    O("opt_eps", "float", None, "Optimizer epsilon (adamw, rmsprop, lamb); null = the optimizer's default.",
      min=0, nullable=True),
    O("opt_betas", "list[float]", None, "Betas of adamw / lamb; null = [0.9, 0.999].", nullable=True),
    O("grad_accum_steps", "int", 1, "Micro-batches per optimizer step (effective batch = batch_size x "
      "steps; the schedule counts optimizer steps).", min=1),
    O("weight_decay", "float", 1e-4, "Weight decay.", min=0),
    O("weight_decay_mode", "str", "all", "Decay `all` parameters or only `ndim2` (weights with >= 2 dims).",
      choices=("all", "ndim2")),
    O("lr_schedule", "str", "cosine", "Learning-rate schedule.", choices=("cosine", "multistep")),
    O("lr_step", "str", "iter", "How often the lr changes: every optimizer step (`iter`, the official "
      "CondenseNet/V2 code) or once per epoch with the warmup counted in epochs (`epoch`, timm's train.py: "
      "the ReXNet recipe; see docs/fidelity.md).", choices=LR_STEPS),
    O("lr_milestones", "list[float]", [0.5, 0.75], "Multistep: the lr is multiplied by `lr_gamma` from the "
      "first epoch >= each milestone (in epochs, or fractions of `max_epoch` when all < 1)."),
    O("lr_gamma", "float", 0.1, "Multistep decay factor.", min=0),
    O("warmup_epochs", "float", 0, "Linear warmup length in epochs.", min=0),
    O("warmup_iters", "int", 0, "Linear warmup length in optimizer steps (mmdet's detection recipes), from "
      "warmup_lr to lr; exclusive with warmup_epochs.", min=0),
    O("warmup_lr", "float", 0.0, "Learning rate at the start of warmup.", min=0),
    O("min_lr", "float", 0.0, "Cosine schedule floor (timm's `lr_min`).", min=0),
    O("loss", "str", "cross_entropy", "Loss function: cross-entropy, or knowledge distillation from `teacher`.",
      choices=("cross_entropy", "distill")),
    O("label_smoothing", "float", 0.0, "Label smoothing of the cross-entropy (with mixup: of the mixed "
      "targets, as timm).", min=0, max=0.999),
    O("mixup", "float", 0.0, "Mixup alpha (0 = off).", min=0),
    O("cutmix", "float", 0.0, "CutMix alpha (0 = off).", min=0),
    O("mixup_prob", "float", 1.0, "Probability that a batch is mixed (mixup or cutmix).", min=0, max=1),
    O("mixup_switch_prob", "float", 0.5, "Probability of CutMix instead of mixup when both are on.", min=0, max=1),
    O("mixup_mode", "str", "batch", "One mixing factor per batch, pair or element (timm).",
      choices=("batch", "pair", "elem")),
    O("mixup_off_epoch", "int", 0, "Stop mixing from this epoch on (0 = never).", min=0),
    O("drop_rate", "float", None, "Classifier dropout; null = the model's default (ReXNet 0.2, the others 0).",
      min=0, max=0.999, nullable=True),
    O("drop_path", "float", 0.0, "Stochastic depth rate of the last block, linear from 0 (ReXNet, "
      "CondenseNetV2).", min=0, max=0.999),
    O("teacher", "str", None, "distill: the registered teacher model.", nullable=True),
    O("teacher_args", "dict", {}, "distill: the teacher's builder arguments; {} = those its checkpoint stores."),
    O("teacher_checkpoint", "str", None, "distill: the teacher's weights (any layout `pretrained` reads).",
      nullable=True),
    O("kd_alpha", "float", 0.5, "distill: weight of the teacher (soft) term.", min=0, max=1),
    O("kd_tau", "float", 1.0, "distill: softmax temperature.", min=0.01),
    O("group_lasso_lambda", "float", 0.0, "Group-lasso weight (CondenseNets), active only while condensing.",
      min=0),
    O("clip_grad_norm", "float", None, "Clip the gradient norm to this value.", min=0, nullable=True),
    O("ema", "bool", False, "Keep an exponential moving average of the weights (validated too)."),
    O("ema_decay", "float", 0.9998, "EMA decay per optimizer step.", min=0, max=1),
    O("ema_warmup", "bool", False, "timm's EMA warmup: decay = min(ema_decay, 1 - (1 + step) ** -2/3)."),
    # --- distributed ---
    O("sync_bn", "bool", False, "Use SyncBatchNorm across processes (torchrun / --nproc)."),
    O("dist_timeout", "int", 1800, "Seconds a process waits in a collective before giving up, so one dead "
      "process cannot hang the others forever.", min=10),
    # --- speed ---
    O("amp", "str", "none", "Training precision: `bf16` (cuda or cpu) or `fp16` (cuda only; refused for "
      "training on a CPU). The other modes run in fp32 when the device cannot run it.",
      choices=("none", "bf16", "fp16")),
    O("channels_last", "bool", None, "Channels-last memory format; null = on for fp32 training on the CPU (faster "
      "for every family there: see The training recipe), off otherwise.", nullable=True),
    O("memory_efficient", "bool", True, "Training: recompute the cheap BN-ReLU(-concat) parts of dense layers in "
      "the backward pass instead of storing them (same results, far less memory)."),
    O("compile", "bool", False, "Training: run the model through `torch.compile`."),
    # --- logging, checkpoints, evaluation ---
    O("validate_every", "int", 1, "Validate every N epochs (and after the last).", min=1),
    O("log_interval", "int", 20, "Refresh the progress bar every N iterations.", min=1),
    O("resume", "str", None, "Resume from this checkpoint instead of the experiment's own.", nullable=True),
    O("auto_resume", "bool", True, "Resume automatically from the experiment's `last` checkpoint."),
    O("checkpoint", "str", None, "Checkpoint for validate/convert/...; `--checkpoint` overrides it.",
      nullable=True),
    O("recovery_every", "int", 0, "Also write a recovery checkpoint every N iterations (0 = off), so a killed "
      "job loses at most N iterations.", min=0),
    O("recovery_keep", "int", 2, "How many recovery checkpoints to keep.", min=1),
    O("use_ema_weights", "bool", True, "Evaluate/convert a checkpoint's EMA weights when it has them."),
    O("images", "list[str]", [], "predict: image files or folders; `--images` overrides it."),
    O("export_formats", "list[str]", ["onnx", "torchscript"], "export: formats to write into `out/`: `onnx`, "
      "`torchscript`, `openvino` (IR .xml/.bin), `openvino_int8` (NNCF post-training quantization), "
      "`onnx_int8` (onnxruntime static quantization)."),
    O("calibration_size", "int", 300, "export: training images (through the eval transform) that calibrate the "
      "int8 formats.", min=1),
    O("runtime", "str", "torch", "validate/predict: run the model in PyTorch, or a deployed file on onnxruntime "
      "or OpenVINO.", choices=("torch", "onnxruntime", "openvino")),
    O("runtime_artifact", "str", None, "validate/predict on a runtime: the .onnx / .xml file; null = the "
      "experiment's `out/<exp_name>.onnx` / `.xml`.", nullable=True),
    O("runtime_threads", "int", 0, "Runtime intra-op threads (0 = the runtime's default).", min=0),
    O("runtime_precision", "str", "f32", "OpenVINO: `f32` pins fp32; `auto` lets the CPU plugin run bf16 where "
      "the CPU has it.", choices=("f32", "auto")),
    O("benchmark_batch_size", "int", None, "benchmark: throughput/training batch; null = `batch_size`.",
      min=1, nullable=True),
    O("benchmark_runtimes", "list[str]", ["eager", "onnxruntime", "openvino", "openvino_int8"], "benchmark "
      "(ClassificationAgent): "
      "batch-1 latency of the deployable model on these runtimes, beside timm's `rexnet_100` (224 px) on the "
      "same ones: `eager` (fused), `compiled` (torch.compile), `onnxruntime`, `openvino` (fp32), `openvino_bf16` "
      "(the CPU plugin's default), `openvino_int8` (NNCF; calibrated on random images: speed only); `[]` = "
      "the PyTorch rows only."),
    O("prune_classifier", "bool", True, "CondenseNet v1 conversion: prune the classifier to half its "
      "inputs as the official converter does."),
]
SCHEMA_BY_NAME = {o.name: o for o in SCHEMA}


def defaults():
    return {o.name: _copy(o.default) for o in SCHEMA if o.default is not REQUIRED}


def _copy(value):
    return json.loads(json.dumps(value))


def read_json(path):
    """Read a JSON config file; malformed JSON names the file, line and column."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist; pass the path to a JSON file such as "
                          f"configs/cdnv2_exp_0.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read config file {path!r}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of keys and values, not a {type(data).__name__}")
    return data


def parse_overrides(items):
    """``["a=1", "model_args.stages=[8,8,8]"]`` -> list of (dotted key, value); values parse as JSON,
    and fall back to plain strings (``data_root=/tmp/x``). A key given twice is refused."""
    out, seen = [], {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects key=value (e.g. --set max_epoch=1), got {item!r}")
        if key in seen:
            raise ConfigError(f"--set gives {key} twice ({seen[key]!r} and {item!r}); keep one of them")
        seen[key] = item
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((key, value))
    return out


def apply_overrides(data, overrides):
    for key, value in overrides:
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            if part not in node or node[part] is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"--set {key}: {part!r} is not a dictionary, so it has no key {parts[-1]!r}")
            node = node[part]
        node[parts[-1]] = value
    return data


def _type_ok(kind, value):
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "dict":
        return isinstance(value, dict)
    if kind.startswith("list["):
        inner = kind[5:-1]
        return isinstance(value, list) and all(_type_ok(inner, v) for v in value)
    raise AssertionError(kind)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "dict": "a JSON object", "list[int]": "a list of integers", "list[float]": "a list of numbers",
               "list[str]": "a list of strings"}


def _describe(value):
    return f"{json.dumps(value)} ({'null' if value is None else type(value).__name__})"


def _non_finite(value, path):
    """(dotted path, value) of the first NaN or infinite number in ``value`` (JSON allows NaN/Infinity), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if isinstance(value, dict) else f"{path}[{k}]")
        if found:
            return found
    return None


def validate(data, source="config"):
    """Check keys, types, ranges and names; return the complete config as an EasyDict."""
    for key in data:
        if key not in SCHEMA_BY_NAME:
            raise ConfigError(f"unknown key {key!r} in {source}{closest(key, SCHEMA_BY_NAME)}; "
                              f"see the key tables in {DOCS}")
        bad = _non_finite(data[key], key)
        if bad:
            raise ConfigError(f"{bad[0]} is {json.dumps(bad[1])} in {source}; every number must be finite")
    cfg = defaults()
    cfg.update(data)
    for o in SCHEMA:
        value = cfg.get(o.name, REQUIRED)
        if value is REQUIRED:
            raise ConfigError(f"{source} is missing the required key {o.name!r} ({o.help})")
        if value is None:
            if not o.nullable:
                raise ConfigError(f"key {o.name!r} must be {_TYPE_WORDS[o.type]}, not null")
            continue
        if not _type_ok(o.type, value):
            raise ConfigError(f"key {o.name!r} must be {_TYPE_WORDS[o.type]}, got {_describe(value)}")
        if o.choices and value not in o.choices:
            raise ConfigError(f"key {o.name!r} must be one of {', '.join(map(str, o.choices))}; "
                              f"got {value!r}{closest(value, o.choices)}")
        values = value if isinstance(value, list) else [value]
        for v in values if o.type in ("int", "float", "list[int]", "list[float]") else []:
            if o.min is not None and v < o.min:
                raise ConfigError(f"key {o.name!r} must be >= {o.min}, got {v}")
            if o.max is not None and v > o.max:
                raise ConfigError(f"key {o.name!r} must be <= {o.max}, got {v}")
    _check_consistency(cfg)
    return EasyDict(cfg)


def _check_consistency(cfg):
    name = cfg["exp_name"]
    if not name or name in (".", "..") or "/" in name or "\\" in name or name != name.strip() or "\0" in name:
        raise ConfigError(f"exp_name must be a plain folder name (no '/', no '..'), got {name!r}; put the parent "
                          f"folder into exp_root instead")
    if cfg["dataset"] == "synthetic" and cfg["num_classes"] is None:
        raise ConfigError("dataset 'synthetic' needs num_classes (e.g. \"num_classes\": 10)")
    if len(cfg["synthetic_shape"]) != 3 or min(cfg["synthetic_shape"]) < 1:
        raise ConfigError(f"synthetic_shape must be three positive sizes [C, H, W], got {cfg['synthetic_shape']}")
    if cfg["warmup_epochs"] >= cfg["max_epoch"] and cfg["warmup_epochs"] > 0:
        raise ConfigError(f"warmup_epochs ({cfg['warmup_epochs']}) must be shorter than max_epoch "
                          f"({cfg['max_epoch']})")
    if cfg["warmup_iters"] and cfg["lr_step"] == "epoch":
        raise ConfigError("warmup_iters counts optimizer steps, but lr_step 'epoch' changes the lr once per epoch; "
                          "set warmup_epochs instead, or lr_step 'iter'")
    if cfg["warmup_iters"] and cfg["warmup_epochs"]:
        raise ConfigError("warmup_iters and warmup_epochs both set a warmup; set one of them to 0")
    if cfg["dataset"] == "coco" and cfg["agent"] != "DetectionAgent":
        raise ConfigError(f"dataset 'coco' holds detection annotations: it needs agent 'DetectionAgent', not "
                          f"{cfg['agent']!r}")
    if not cfg["min_size"] or cfg["max_size"] < max(cfg["min_size"]):
        raise ConfigError(f"max_size ({cfg['max_size']}) must be at least every min_size ({cfg['min_size']})")
    if cfg["amp"] == "fp16" and cfg["device"] == "cpu" and cfg["mode"] == "train":
        raise ConfigError("amp 'fp16' needs a CUDA device; use amp 'bf16' or 'none' on the CPU")
    if cfg["opt_betas"] is not None and (len(cfg["opt_betas"]) != 2 or not all(0 <= b < 1 for b in cfg["opt_betas"])):
        raise ConfigError(f"opt_betas must be two numbers in [0, 1), got {cfg['opt_betas']}")
    if cfg["opt_betas"] is not None and cfg["optimizer"] not in ("adamw", "lamb"):
        raise ConfigError(f"opt_betas applies to adamw and lamb, not {cfg['optimizer']}")
    if cfg["opt_eps"] is not None and cfg["optimizer"] == "sgd":
        raise ConfigError("opt_eps applies to adamw, rmsprop and lamb, not sgd")
    if cfg["min_lr"] and (cfg["lr_schedule"] != "cosine" or cfg["min_lr"] > cfg["lr"]):
        raise ConfigError(f"min_lr ({cfg['min_lr']}) is the floor of the cosine schedule and must not exceed "
                          f"lr ({cfg['lr']})")
    if cfg["ema_warmup"] and not cfg["ema"]:
        raise ConfigError("ema_warmup warms up the EMA: it needs ema true")
    if cfg["loss"] == "distill" and not (cfg["teacher"] and cfg["teacher_checkpoint"]):
        raise ConfigError("loss 'distill' needs teacher (a model name) and teacher_checkpoint (its weights)")
    if cfg["resume"] and not cfg["auto_resume"]:
        raise ConfigError("resume names a checkpoint but auto_resume is false; drop one of the two")
    dev = cfg["device"]
    if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    formats = ("onnx", "torchscript", "openvino", "openvino_int8", "onnx_int8")
    unknown = [f for f in cfg["export_formats"] if f not in formats]
    if unknown:
        raise ConfigError(f"export_formats may hold {', '.join(formats)}, not {unknown[0]!r}"
                          f"{closest(unknown[0], formats)}")
    unknown = [v for v in cfg["benchmark_runtimes"] if v not in BENCHMARK_RUNTIMES]
    if unknown:
        raise ConfigError(f"benchmark_runtimes may hold {', '.join(BENCHMARK_RUNTIMES)}, not {unknown[0]!r}"
                          f"{closest(unknown[0], BENCHMARK_RUNTIMES)}")
    for key in ("mean", "std"):
        values = cfg[key]
        if values is not None and (len(values) != 3 or (key == "std" and min(values) <= 0)):
            raise ConfigError(f"{key} must be three {'positive ' if key == 'std' else ''}numbers (one per RGB "
                              f"channel), got {values}")
    if cfg["freeze_backbone_epochs"] and cfg["freeze_backbone_epochs"] >= cfg["max_epoch"]:
        raise ConfigError(f"freeze_backbone_epochs ({cfg['freeze_backbone_epochs']}) must be shorter than "
                          f"max_epoch ({cfg['max_epoch']}), or the backbone never trains")
    if cfg["recondense"] and (not cfg["pretrained"] or cfg["converted"]):
        raise ConfigError("recondense resets the masks of pretrained training-time weights: it needs pretrained "
                          "and converted false")
    if cfg["lr_schedule"] == "multistep" and sorted(cfg["lr_milestones"]) != cfg["lr_milestones"]:
        raise ConfigError(f"lr_milestones must be increasing, got {cfg['lr_milestones']}")


def load_config(path, overrides=(), mode=None, world_size=1):
    """Read ``path``, apply ``--set`` overrides and ``--mode``, validate, derive the per-step batch for
    ``world_size`` processes (``global_batch_size``); return an EasyDict."""
    data = read_json(path)
    data = apply_overrides(data, parse_overrides(overrides))
    if mode is not None:
        data["mode"] = mode
    return resolve_batch(validate(data, source=path), data, world_size)


def split_global_batch(total: int, processes: int, max_per_process=None):
    """(batch per step over all processes, accumulation steps) that make ``total`` with at most
    ``max_per_process`` per process, or None when ``total`` does not split evenly over ``processes``."""
    limit = max_per_process or total
    for steps in range(1, total + 1):
        if total % (processes * steps) == 0 and total // (processes * steps) <= limit:
            return total // steps, steps
    return None


def resolve_batch(cfg, data: dict, world_size: int):
    """With ``global_batch_size``: set ``batch_size`` (global per step) and ``grad_accum_steps`` for
    ``world_size`` processes; one sentence where the recipe's batch cannot be split that way."""
    total = cfg.global_batch_size
    if total is None:
        if cfg.max_batch_per_process is not None:
            raise ConfigError("max_batch_per_process applies with global_batch_size; set global_batch_size (the "
                              "recipe's batch) or drop max_batch_per_process")
        return cfg
    both = [k for k in ("batch_size", "grad_accum_steps") if k in data]
    if both:
        raise ConfigError(f"global_batch_size derives {' and '.join(both)}; set either global_batch_size or "
                          f"{' and '.join(both)}, not both")
    split = split_global_batch(total, world_size, cfg.max_batch_per_process)
    if split is None:
        raise ConfigError(f"global_batch_size {total} does not split evenly over {world_size} processes; use a "
                          f"process count that divides it")
    cfg.batch_size, cfg.grad_accum_steps = split
    return cfg


# The sections of docs/configuration.md: (title, the first key of the section in SCHEMA's order).
SECTIONS = (("Experiment", "exp_name"), ("Data", "data_root"), ("Transfer learning", "pretrained"),
            ("Detection (DetectionAgent)", "detector"), ("Optimisation, loss and regularisation", "max_epoch"),
            ("Distributed", "sync_bn"), ("Speed and precision", "amp"),
            ("Logging, checkpoints and the other modes", "validate_every"))


def markdown_table():
    """The key reference of docs/configuration.md: one table per section, each key's type, default, meaning."""
    starts = {first: title for title, first in SECTIONS}
    rows = []
    for o in SCHEMA:
        if o.name in starts:
            rows += ["", f"### {starts[o.name]}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        default = "required" if o.default is REQUIRED else f"`{json.dumps(o.default)}`"
        kind = o.type + (" or null" if o.nullable else "")
        choices = f" One of: {', '.join(f'`{c}`' for c in o.choices)}." if o.choices else ""
        rows.append(f"| `{o.name}` | {kind} | {default} | {o.help}{choices} |")
    return "\n".join(rows[1:])


def update_docs():
    """Replace the generated key tables between the config-table markers of docs/configuration.md."""
    import re
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), DOCS)
    text = open(path, encoding="utf-8").read()
    pattern = r"(<!-- config-table[^\n]*-->\n).*?(\n<!-- /config-table -->)"
    new = re.sub(pattern, lambda m: m.group(1) + markdown_table() + m.group(2), text, flags=re.S)
    atomic_write(path, new)


if __name__ == "__main__":
    import sys
    update_docs() if "--docs" in sys.argv else print(markdown_table())
