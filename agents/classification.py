"""ClassificationAgent: trains, validates, converts and inspects any registered classifier."""
import copy
import csv
import io
import os
import signal
import time

import torch
from torch import nn
from tqdm import tqdm

from agents.base import BaseAgent
from datasets import build_loaders
from graphs.losses import build_loss
from graphs.models import create_model, load_weights
from graphs.models.registry import model_arg_names
from utils.allocator import active_allocator
from utils.checkpoint import FORMAT, atomic_write, plain, load_checkpoint, recovery_checkpoints, save_checkpoint
from utils.distributed import convert_sync_batchnorm, init_distributed
from utils.ema import ModelEma
from utils.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from utils.experiment import (prepare_experiment, resolve_device, rng_state, seed_everything, set_rng_state,
                              setup_logging)
from utils.metrics import RunningSums
from utils.schedules import LRSchedule

DEFAULT_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                 "ema_val_loss", "ema_val_top1", "ema_val_top5", "epoch_time_s", "train_images_per_s")


class ClassificationAgent(BaseAgent):
    def __init__(self, config):
        super().__init__(config)
        self.dist = init_distributed(config.device, config.dist_timeout)
        self.device = resolve_device(config.device, self.dist.local_rank)
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("amp 'fp16' needs a CUDA device and none is available; use --set amp=bf16 (or none) "
                              "to run on the CPU")
        self.dirs = prepare_experiment(config, is_main=self.dist.is_main, save_config=config.mode == "train")
        self.logger = setup_logging(os.path.join(self.dirs.logs, f"{config.mode}.log"), self.dist.is_main)
        seed_everything(config.seed, config.deterministic)
        self.num_classes = config.num_classes or DEFAULT_CLASSES.get(config.dataset)
        self.model = self.build_model(converted=config.converted)
        self._loaders = None
        # training position: the next epoch and the next batch within it
        self.epoch, self.batch, self.global_step, self.best_acc1 = 0, 0, 0, -1.0
        self._stop_signal = None

    # ------------------------------------------------------------------ building blocks
    def build_model(self, converted=False):
        kwargs = dict(self.config.model_args)
        if converted and "prune_classifier" in model_arg_names(self.config.model):
            kwargs.setdefault("prune_classifier", self.config.prune_classifier)  # v1's converted classifier
        model = create_model(self.config.model, num_classes=self.num_classes, converted=converted, **kwargs)
        model = model.to(self.device)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @property
    def loaders(self):
        if self._loaders is None:
            self._loaders = build_loaders(self.config, self.model.data_cfg, self.device,
                                          rank=self.dist.rank, world_size=self.dist.world_size)
            n = self._loaders[1].num_classes
            if n != self.num_classes:
                raise ConfigError(f"the data set has {n} classes but the model was built for {self.num_classes}; "
                                  f"set num_classes to {n}")
        return self._loaders

    def _build_optimizer(self):
        cfg = self.config
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if cfg.weight_decay_mode == "ndim2" and p.ndim < 2 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.amp)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _setup_training(self):
        cfg = self.config
        train_loader, _ = self.loaders
        self.iters_per_epoch = len(train_loader)
        if self.dist.enabled and cfg.sync_bn:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.criterion = build_loss(cfg)
        self.optimizer = self._build_optimizer()
        self.schedule = LRSchedule(cfg.lr_schedule, cfg.lr, self.iters_per_epoch, cfg.max_epoch, cfg.warmup_epochs,
                                   cfg.warmup_lr, cfg.lr_milestones, cfg.lr_gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.ema = ModelEma(self.model, cfg.ema_decay) if cfg.ema else None
        if hasattr(self.model, "set_memory_efficient"):
            self.model.set_memory_efficient(cfg.memory_efficient)
        self.train_model = self.model
        if self.dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.writer = None
        if self.dist.is_main:
            for name in os.listdir(self.dirs.checkpoints):  # left by a process killed mid-write
                if ".tmp-" in name:
                    os.remove(os.path.join(self.dirs.checkpoints, name))
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(self.dirs.summaries)
        self._resume()

    # ------------------------------------------------------------------ training
    def train(self):
        self._setup_training()
        cfg = self.config
        if self.epoch >= cfg.max_epoch:
            self.logger.info(f"{self.config.exp_name}: already trained for {cfg.max_epoch} epochs; nothing to do")
            return
        self.logger.info(f"training {cfg.model} on {cfg.dataset} for {cfg.max_epoch} epochs on {self.device} "
                         f"({self.dist.world_size} process(es), malloc: {active_allocator()}); "
                         f"experiment folder {self.dirs.root}")
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.epoch < cfg.max_epoch:
                epoch = self.epoch
                start = time.perf_counter()
                train_stats = self.train_one_epoch(epoch)
                self.epoch, self.batch = epoch + 1, 0
                row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                       **{f"train_{k}": v for k, v in train_stats.items() if k in ("loss", "top1", "top5")},
                       "train_images_per_s": train_stats["images_per_s"]}
                if (epoch + 1) % cfg.validate_every == 0 or epoch + 1 == cfg.max_epoch:
                    val = self.validate()
                    row.update({f"val_{k}": v for k, v in val.items() if k != "count"})
                    if self.ema is not None:
                        ema_val = self.validate(self.ema.module)
                        row.update({f"ema_val_{k}": v for k, v in ema_val.items() if k != "count"})
                    acc = row["ema_val_top1"] if self.ema is not None else row["val_top1"]
                    is_best = acc > self.best_acc1
                    self.best_acc1 = max(acc, self.best_acc1)
                else:
                    is_best = False
                row["epoch_time_s"] = time.perf_counter() - start
                self._log_epoch(row)
                self.save_checkpoint(best=is_best)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        self.logger.info(f"done: best val top-1 {self.best_acc1:.2f}%; checkpoints in {self.dirs.checkpoints}")
        if self.dist.is_main:
            from utils.plots import plot_training_curves
            png = plot_training_curves(self.dirs.metrics, os.path.join(self.dirs.out, "training_curves.png"))
            self.logger.info(f"wrote {png}")

    def _on_signal(self, signum, frame):
        if self._stop_signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        self.logger.warning(f"received {signal.Signals(signum).name}: saving a checkpoint after this iteration")

    def _set_progress(self, progress):
        model = self.model
        if not hasattr(model, "set_progress"):
            return
        events = model.set_progress(progress)
        if events:
            self.dist.broadcast_buffers(model)
            if self.ema is not None:
                self.ema.sync_structure()
            self.logger.info(f"condensation: {events} pruning event(s) at progress {progress:.4f} "
                             f"(epoch {self.epoch + 1})")

    def train_one_epoch(self, epoch):
        cfg = self.config
        loader, _ = self.loaders
        loader.set_epoch(epoch, start_batch=self.batch)
        self.model.train()
        sums = RunningSums(self.device)
        total_steps = cfg.max_epoch * self.iters_per_epoch
        lasso = None
        if cfg.group_lasso_lambda > 0:
            from graphs.losses.group_lasso import group_lasso
            lasso = group_lasso
        bar = tqdm(total=self.iters_per_epoch, initial=self.batch, desc=f"epoch {epoch + 1}/{cfg.max_epoch}",
                   disable=not self.dist.is_main, dynamic_ncols=True, leave=False)
        images, start = 0, time.perf_counter()
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for i, (x, y) in enumerate(loader, start=self.batch):
            step = epoch * self.iters_per_epoch + i
            self._set_progress(step / total_steps)
            lr = self.schedule.lr_at(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self._autocast():
                output = self.train_model(x)
                loss = self.criterion(output, y)
                if lasso is not None:
                    loss = loss + cfg.group_lasso_lambda * lasso(self.model)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update()
            finite &= torch.isfinite(loss.detach())
            sums.update(loss, output, y)
            images += y.size(0)
            self.batch, self.global_step = i + 1, step + 1
            last = i + 1 == self.iters_per_epoch
            if (i + 1) % cfg.log_interval == 0 or last or self.device.type == "cpu":
                self._check_finite(finite, epoch, i)
            if (i + 1) % cfg.log_interval == 0 or last:
                stats = sums.compute()
                bar.set_postfix(loss=f"{stats['loss']:.3f}", top1=f"{stats['top1']:.1f}", lr=f"{lr:.4f}",
                                img_s=f"{images * self.dist.world_size / (time.perf_counter() - start):.0f}")
            bar.update(1)
            if cfg.recovery_every and self.global_step % cfg.recovery_every == 0 and not last:
                self._check_finite(finite, epoch, i)
                self.save_checkpoint(recovery=True)
            if self.dist.any(self._stop_signal is not None, self.device):
                bar.close()
                self.save_checkpoint()
                raise Interrupted(self._stop_signal or signal.SIGTERM)
        bar.close()
        stats = self._reduce(sums)
        stats["images_per_s"] = images * self.dist.world_size / max(time.perf_counter() - start, 1e-9)
        return stats

    def _check_finite(self, finite, epoch, i):
        if not bool(finite):
            raise TrainingError(f"the loss became NaN or infinite at epoch {epoch + 1}, iteration {i + 1}; the "
                                f"last good checkpoint in {self.dirs.checkpoints} is intact — lower lr or enable "
                                f"clip_grad_norm and resume")

    def _reduce(self, sums):
        self.dist.all_reduce_sum(sums.sums)
        return sums.compute()

    @torch.no_grad()
    def validate(self, model=None, confusion=False):
        """Loss, top-1, top-5 (and with ``confusion`` the K x K matrix) over the whole validation split."""
        model = model if model is not None else self.model
        _, loader = self.loaders
        was_training = model.training
        model.eval()
        sums = RunningSums(self.device)
        criterion = nn.CrossEntropyLoss()
        k = self.num_classes
        matrix = torch.zeros(k * k, dtype=torch.int64, device=self.device) if confusion else None
        for x, y in tqdm(loader, desc="validate", disable=not self.dist.is_main, leave=False, dynamic_ncols=True):
            with self._autocast():
                output = model(x)
            sums.update(criterion(output.float(), y), output, y)
            if confusion:
                matrix += torch.bincount(y * k + output.argmax(1), minlength=k * k)
        model.train(was_training)
        stats = self._reduce(sums)
        if confusion:
            stats["confusion"] = self.dist.all_reduce_sum(matrix).view(k, k).cpu()
        return stats

    def _log_epoch(self, row):
        if not self.dist.is_main:
            return
        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and value is not None:
                self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
        self.writer.flush()
        self._write_metrics(row)
        parts = [f"epoch {epoch}/{self.config.max_epoch}", f"lr {row['lr']:.5f}",
                 f"train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.2f}%"]
        if "val_top1" in row:
            parts.append(f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%")
        if "ema_val_top1" in row:
            parts.append(f"EMA top-1 {row['ema_val_top1']:.2f}%")
        parts.append(f"{row['train_images_per_s']:.0f} img/s, {row['epoch_time_s']:.1f}s")
        self.logger.info(" | ".join(parts))
        skipped = sum(loader.skipped_images for loader in self.loaders)
        if skipped:
            self.logger.warning(f"skipped {skipped} unreadable image(s) so far (bad_images is 'skip')")

    def _write_metrics(self, row):
        """Rewrite metrics.csv atomically: rows of earlier epochs (kept on resume) plus this one."""
        rows = []
        if os.path.exists(self.dirs.metrics):
            with open(self.dirs.metrics, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) < row["epoch"]]
        rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.dirs.metrics, lambda f: f.write(buf.getvalue().encode()))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self):
        cfg = self.config
        return {"format": FORMAT, "arch": cfg.model, "model_args": plain(cfg.model_args),
                "num_classes": self.num_classes, "converted": bool(getattr(self.model, "is_converted", False)),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
                "best_acc1": self.best_acc1, "rng": rng_state(), "config": plain(cfg)}

    def save_checkpoint(self, best=False, recovery=False):
        """``last.pth`` (and ``best.pth``), or a ``recovery-<step>.pth`` keeping the newest few."""
        if self.dist.is_main:
            state = self._checkpoint_state()
            folder = self.dirs.checkpoints
            if recovery:
                save_checkpoint(state, os.path.join(folder, f"recovery-{self.global_step}.pth"))
                for old in recovery_checkpoints(folder)[self.config.recovery_keep:]:
                    os.remove(old)
            else:
                save_checkpoint(state, os.path.join(folder, "last.pth"))
                if best:
                    save_checkpoint(state, os.path.join(folder, "best.pth"))
        self.dist.barrier()

    def _resume(self):
        """Resume from ``resume``, or from the newest valid of ``last.pth`` and the recovery checkpoints."""
        cfg = self.config
        if cfg.resume is not None:
            return self.load_checkpoint(cfg.resume)
        if not cfg.auto_resume:
            return
        candidates, broken = [], []
        for path in [os.path.join(self.dirs.checkpoints, "last.pth")] + recovery_checkpoints(self.dirs.checkpoints):
            if os.path.exists(path):
                try:
                    candidates.append((load_checkpoint(path), path))
                except CheckpointError as e:
                    broken.append(path)
                    self.logger.warning(f"skipping {path}: {e}")
        if candidates:
            state, path = max(candidates, key=lambda c: c[0]["global_step"])
            if broken:
                self.logger.warning(f"falling back to {path} because {', '.join(broken)} could not be read")
            self.load_checkpoint(path, state)
        elif broken:
            raise CheckpointError(f"every checkpoint in {self.dirs.checkpoints} is unreadable; delete them to start "
                                  f"over or set resume to a good checkpoint")

    def load_checkpoint(self, path, state=None):
        state = state or load_checkpoint(path)
        self._check_compatible(state, path)
        load_weights(self.model, state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"the optimizer state in {path} does not fit this model ({e}); start a new "
                                  f"experiment or set auto_resume false") from e
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") else state["model"])
        self.epoch, self.batch, self.global_step = state["epoch"], state["batch"], state["global_step"]
        self.best_acc1 = state["best_acc1"]
        set_rng_state(state["rng"])
        self.logger.info(f"resumed from {path} at epoch {self.epoch + 1}, batch {self.batch} "
                         f"(best top-1 so far {self.best_acc1:.2f}%)")

    def _check_compatible(self, state, path):
        cfg, want_conv = self.config, bool(getattr(self.model, "is_converted", False))
        if state["arch"] != cfg.model or dict(state.get("model_args", {})) != dict(cfg.model_args):
            raise CheckpointError(f"{path} holds model {state['arch']!r} with model_args {state.get('model_args')} "
                                  f"but the config builds {cfg.model!r} with {dict(cfg.model_args)}; set model and "
                                  f"model_args to match the checkpoint")
        if bool(state.get("converted")) != want_conv:
            raise CheckpointError(f"{path} holds a {'converted' if state.get('converted') else 'training-time'} "
                                  f"model but the config builds a {'converted' if want_conv else 'training-time'} "
                                  f"one; set converted to {str(bool(state.get('converted'))).lower()}")
        if state.get("num_classes") != self.num_classes:
            raise CheckpointError(f"{path} was trained for {state.get('num_classes')} classes but the model has "
                                  f"{self.num_classes}; to fine-tune on a new class count, start from these "
                                  f"weights with a fresh classifier instead of resuming")

    # ------------------------------------------------------------------ other modes
    def _eval_checkpoint_path(self):
        path = self.config.checkpoint
        if path is None:
            for name in ("best.pth", "last.pth"):
                candidate = os.path.join(self.dirs.checkpoints, name)
                if os.path.exists(candidate):
                    return candidate
            raise CheckpointError(f"no checkpoint given and none found in {self.dirs.checkpoints}; train first or "
                                  f"pass --checkpoint PATH")
        return path

    def load_for_eval(self, path=None):
        """Load a checkpoint (this project's or a plain/official state dict) into a fresh model."""
        path = path or self._eval_checkpoint_path()
        if path.endswith(".pdparams"):
            state = None
        else:
            try:
                state = load_checkpoint(path)
            except CheckpointError:
                state = None
        if state is None:  # plain or foreign weights
            load_weights(self.model, path, prefer_ema=self.config.use_ema_weights)
            return path
        if bool(state.get("converted")) != bool(getattr(self.model, "is_converted", False)):
            self.model = self.build_model(converted=bool(state.get("converted")))
        self._check_compatible(state, path)
        weights = state["ema"] if self.config.use_ema_weights and state.get("ema") else state["model"]
        load_weights(self.model, weights)
        return path

    def run_validate(self):
        path = self.load_for_eval()
        stats = self.validate(confusion=True)
        self.logger.info(f"{path}: top-1 {stats['top1']:.2f}%  top-5 {stats['top5']:.2f}%  "
                         f"loss {stats['loss']:.4f}  ({stats['count']} images)")
        if self.dist.is_main:
            self._write_per_class(stats["confusion"])
        return stats

    def _class_names(self):
        loader = self.loaders[1]
        return getattr(loader, "readable_class_names", None) or loader.class_names

    def _write_per_class(self, confusion):
        """Per-class accuracy as CSV, and the confusion matrix as PNG for at most 100 classes."""
        names = self._class_names()
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["class_index", "class_name", "correct", "total", "accuracy"])
        for i, name in enumerate(names):
            total = int(confusion[i].sum())
            correct = int(confusion[i, i])
            writer.writerow([i, name, correct, total, f"{100.0 * correct / total:.2f}" if total else ""])
        out = os.path.join(self.dirs.out, "per_class_accuracy.csv")
        atomic_write(out, lambda f: f.write(buf.getvalue().encode()))
        self.logger.info(f"wrote {out}")
        if len(names) <= 100:
            from utils.plots import plot_confusion_matrix
            png = plot_confusion_matrix(confusion.numpy(), names, os.path.join(self.dirs.out, "confusion_matrix.png"))
            self.logger.info(f"wrote {png}")

    def run_convert(self):
        if not hasattr(self.model, "convert"):
            raise ConfigError(f"model {self.config.model!r} has no converted form; convert applies to CondenseNets")
        path = self.load_for_eval()
        converted = self._convert(self.model)
        out = os.path.join(self.dirs.checkpoints, "converted.pth")
        state = {"format": FORMAT, "arch": self.config.model, "model_args": plain(self.config.model_args),
                 "num_classes": self.num_classes, "converted": True, "model": converted.state_dict(),
                 "epoch": 0, "batch": 0, "global_step": 0, "config": plain(self.config), "source": path}
        if self.dist.is_main:
            save_checkpoint(state, out)
        self.logger.info(f"converted {path} -> {out}")
        self._print_flops([("training-time", self.model), ("converted", converted)])
        return converted

    def _convert(self, model):
        return model.convert(prune_classifier=self.config.prune_classifier).eval()

    def run_flops(self):
        rows = [("training-time" if hasattr(self.model, "convert") else "model", self.model)]
        if hasattr(self.model, "convert") and not getattr(self.model, "is_converted", False):
            rows.append(("converted", self.build_model(converted=True)))
        return self._print_flops(rows)

    def _print_flops(self, rows):
        from utils.flops import profile
        size = tuple(self.model.data_cfg["input_size"])
        if self.config.input_size:
            size = (size[0], self.config.input_size, self.config.input_size)
        results = []
        for label, model in rows:
            flops, params = profile(model, size)
            results.append((label, flops, params))
            self.logger.info(f"{self.config.model} ({label}) at {size[1]}x{size[2]}: "
                             f"{flops / 1e6:.2f}M FLOPs, {params / 1e6:.4f}M params")
        return results

    def run_visualize(self):
        """Training curves from metrics.csv and, for CondenseNets, the feature-reuse heatmaps."""
        from utils.plots import plot_reuse_heatmaps, plot_training_curves
        paths = []
        if os.path.exists(self.dirs.metrics):
            paths.append(plot_training_curves(self.dirs.metrics, os.path.join(self.dirs.out, "training_curves.png")))
        if hasattr(self.model, "reuse_matrices"):
            path = self.load_for_eval()
            paths += plot_reuse_heatmaps(self.model.reuse_matrices(), self.dirs.out,
                                         title_prefix=f"{self.config.model} ({os.path.basename(path)})")
        if not paths:
            raise ConfigError(f"nothing to draw for {self.config.exp_name}: no metrics.csv yet (train first) and "
                              f"model {self.config.model!r} has no feature-reuse heatmap")
        for p in paths:
            self.logger.info(f"wrote {p}")
        return paths

    def _load_if_available(self):
        """Load the given or the experiment's checkpoint; without one, say that the weights are random."""
        try:
            return self.load_for_eval()
        except CheckpointError:
            if self.config.checkpoint:
                raise
            self.logger.warning(f"no checkpoint in {self.dirs.checkpoints} and none given: the weights are RANDOM "
                                f"(untrained); pass --checkpoint PATH for real predictions")
            return None

    def _deployable(self):
        """The converted model for CondenseNets (condensed first if needed), otherwise the model itself."""
        model = self.model.eval()
        if hasattr(model, "convert") and not getattr(model, "is_converted", False):
            if hasattr(model, "set_progress"):
                model.set_progress(1.0)  # no-op for a trained model; finishes pruning for a random one
            model = self._convert(model)
        return model

    def _dataset_mean_std(self):
        from datasets.cifar import MEAN, STD
        return MEAN.get(self.config.dataset), STD.get(self.config.dataset)

    def run_predict(self):
        from utils.predict import class_names_for, eval_transform, expand_image_paths, format_predictions, predict
        cfg = self.config
        if not cfg.images:
            raise ConfigError("predict needs images: add --images a.jpg b.png (files or folders)")
        self._load_if_available()
        mean, std = self._dataset_mean_std()
        transform = eval_transform(self.model.data_cfg, input_size=cfg.input_size, crop_pct=cfg.crop_pct,
                                   interpolation=cfg.eval_interpolation, mean=mean, std=std)
        names = class_names_for(cfg.dataset, self.num_classes, cfg.data_root)
        results = predict(self.model, expand_image_paths(cfg.images), transform, names, topk=5, device=self.device)
        print(format_predictions(results))
        return results

    def _input_size(self):
        size = tuple(self.model.data_cfg["input_size"])
        return (size[0], self.config.input_size, self.config.input_size) if self.config.input_size else size

    def run_export(self):
        from utils.export import export_onnx, export_torchscript
        self._load_if_available()
        model = self._deployable().cpu()
        results = {}
        for fmt in self.config.export_formats:
            suffix = {"onnx": "onnx", "torchscript": "torchscript.pt"}[fmt]
            path = os.path.join(self.dirs.out, f"{self.config.exp_name}.{suffix}")
            fn = export_onnx if fmt == "onnx" else export_torchscript
            results[fmt] = fn(model, path, self._input_size())
            self.logger.info(f"wrote {path} ({fmt}); max |difference| to PyTorch {results[fmt]['max_abs_diff']:.2e}")
        return results

    def run_benchmark(self):
        from utils.benchmark import benchmark, format_table, write_json
        cfg = self.config
        self._load_if_available()
        n = cfg.benchmark_batch_size or cfg.batch_size
        amp = None if cfg.amp == "none" else cfg.amp
        candidates = [("training-time", self.model)]
        if hasattr(self.model, "convert") and not getattr(self.model, "is_converted", False):
            candidates.append(("converted", self._deployable()))
        if hasattr(candidates[-1][1], "fuse"):    # inference-only form: BN folded, dense blocks in one buffer
            candidates.append(("fused", copy.deepcopy(candidates[-1][1]).fuse()))
        rows = []
        for label, model in candidates:
            rows.append(benchmark(model, self._input_size(), device=self.device, batch_sizes=(1, n),
                                  train_batch=n if label == "training-time" else None, channels_last=cfg.channels_last,
                                  amp=amp, name=f"{cfg.model} ({label})"))
        print(format_table(rows))
        out = os.path.join(self.dirs.out, "benchmark.json")
        write_json({"config": cfg.exp_name, "rows": rows}, out)
        self.logger.info(f"wrote {out}")
        return rows

    def finalize(self):
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
        self.dist.destroy()
