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
from utils.errors import ConfigError, Interrupted, UserError
from utils.shutdown import handle_signals

# set by the --nproc launcher: the ranks leave their closing message here and the launcher prints each once
MESSAGES = "CDN_RANK_MESSAGES"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train, validate, convert and inspect CondenseNet, CondenseNetV2, "
                                            "ReXNet and DenseNet-BC classifiers.")
    p.add_argument("config", nargs="?", help="path to a JSON config, e.g. configs/cdnv2_exp_0.json")
    p.add_argument("--mode", choices=MODES, help="override the config's mode")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys (the flag may repeat); values are JSON (dotted keys reach into "
                        "model_args)")
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
    """Run one command; ``reexec`` (the script entry point): a CPU training run restarts itself once on
    the faster malloc (utils/allocator.py) before torch is imported."""
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
            if args.nproc is not None and "WORLD_SIZE" not in os.environ:
                check_nproc(args.nproc, config)
                if args.nproc > 1:
                    from agents import get_agent_class
                    get_agent_class(config.agent).check_config(config)     # refused before any process starts
                    return launch(args.nproc, argv if argv is not None else sys.argv[1:], config)
            if reexec and config.mode == "train" and not _wants_cuda(config.device):
                # CPU training only: OpenVINO's converter frees memory through glibc directly, which a preloaded
                # malloc turns into "free(): invalid pointer" (export / runtime commands stay on glibc); on a GPU
                # the activations live in CUDA memory, and every CUDA/NCCL/compile child would inherit the preload
                from utils.allocator import reexec_with_allocator
                reexec_with_allocator()
            run(config)
        except UserError as e:
            if args.debug:
                raise
            return _closing(f"error: {e}", e.exit_code)
        except Interrupted as e:
            name = signal.Signals(e.signum).name
            return _closing(f"stopped by {name}; the checkpoint is saved — run the same command again to resume"
                            if e.saved else f"stopped by {name}; nothing was saved — run the same command again",
                            128 + e.signum)
        except KeyboardInterrupt:
            return _closing("interrupted", 128 + signal.SIGINT)
    return 0


def _closing(message: str, code: int) -> int:
    """Print the run's closing message (under the --nproc launcher: hand it over, so it is printed once)."""
    folder = os.environ.get(MESSAGES)
    if folder:
        with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}"), "w", encoding="utf-8") as f:
            f.write(message)
    else:
        print(message, file=sys.stderr)
    return code


def run(config) -> None:
    """Build the config's agent and run its mode in the experiment folder; a run that fails before
    training has written a checkpoint takes away the folder it created (utils.experiment)."""
    from agents import build_agent
    from engine.loggers import close_logging
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
        close_logging()
        experiment.close(failed)


def check_nproc(nproc: int, config) -> None:
    """Refuse, before any process starts, a process count the run cannot use (one sentence each)."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    from engine.accumulate import resolve_global_batch
    config = resolve_global_batch(config, nproc)        # as each process will (BaseAgent.resolve_runtime)
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


def launch(nproc: int, argv, config) -> int:
    """Run this command under torchrun (in this process) with ``nproc`` processes on this node.

    A training run that another run holds the experiment of is refused here, before any process starts
    (rank 0 then takes the lock). torchrun passes a stop signal on to every rank, which saves and stops;
    the exit code is the first failed rank's (2: an error message, 143: SIGTERM), and the ranks' closing
    messages are printed once each, without torchrun's own traceback."""
    import logging
    import tempfile

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
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)     # its failure report: ours below
    with tempfile.TemporaryDirectory(prefix="cdn-ranks-") as folder:
        os.environ[MESSAGES] = folder
        try:
            torchrun(torchrun_args(["--standalone", f"--nproc_per_node={nproc}", os.path.abspath(__file__), *rest]))
            code = 0
        except SignalException as e:
            code = 128 + e.sigval
        except ChildFailedError as e:
            code = e.get_first_failure()[1].exitcode
            code = code if code > 0 else 128 - code     # killed by signal N: 128 + N, as a shell reports it
        finally:
            del os.environ[MESSAGES]
        for message in dict.fromkeys(open(os.path.join(folder, n), encoding="utf-8").read()
                                     for n in sorted(os.listdir(folder))):
            print(message, file=sys.stderr)
    return code


def _wants_cuda(device: str) -> bool:
    if device == "auto":
        import torch
        return torch.cuda.is_available()
    return device.startswith("cuda")


def _json_str(value):
    return json.dumps(os.fspath(value))


if __name__ == "__main__":
    sys.exit(main(reexec=True))
