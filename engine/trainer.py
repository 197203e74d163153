"""The Trainer: one explicit TrainState, advanced by ``fit()`` epoch by epoch and step by step.

A step (``train_one_epoch``): training progress to the model (condensation), the per-iteration learning
rate, forward under autocast, loss (+ an optional regulariser such as the group lasso), backward through
the gradient scaler, optional clipping, optimizer step, EMA update. Nothing in a step waits for the host:
the loss/accuracy sums stay on the device and the NaN check, the progress bar and the TensorBoard
scalars read them every ``log_interval`` steps (every step on the CPU, where reading is free).

A stop request (SIGINT/SIGTERM, utils.shutdown) is a host flag from the first step on; under DDP the
ranks agree on it every ``log_interval`` steps (one all-reduce per interval, not per step), and every
batch of a validation. Stopped in training, the trainer saves the position; stopped in a validation, it
abandons it and saves the epoch's trained position (epoch e, batch = its last), so that a resume
validates epoch e (its metrics row and the best.pth ranking) before it trains e + 1.

Everything a resumed run needs is in the checkpoint payload: the model, optimizer, scaler and EMA
states and the TrainState; data order, augmentation and the dropout draws are functions of (seed,
epoch, batch, rank), so an interrupted run continues bit for bit.
"""
import logging
import os
import signal
import time
from dataclasses import dataclass, fields
from typing import Callable, Hashable, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

from utils import shutdown
from utils.distributed import DistContext
from utils.errors import CheckpointError, Interrupted, TrainingError

from .accumulate import group_size, is_step_end, optimizer_steps, sync_context
from .checkpoint import CheckpointManager, load_checkpoint
from .evaluator import autocast, evaluate
from .loggers import METRIC_FIELDS, RunLogger, format_rate
from .metrics import RunningSums
from .state import TrainState

__all__ = ["Trainer", "TrainerSettings", "TrainerContext", "Task", "ClassificationTask"]


@dataclass(frozen=True)
class TrainerSettings:
    """The config values the loop reads. ``batch_size`` x ``grad_accum_steps`` images make one optimizer
    step; ``seed`` seeds the per-batch dropout draws; ``compile`` runs the step's module through
    ``torch.compile``; ``resume`` / ``auto_resume`` pick the checkpoint ``Trainer.resume`` continues from."""
    max_epoch: int
    batch_size: int
    grad_accum_steps: int
    clip_grad_norm: Optional[float]
    amp: str
    validate_every: int
    log_interval: int
    recovery_every: int
    seed: int
    compile: bool
    resume: Optional[str]
    auto_resume: bool

    @classmethod
    def from_config(cls, config) -> "TrainerSettings":
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class TrainerContext:
    """Where the run happens and what it writes: the processes, the device, checkpoints and logs."""
    dist: DistContext
    device: torch.device
    checkpoints: CheckpointManager
    run_logger: RunLogger
    logger: logging.Logger


class Task:
    """What a task adds to the loop: the loss of a batch, the metrics it reports, its validation and the
    identity of its checkpoints. The agent builds one (graph and data code reach it as callables)."""
    #: the validation metric that ranks ``best.pth``
    metric_key: str
    #: the columns of metrics.csv
    fields: Sequence[str]

    def __init__(self, meta: Callable[[], dict]):
        self._meta = meta

    def meta(self) -> dict:
        """The checkpoint's identity fields: arch, model_args, num_classes, converted, config, class names, ..."""
        return self._meta()

    def start_epoch(self, model: nn.Module, epoch: int) -> Hashable:
        """Set ``model`` up for training epoch ``epoch`` (after ``model.train()``); returns a key of the
        parameters that train: the step's wrapper is rebuilt when it changes (DDP only reduces the
        parameters that required grad when it was built)."""
        return None

    def prepare(self, x: torch.Tensor, y, epoch: int, batch: int):
        """The step's inputs and targets of batch ``batch`` (e.g. mixed); default: unchanged."""
        return x, y

    def forward_loss(self, model: nn.Module, x: torch.Tensor, target):
        """(loss, output) of one batch through ``model`` (the step's module), under autocast."""
        raise NotImplementedError

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        """A term added to every batch's loss, of the trained ``model`` (not its wrapper); default none."""
        return None

    def new_sums(self, device: torch.device):
        """Device-side running sums of the training metrics: ``update(loss, output, target)``, ``compute()``."""
        raise NotImplementedError

    def validate(self, model: nn.Module, loader, ctx: TrainerContext, amp: str, *, epoch: int, ema: bool) -> dict:
        """The validation metrics of ``model`` (the EMA's when ``ema``) after ``epoch`` epochs."""
        raise NotImplementedError


class ClassificationTask(Task):
    """``criterion(output, target, inputs)`` is the loss; ``regulariser(model)`` (e.g. the group lasso), if
    given, is added to it; ``mix(x, y, epoch, batch)`` (mixup/cutmix) gives the inputs and soft targets of a
    batch; ``freeze(model, frozen)`` freezes the backbone for the first ``freeze_epochs`` epochs."""
    metric_key = "top1"
    fields = METRIC_FIELDS

    def __init__(self, meta: Callable[[], dict], num_classes: int, criterion: Callable, *,
                 regulariser: Optional[Callable[[nn.Module], torch.Tensor]] = None, mix: Optional[Callable] = None,
                 freeze: Optional[Callable[[nn.Module, bool], object]] = None, freeze_epochs: int = 0):
        super().__init__(meta)
        self.num_classes, self.criterion, self.regulariser, self.mix = num_classes, criterion, regulariser, mix
        self.freeze, self.freeze_epochs = freeze, freeze_epochs

    def start_epoch(self, model: nn.Module, epoch: int) -> bool:
        frozen = epoch < self.freeze_epochs
        if self.freeze is not None:
            self.freeze(model, frozen)      # after train(): it also holds the backbone's BN in eval mode
        return frozen

    def prepare(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int):
        return (x, y) if self.mix is None else self.mix(x, y, epoch, batch)

    def forward_loss(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor):
        output = model(x)
        return self.criterion(output, target, x), output

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        return None if self.regulariser is None else self.regulariser(model)

    def new_sums(self, device: torch.device) -> RunningSums:
        return RunningSums(device)

    def validate(self, model: nn.Module, loader, ctx: TrainerContext, amp: str, *, epoch: int, ema: bool) -> dict:
        return evaluate(model, loader, ctx.device, ctx.dist, self.num_classes, amp=amp)


class Trainer:
    """Trains ``model`` on the first of ``loaders`` and validates on the second.

    ``model`` is the module whose weights are saved; the step calls its DDP / compiled wrapper (``wrap``).
    ``task`` supplies what differs between tasks: the loss of a batch, the training metrics, the validation
    (and the metric ranking ``best.pth``) and the checkpoint's identity fields. ``settings.grad_accum_steps``
    batches make one optimizer step (``engine.accumulate``: the schedule, the condensation progress, the
    EMA, recovery files and ``state.step`` count optimizer steps; checkpoints are taken only between steps,
    so a resume never holds half-accumulated gradients).
    """

    def __init__(self, model: nn.Module, loaders: Tuple, optimizer: torch.optim.Optimizer, schedule, task: Task,
                 settings: TrainerSettings, context: TrainerContext, ema=None):
        self.model, self.train_model, self._trains = model, None, None
        self.train_loader, self.val_loader = loaders
        self.optimizer, self.schedule, self.task, self.ema = optimizer, schedule, task, ema
        self.settings, self.ctx = settings, context
        self.dist, self.device, self.logger = context.dist, context.device, context.logger
        self.checkpoints, self.run_logger = context.checkpoints, context.run_logger
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.amp == "fp16")
        self.state = TrainState()
        self.iters_per_epoch = len(self.train_loader)
        self.accum = settings.grad_accum_steps
        self.steps_per_epoch = optimizer_steps(self.iters_per_epoch, self.accum)
        self._condenses = model.supports("condense")
        self.epoch_train = None     # the training stats of an epoch whose validation a resume still owes

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: DDP over the processes, then torch.compile."""
        if self.dist.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return torch.compile(model) if self.settings.compile else model

    # ------------------------------------------------------------------ checkpoints
    def payload(self) -> dict:
        """The checkpoint of the current position (main process)."""
        return {**self.task.meta(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                **self.state.state_dict()}

    def resume(self) -> None:
        """Continue from ``resume``, or from the experiment's newest readable checkpoint."""
        if self.settings.resume is not None:
            self.load(load_checkpoint(self.settings.resume), self.settings.resume)
        elif self.settings.auto_resume:
            found = self.checkpoints.find_resume()
            if found is not None:
                self.load(*found)

    def load(self, state: dict, path: str) -> None:
        """Restore model, optimizer, scaler, EMA, TrainState and RNG states from a checkpoint dict."""
        meta = self.task.meta()
        self.checkpoints.check_compatible(state, path, meta["arch"], meta["model_args"], meta["converted"],
                                          meta["num_classes"])
        try:
            self.model.load_state_dict(state["model"])
            fused = [g.get("fused") for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            for group, flag in zip(self.optimizer.param_groups, fused):    # this device's kernels, not the saver's
                if "fused" in group:
                    group["fused"] = flag
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the model or optimizer state in {path} does not fit this model "
                                  f"({str(e).splitlines()[0]}); start a new experiment or set auto_resume "
                                  f"false") from e
        if self.scaler.is_enabled() and not state.get("scaler"):
            self.logger.info(f"{path} holds no fp16 loss scale (it was trained without amp fp16): starting a fresh one")
        else:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") else state["model"])
        self.state.load_state_dict(state)
        self._check_same_batch(state.get("config") or {}, path)
        self.epoch_train = state.get("epoch_train")
        self.logger.info(f"resumed from {path} at epoch {self.state.epoch + 1}, batch {self.state.batch} "
                         f"(best {self.task.metric_key} so far {self.state.best_metric:.2f})")

    def _check_same_batch(self, trained: dict, path: str) -> None:
        """Refuse to resume with another batch per optimizer step: the schedule, the condensation progress and
        the data order are counted in steps of it. Another split into processes and accumulation steps (e.g.
        ``global_batch_size`` on another GPU count) is fine: every step still sees the same samples."""
        size, accum = trained.get("batch_size"), trained.get("grad_accum_steps", 1)
        if size is None:
            return
        now = self.settings.batch_size * self.settings.grad_accum_steps
        if size * accum != now:
            raise CheckpointError(f"{path} was trained with {size * accum} images per optimizer step (batch_size "
                                  f"{size} x grad_accum_steps {accum}) but this run uses {now}; the schedule and data "
                                  f"order depend on it — set them back, or start a new experiment (another exp_name)")
        if accum != self.accum and self.state.batch:     # a checkpoint is taken between optimizer steps
            self.state.batch = self.state.batch // accum * self.accum

    # ------------------------------------------------------------------ the run
    def fit(self) -> float:
        """Train from the current (possibly resumed) position to ``max_epoch``; returns the best metric."""
        cfg, st, n = self.settings, self.state, self.iters_per_epoch
        config = self.task.meta()["config"]
        self.run_logger.text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(config.items())))
        try:
            while st.epoch < cfg.max_epoch:
                epoch, start = st.epoch, time.perf_counter()
                if st.batch < n or self.epoch_train is None:
                    self.epoch_train = self.train_one_epoch(epoch)
                # else resumed after this epoch's training, with its validation outstanding
                train = self.epoch_train
                st.epoch, st.batch = epoch + 1, 0
                row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                       **{f"train_{k}": v for k, v in train.items() if k not in ("count", "images_per_s")},
                       "train_images_per_s": train["images_per_s"]}
                is_best = False
                if (epoch + 1) % cfg.validate_every == 0 or epoch + 1 == cfg.max_epoch:
                    try:
                        row.update({f"val_{k}": v for k, v in self.validate().items() if k != "count"})
                        if self.ema is not None:
                            row.update({f"ema_val_{k}": v for k, v in self.validate(self.ema.module).items()
                                        if k != "count"})
                    except shutdown.StopRequested:
                        st.epoch, st.batch = epoch, n       # trained, not validated
                        self._stop(lambda: {**self.payload(), "epoch_train": train})
                    metric = row[f"{'ema_' if self.ema is not None else ''}val_{self.task.metric_key}"]
                    is_best = metric > st.best_metric
                    st.best_metric = max(metric, st.best_metric)
                row["epoch_time_s"] = time.perf_counter() - start
                self.run_logger.epoch(row)
                skipped = self.train_loader.skipped_images + self.val_loader.skipped_images
                if skipped:
                    self.logger.warning(f"skipped {skipped} unreadable image(s) so far (bad_images is 'skip')")
                self.checkpoints.save(self.payload, best=is_best)
                if st.epoch < cfg.max_epoch and shutdown.should_stop(self.dist, self.device):
                    self._stop()    # asked during the save, which finished
        finally:
            shutdown.stop_deferring()
        return st.best_metric

    def _stop(self, payload: Optional[Callable[[], dict]] = None) -> None:
        """Stop, as the ranks agreed (utils.shutdown), after saving ``payload``: the position to resume
        from (None: just saved)."""
        if payload is not None:
            self.checkpoints.save(payload)
        raise Interrupted(shutdown.requested() or signal.SIGTERM, saved=True)

    # ------------------------------------------------------------------ the epoch
    def validate(self, model: Optional[nn.Module] = None) -> dict:
        """The task's validation of the model (``model``: the EMA's)."""
        ema = model is not None
        return self.task.validate(model if ema else self.model, self.val_loader, self.ctx, self.settings.amp,
                                  epoch=self.state.epoch, ema=ema)

    def _set_progress(self, progress: float) -> None:
        events = self.model.set_progress(progress)
        if events:
            if self.dist.enabled:   # every rank holds rank 0's masks, and the caches built from them
                self.dist.broadcast_buffers(self.model)
                self.model.sync_condensation_state()
            if self.ema is not None:
                self.ema.sync_structure()
            self.logger.info(f"condensation: {events} pruning event(s) at progress {progress:.4f} "
                             f"(epoch {self.state.epoch + 1})")

    def train_one_epoch(self, epoch: int) -> dict:
        """One pass over the training data from ``state.batch``; returns loss, top-1, top-5, images/s."""
        cfg, st, n, k = self.settings, self.state, self.iters_per_epoch, self.accum
        self.train_loader.set_epoch(epoch, start_batch=st.batch)
        self.model.train()
        trains = self.task.start_epoch(self.model, epoch)
        if self.train_model is None or trains != self._trains:
            self.train_model, self._trains = self.wrap(self.model), trains
        sums = self.task.new_sums(self.device)
        total_steps = cfg.max_epoch * self.steps_per_epoch
        bar = tqdm(total=n, initial=st.batch, desc=f"epoch {epoch + 1}/{cfg.max_epoch}",
                   disable=not self.dist.is_main, dynamic_ncols=True, leave=False)
        images, start = 0, time.perf_counter()
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        on_cpu = self.device.type == "cpu"
        for i, (x, y) in enumerate(self.train_loader, start=st.batch):
            shutdown.defer()    # unsaved progress from here on: a signal asks to stop after this batch
            step = epoch * self.steps_per_epoch + i // k        # the optimizer step this batch is part of
            if i % k == 0:
                if self._condenses:
                    self._set_progress(step / total_steps)
                lr = self.schedule.lr_at(step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
            # dropout and drop-path draw from the global RNG: seeded per batch and rank, so the ranks draw
            # different masks and a resumed run draws the same ones (no RNG state to save)
            torch.manual_seed(hash((cfg.seed, self.dist.rank, epoch, i)) & 0x7FFF_FFFF_FFFF_FFFF)
            x, target = self.task.prepare(x, y, epoch, i)
            loss, output = self._step(x, target, i)
            finite &= torch.isfinite(loss.detach())
            sums.update(loss, output, y)
            images += len(y)
            st.batch, last = i + 1, i + 1 == n
            bar.update(1)
            if not is_step_end(i, n, k):
                continue
            st.step = step + 1
            at_interval = st.step % cfg.log_interval == 0 or last
            if at_interval or (on_cpu and not self.dist.enabled):
                self._check_finite(finite, epoch, i)
            if at_interval:
                self._report(bar, sums, lr, images, start)
            if cfg.recovery_every and st.step % cfg.recovery_every == 0 and not last:
                self._check_finite(finite, epoch, i)
                self.checkpoints.save_recovery(self.payload, st.step)
            # single process: the flag is read every step; DDP: the ranks vote at the log interval. After
            # the last batch, fit stops instead (in the validation, or after the epoch's checkpoint).
            if not last and (at_interval or not self.dist.enabled) and shutdown.should_stop(self.dist, self.device):
                bar.close()
                self._stop(self.payload)
        bar.close()
        self.dist.all_reduce_sum(sums.sums)
        stats = sums.compute()
        stats["images_per_s"] = images * self.dist.world_size / max(time.perf_counter() - start, 1e-9)
        return stats

    def _step(self, x: torch.Tensor, target: torch.Tensor, i: int):
        """Forward and backward of batch ``i``; the optimizer steps after the last batch of its group."""
        n, k = self.iters_per_epoch, self.accum
        with sync_context(self.train_model, i, n, k):     # DDP reduces once per optimizer step
            with autocast(self.device, self.settings.amp):
                loss, output = self.task.forward_loss(self.train_model, x, target)
                penalty = self.task.penalty(self.model)
                if penalty is not None:
                    loss = loss + penalty
            self.scaler.scale(loss / group_size(i, n, k) if k > 1 else loss).backward()
        if is_step_end(i, n, k):
            if self.settings.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(step=self.state.step + 1)
        return loss, output

    def _report(self, bar, sums: RunningSums, lr: float, images: int, start: float) -> None:
        stats = sums.compute()
        img_s = images * self.dist.world_size / (time.perf_counter() - start)
        shown = {k: f"{v:.3g}" for k, v in stats.items() if k != "count"}
        bar.set_postfix(**shown, lr=f"{lr:.4f}", img_s=format_rate(img_s))
        self.run_logger.step(self.state.step, {"iter/running_loss": stats["loss"], "iter/lr": lr,
                                               "iter/images_per_s": img_s})

    def _check_finite(self, finite: torch.Tensor, epoch: int, i: int) -> None:
        """Stop on a NaN/inf loss; under DDP every rank stops when any rank saw one (a collective: all
        ranks call this at the same steps)."""
        if not self.dist.all_true(finite):
            last = self.checkpoints.path("last.pth")
            saved = (f"the last checkpoint, {last}, is intact and the same command resumes from it" if os.path.exists(last)
                     else f"no checkpoint has been written yet, so the same command starts over")
            raise TrainingError(f"the loss became NaN or infinite at epoch {epoch + 1}, iteration {i + 1}; {saved} "
                                f"— lower lr or enable clip_grad_norm first")
