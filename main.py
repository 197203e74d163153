"""Entry point: ``python main.py CONFIG [--mode M] [--set key=value ...]``.

Reads and validates the JSON config, picks the agent named by its ``agent`` key and runs it. Errors
the user can fix are printed as one sentence (exit code 2); ``--debug`` shows the traceback.
"""
import argparse
import json
import os
import signal
import sys

from utils.config import MODES, load_config
from utils.errors import Interrupted, UserError
from utils.shutdown import handle_signals


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
    with handle_signals():      # one stop handler for every mode (utils/shutdown.py)
        try:
            if args.list_models:
                from graphs.models import get_pretrained_cfg, list_models
                for name in list_models():     # with the tags that `pretrained` accepts
                    tags = sorted(get_pretrained_cfg(name).weights)
                    print(f"{name:<20} pretrained: {', '.join(tags)}" if tags else name)
                return 0
            overrides = list(args.set) + ([f"checkpoint={_json_str(args.checkpoint)}"] if args.checkpoint else []) \
                + ([f"images={json.dumps([os.fspath(i) for i in args.images])}"] if args.images else [])
            config = load_config(args.config, overrides, mode=args.mode)
            if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
                return launch(args.nproc, argv if argv is not None else sys.argv[1:], config)
            if reexec and config.mode == "train":
                # training only: OpenVINO's converter frees memory through glibc directly, which a preloaded
                # malloc turns into "free(): invalid pointer" (export / runtime commands stay on glibc)
                from utils.allocator import reexec_with_allocator
                reexec_with_allocator()
            run(config)
        except UserError as e:
            if args.debug:
                raise
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        except Interrupted as e:
            name = signal.Signals(e.signum).name
            print(f"stopped by {name}; the checkpoint is saved — run the same command again to resume" if e.saved
                  else f"stopped by {name}; nothing was saved — run the same command again", file=sys.stderr)
            return 128 + e.signum
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 128 + signal.SIGINT
    return 0


def run(config) -> None:
    """Build the config's agent and run its mode in the experiment folder; a run that fails before
    training has written a checkpoint takes away the folder it created (utils.experiment)."""
    from agents import build_agent
    from utils.experiment import ExperimentFolder
    experiment, failed = ExperimentFolder(config), True
    try:
        agent = build_agent(config, experiment)
        try:
            agent.run()
        finally:
            agent.finalize()
        failed = False
    finally:
        experiment.close(failed)


def launch(nproc: int, argv, config) -> int:
    """Run this command under torchrun (in this process) with ``nproc`` processes on this node.

    A training run that another run holds the experiment of is refused here, before any process starts
    (rank 0 then takes the lock). torchrun passes a stop signal on to every rank, which saves and stops;
    the exit code is the first failed rank's (2: an error message, 143: SIGTERM)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args as torchrun_args, run as torchrun

    from utils.experiment import check_unlocked, experiment_dirs
    if config.mode == "train":
        check_unlocked(experiment_dirs(config).root)
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    try:
        torchrun(torchrun_args(["--standalone", f"--nproc_per_node={nproc}", os.path.abspath(__file__), *rest]))
    except SignalException as e:
        return 128 + e.sigval
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code     # killed by signal N: 128 + N, as a shell reports it
    return 0


def _json_str(value):
    return json.dumps(os.fspath(value))


if __name__ == "__main__":
    sys.exit(main(reexec=True))
