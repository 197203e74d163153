"""Entry point: ``python main.py CONFIG [--mode M] [--set key=value ...]``.

Reads and validates the JSON config, picks the agent named by its ``agent`` key and runs it. Errors
the user can fix are printed as one sentence (exit code 2); ``--debug`` shows the traceback.
"""
import argparse
import contextlib
import json
import os
import signal
import sys

from utils.config import MODES, load_config
from utils.errors import ConfigError, Interrupted, UserError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train, validate, convert and inspect CondenseNet, CondenseNetV2, "
                                            "ReXNet and DenseNet-BC classifiers.")
    p.add_argument("config", nargs="?", help="path to a JSON config, e.g. configs/cdnv2_exp_0.json")
    p.add_argument("--mode", choices=MODES, help="override the config's mode")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys; values are JSON (dotted keys reach into model_args)")
    p.add_argument("--checkpoint", help="checkpoint or weight file for validate/convert/visualize/...")
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="predict: image files or folders")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (DistributedDataParallel via torchrun)")
    p.add_argument("--list-models", action="store_true", help="print the registered model names (and their pretrained weight tags) and exit")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = p.parse_args(argv)
    if not args.config and not args.list_models:
        p.error("the config path is required (e.g. configs/cdnv2_exp_0.json)")
    return args


def main(argv=None, reexec: bool = False):
    """Run one command; ``reexec`` (the script entry point): a training run restarts itself once on the
    faster malloc (utils/allocator.py) before torch is imported."""
    args = parse_args(argv)
    try:
        if args.list_models:
            from graphs.models import get_pretrained_cfg, list_models
            for name in list_models():     # with the tags that `pretrained` accepts
                tags = sorted(get_pretrained_cfg(name).weights)
                print(f"{name:<20} pretrained: {', '.join(tags)}" if tags else name)
            return 0
        overrides = list(args.set) + ([f"checkpoint={_json_str(args.checkpoint)}"] if args.checkpoint else []) \
            + ([f"images={json.dumps([os.fspath(i) for i in args.images])}"] if args.images else [])
        world = int(os.environ.get("WORLD_SIZE", 0)) or args.nproc or 1
        config = load_config(args.config, overrides, mode=args.mode, world_size=max(world, 1))
        if args.nproc is not None and "WORLD_SIZE" not in os.environ:
            check_nproc(args.nproc, config)
            if args.nproc > 1:
                return launch(args.nproc, argv if argv is not None else sys.argv[1:])
        if reexec and config.mode == "train" and not _wants_cuda(config.device):
            # CPU training only: OpenVINO's converter frees memory through glibc directly, which a preloaded
            # malloc turns into "free(): invalid pointer" (export / runtime commands stay on glibc); on a GPU
            # the activations live in CUDA memory, and every CUDA/NCCL/compile child would inherit the preload
            from utils.allocator import reexec_with_allocator
            reexec_with_allocator()
        from agents import build_agent
        agent = build_agent(config)
        try:
            agent.run()
        except BaseException:
            with contextlib.suppress(Exception):    # the first error is the one to report (a full disk fails twice)
                agent.finalize()
            raise
        agent.finalize()
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"stopped by {signal.Signals(e.signum).name}; the checkpoint is saved — run the same command "
              f"again to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def check_nproc(nproc: int, config) -> None:
    """Refuse, before any process starts, a process count the run cannot use (one sentence each)."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    for key in ("batch_size", "val_batch_size"):
        batch = config[key] or config.batch_size
        if batch % nproc:
            raise ConfigError(f"{key} {batch} is the global batch and must be a multiple of --nproc {nproc}; "
                              f"change {key} or --nproc")
    if config.device != "cpu":
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if config.device != "auto" and not gpus:
            raise ConfigError(f"device {config.device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
        if gpus and nproc > gpus:
            raise ConfigError(f"--nproc {nproc} asks for one GPU per process but this machine has {gpus}; use "
                              f"--nproc {gpus} or fewer (or device 'cpu')")


def launch(nproc, argv):
    """Re-run this command under torchrun with ``nproc`` processes on this node."""
    import subprocess
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.abspath(__file__), *rest]
    return subprocess.call(cmd)


def _wants_cuda(device: str) -> bool:
    if device == "auto":
        import torch
        return torch.cuda.is_available()
    return device.startswith("cuda")


def _json_str(value):
    return json.dumps(os.fspath(value))


if __name__ == "__main__":
    sys.exit(main(reexec=True))
