"""Convert ReXNet weights between layouts: official clovaai .pth, timm .pth, Paddle (ppim) .pdparams.

    python tools/convert_weights.py SRC DST --to {official,timm} [--model rexnet_1_0]

SRC may be an official or timm PyTorch file (a bare state dict or a training checkpoint) or a
PaddlePaddle ``.pdparams`` file (read with pickle + numpy; Paddle is not needed). The weights are
translated, loaded strictly into the ReXNet model (``--model``, or the published variant whose
channel widths the file matches), and written to DST atomically in the requested layout:
``official`` (the names of this project's models and the clovaai checkpoints) or ``timm``
(``timm.create_model('rexnet_100')`` etc. load it strictly). Any mismatch exits with status 2 and
one sentence.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


from engine.checkpoint import save_checkpoint  # noqa: E402
from graphs.models import create_model, list_models, load_weights  # noqa: E402
from graphs.models.layouts import guess_model_name, to_official_state_dict, to_timm_state_dict  # noqa: E402
from graphs.models.weights import read_weight_file, unwrap_state_dict  # noqa: E402
from utils.errors import CheckpointError, ConfigError, UserError  # noqa: E402


def atomic_save(obj, path):
    """Write DST atomically (temp file, fsync, rename): never a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"output folder {folder!r} does not exist; create it first")
    save_checkpoint(obj, path)


def convert(src, dst, to, model_name=None, log=print):
    state = unwrap_state_dict(read_weight_file(src))
    lite = "output.4.weight" in state
    _, layout = to_official_state_dict(state, lite=lite)
    guessed, num_classes = guess_model_name(state)
    name = model_name or guessed
    if name is None:
        raise CheckpointError(f"{src!r} matches no published ReXNet width; pass --model with the "
                              f"variant it was saved from ({', '.join(list_models('rexnet*'))})")
    if to == "timm" and name.startswith("rexnet_lite"):
        raise ConfigError("ReXNet-lite has no timm layout; use --to official")
    model = create_model(name, num_classes=num_classes or 1000)
    load_weights(model, state, strict=True)       # raises CheckpointError with a width hint
    own = model.state_dict()
    added = len(own) - len(state)
    log(f"read {layout} layout from {src}; matched {len(state)}/{len(own)} tensors for {name}"
        + (f" ({num_classes} classes)" if num_classes and num_classes != 1000 else "")
        + (f"; added {added} num_batches_tracked counters as zeros" if added > 0 else ""))
    out = {k: v.clone() for k, v in own.items()}
    if to == "timm":
        out = to_timm_state_dict(out)
    atomic_save(out, dst)
    log(f"wrote {len(out)} tensors in {to} layout to {dst}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="official/timm .pth or Paddle .pdparams")
    parser.add_argument("dst", help="output .pth")
    parser.add_argument("--to", choices=("official", "timm"), required=True, help="output layout")
    parser.add_argument("--model", default=None,
                        help="registry name (e.g. rexnet_1_0); default: guessed from the file's widths")
    args = parser.parse_args(argv)
    try:
        if args.model is not None and args.model not in list_models("rexnet*"):
            raise ConfigError(f"--model {args.model!r} is not a ReXNet model; choose one of "
                              f"{', '.join(list_models('rexnet*'))}")
        if args.dst.endswith(".pdparams"):
            raise ConfigError("writing Paddle .pdparams is not supported; write a .pth file")
        folder = os.path.dirname(os.path.abspath(args.dst))
        if not os.path.isdir(folder):
            raise ConfigError(f"output folder {folder!r} does not exist; create it first")
        convert(args.src, args.dst, args.to, args.model)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
