"""The training loop (paper Sec. 4.6, Appendix C Table 8, Appendix D).

One optimiser step is four phases, each handing a small record (``hpdm.trainers.stats``) to the
next: ``draw`` the per-sample randomness of each micro-batch, ``accumulate`` the joint hierarchical
loss (Eq. 4) and its gradients over ``grad_accum`` micro-batches per rank, ``apply_update`` (gradient
clipping, LAMB, the warm-up + cosine LR schedule, the EMA), and every ``log_every`` steps ``log``
(TensorBoard and the console progress line). Around the steps: exact resume, checkpoints, and
preview samples every ``sample_every`` steps.

What clusters do to a run is survived: SIGTERM / SIGINT stop it after the current step with a
checkpoint (``hpdm.trainers.stop``); one run at a time holds the workdir (``hpdm.trainers.lock``);
checkpoints are checksummed, and a workdir whose checkpoints are all unreadable is refused rather
than silently restarted; a resume on another number of ranks continues the global sample order; an
allowed config override takes effect from the resumed step (optimiser settings, LR schedule).

Randomness that shapes a step is drawn *per sample* from a generator keyed by ``(seed, step,
position of the sample in the global batch)`` (``hpdm.trainers.rng``): the noise levels, the noise,
and the conditioning dropout. The data loader shards strided by rank, so sample ``j`` of rank ``r``
in micro-batch ``m`` sits at ``world * (m * micro_batch + j) + r`` of the global batch. With the loss
normalised by the global number of loss terms, a run on W ranks with A accumulation steps computes
the same update as one process with the whole global batch (up to float summation order), and a
resumed run redraws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from typing import Callable, Optional, Sequence

import gin
import numpy as np
import torch
from absl import logging
from torch import nn

from hpdm import gin_utils
from hpdm.core import checkpoints as layout
from hpdm.core.loss import level_term_weights
from hpdm.progress import format_duration
from hpdm.trainers import checkpoint as ckpt
from hpdm.trainers import config_diff
from hpdm.trainers import distributed as hdist
from hpdm.trainers import rng, run_record
from hpdm.trainers.classes import bind_num_classes_from_data, check_num_classes
from hpdm.trainers.ema import EMA
from hpdm.trainers.lamb import build_optimizer
from hpdm.trainers.lock import WorkdirLock, WorkdirLockedError
from hpdm.trainers.lr_schedule import warmup_cosine
from hpdm.trainers.preview import preview_share, sample_previews
from hpdm.trainers.stats import Draws, LogWindow, LossSums, StepStats, Update
from hpdm.trainers.stop import StopRequests, TrainingStopped, exit_status, signal_name


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


# ---------------------------------------------------------------------------- helpers


def _call_with_supported(fn: Callable, **kwargs):
    """Call ``fn`` with the keyword arguments its signature accepts (loader builders differ)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def _default_model_fn():
    from hpdm.core import HPDM

    return HPDM()


def _default_loader_fn(**kwargs):
    from hpdm.data import build_train_loader

    return _call_with_supported(build_train_loader, **kwargs)


def _default_loss_fn(*args, **kwargs):
    from hpdm.core import diffusion_loss

    return diffusion_loss(*args, **kwargs)


def _default_sample_fn():
    try:
        from hpdm.samplers import sample_videos
    except ImportError:  # the sampler is optional for training
        return None
    return sample_videos


def _atomic_write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    ckpt.fsync_dir(os.path.dirname(path) or ".")  # the rename itself must reach the disk


def _hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Each parameter group's settings (LR, weight decay, betas, ...) without its parameters."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def _fast_forward(scheduler, steps: int) -> None:
    """Step a freshly built LR schedule ``steps`` times: the state an uninterrupted run has there
    (torch's schedules are recursive, so this is exact where a closed form would round differently)."""
    with warnings.catch_warnings():
        # "scheduler.step() before optimizer.step()", and SequentialLR's internal epoch argument.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            scheduler.step()


# ---------------------------------------------------------------------------- trainer


@gin.configurable(denylist=["workdir", "seed", "allow_config_override", "restart_from_scratch"])
class Trainer:
    """HPDM training (paper Sec. 4.6, Table 8).

    Args:
        workdir: run directory (checkpoints, TensorBoard events, ``config.gin``).
        seed: seeds model initialisation and every per-step draw (``--seed``).
        allow_config_override: let a resumed run use a config that differs from the saved one.
            The new config rules from the resumed step on, also for what the checkpoint carries:
            the optimiser's settings (LR, weight decay, ...) are the config's, and the LR schedule
            is rebuilt for the new ``train_steps`` / warm-up and set to the step a run started with
            the new config would be at (so the LR may jump there, to the value ``config.gin``
            implies). The architecture and the data cannot change (the run stops naming them).
        restart_from_scratch: start again from step 0 when the workdir has checkpoints but none is
            readable (they are renamed ``*.unreadable``); without it such a workdir is refused.
        train_steps: optimiser steps (``TRAIN_STEPS``).
        batch_size: *global* batch per optimiser step (``BATCH_SIZE``); split over ranks and
            accumulation steps (must divide evenly).
        model_fn / loader_fn / loss_fn / sample_fn: factories; defaults ``hpdm.core.HPDM``,
            ``hpdm.data.build_train_loader`` (called with batch_size, seed, rank, world_size),
            ``hpdm.core.diffusion_loss``, ``hpdm.samplers.sample_videos`` (if importable).
        optimizer_fn / schedule_fn: ``build_optimizer(model)`` (LAMB) and
            ``warmup_cosine(optimizer, total_steps=train_steps)``.
        grad_accum: micro-batches per optimiser step.
        clip_grad_norm: global gradient-norm clip (None: no clipping, norm still logged).
        label_dropout: probability of replacing the class label / caption by the null condition
            (Table 8: 0.1), for classifier-free guidance.
        level_loss_weights: one weight per pyramid level for its loss terms (None: all 1, Eq. 4's
            plain sum); passed to ``loss_fn`` as ``level_weights``.
        ema_decay: EMA decay (see ``EMA``).
        checkpoint_every / keep_checkpoints: cadence and retention (the final step is always saved).
        log_every: steps between TensorBoard scalars and the console progress line.
        sample_every / num_samples / sample_fps: GIF previews of the EMA model (0: never). Every rank
            samples its share of the ``num_samples`` videos and rank 0 logs them (see ``sample``).
        preview_steps: per-level sampler steps of the previews (a shorter list repeats its last
            entry; None: the run's ``SamplingSteps``, what ``hpdm-sample`` uses).
        preview_overlap: tile overlap axes of the previews, e.g. ``''`` for none (None: the run's
            ``OverlapSampler.overlap``). gin/samplers/preview.gin binds both to cheap settings.
        max_consecutive_skips: stop after this many consecutive non-finite steps.
        bf16: bfloat16 autocast (off: Appendix D, item 7, mixed precision converged worse).
        compile: ``torch.compile`` the model's forward.
        activation_checkpointing: recompute each RIN block in the backward pass.
        init_from: fine-tuning source (Sec. 5.2): a workdir, checkpoint directory or safetensors
            file; used only when the workdir has no checkpoint yet.
        init_from_ema: take the EMA weights of ``init_from``.
        text_encoder_fn: builds a ``TextEncoder`` when batches carry captions.
    """

    def __init__(
        self,
        workdir: str,
        seed: int = 0,
        allow_config_override: bool = False,
        restart_from_scratch: bool = False,
        train_steps: int = gin.REQUIRED,
        batch_size: int = gin.REQUIRED,
        model_fn: Callable[[], nn.Module] = _default_model_fn,
        loader_fn: Callable = _default_loader_fn,
        loss_fn: Callable = _default_loss_fn,
        sample_fn: Optional[Callable] = None,
        optimizer_fn: Callable = build_optimizer,
        schedule_fn: Callable = warmup_cosine,
        grad_accum: int = 1,
        clip_grad_norm: Optional[float] = 1.0,
        label_dropout: float = 0.1,
        level_loss_weights: Optional[Sequence[float]] = None,
        ema_decay: float = 0.9999,
        checkpoint_every: int = 1000,
        keep_checkpoints: int = 3,
        log_every: int = 10,
        sample_every: int = 0,
        num_samples: int = 2,
        sample_fps: float = 8.0,
        preview_steps: Optional[Sequence[int]] = None,
        preview_overlap: Optional[str] = None,
        max_consecutive_skips: int = 10,
        bf16: bool = False,
        compile: bool = False,
        activation_checkpointing: bool = False,
        init_from: Optional[str] = None,
        init_from_ema: bool = True,
        text_encoder_fn: Optional[Callable] = None,
    ):
        self.workdir = workdir
        self.seed = int(seed)
        self.allow_config_override = allow_config_override
        self.restart_from_scratch = restart_from_scratch
        self.train_steps = int(train_steps)
        self.global_batch = int(batch_size)
        self.model_fn, self.loader_fn, self.loss_fn = model_fn, loader_fn, loss_fn
        self.sample_fn = sample_fn
        self.optimizer_fn, self.schedule_fn = optimizer_fn, schedule_fn
        self.grad_accum = int(grad_accum)
        self.clip_grad_norm = clip_grad_norm
        self.label_dropout = float(label_dropout)
        self.level_loss_weights = None if level_loss_weights is None else tuple(float(w) for w in level_loss_weights)
        self.ema_decay = ema_decay
        self.checkpoint_every = int(checkpoint_every)
        self.keep_checkpoints = int(keep_checkpoints)
        self.log_every = max(1, int(log_every))
        self.sample_every = int(sample_every)
        self.num_samples = int(num_samples)
        self.sample_fps = sample_fps
        self.preview_steps = None if preview_steps is None else [int(n) for n in preview_steps]
        self.preview_overlap = preview_overlap
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.bf16 = bf16
        self.compile = compile
        self.activation_checkpointing = activation_checkpointing
        self.init_from, self.init_from_ema = init_from, init_from_ema
        self.text_encoder_fn = text_encoder_fn
        self.tb, self.loader, self.lock = None, None, None  # what run() closes, however far setup got
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        if self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {train_steps}")

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Everything a step needs, in order: ranks, the workdir's lock, data, model (restored or
        fine-tuned), optimisation, and the run's config checked against the saved one."""
        self.info = hdist.init_distributed()
        per_step = self.info.world_size * self.grad_accum
        if self.global_batch % per_step:
            raise ValueError(
                f"batch_size={self.global_batch} must be divisible by world_size*grad_accum={per_step}"
            )
        self.micro_batch = self.global_batch // per_step
        os.makedirs(self.workdir, exist_ok=True)
        self._lock_workdir()
        self.matmul_precision = hdist.set_matmul_precision(self.info.device)
        if self.bf16:
            logging.info("Trainer.bf16: the forward and backward run under bfloat16 autocast")
        plain = self._build_data_and_model()
        found = self._load_latest()
        if found is None and self.init_from:
            self._init_from(plain)
        self._build_optimisation(plain)
        self._start(found)

    def _build_data_and_model(self) -> nn.Module:
        """The loader, then the seeded model (with the loader's class count where the config leaves it open)."""
        info = self.info
        # The loader comes first, so that an unset HPDM.num_classes can take the data's class count.
        # Building it draws nothing from the global RNG (tests/test_train_setup.py); seeding again
        # right before the model keeps a seed's initial weights what they were when the model came
        # first (shipped checkpoints and bit-exact resume depend on them).
        rng.seed_everything(self.seed)
        self.loader = self.loader_fn(
            batch_size=self.micro_batch, seed=self.seed, rank=info.rank, world_size=info.world_size
        )
        bind_num_classes_from_data(self.loader)
        # Same seed on every rank: identical initialisation (DDP broadcasts anyway; FSDP2 shards
        # the full tensors each rank built).
        rng.seed_everything(self.seed)
        plain = self.model_fn()
        check_num_classes(self.loader, plain)
        # Checked once here (a wrong count fails before any step); float64 on the CPU like the term counts.
        self.level_w = None
        if self.level_loss_weights is not None:
            self.level_w = level_term_weights(self.level_loss_weights, plain.num_levels)
        self.loss_kwargs = {} if self.level_w is None else {"level_weights": self.level_w}
        if self.activation_checkpointing:
            if not hasattr(plain, "activation_checkpointing"):
                raise ValueError(f"{type(plain).__name__} has no activation_checkpointing switch")
            plain.activation_checkpointing = True
        return plain

    def _build_optimisation(self, plain: nn.Module) -> None:
        """The model on its device and wrapped for the ranks, its EMA, the optimiser and LR schedule,
        the text encoder and the preview sampler."""
        plain.to(self.info.device)
        if self.compile:
            plain.compile()
        self.plain = plain
        self.wrapped = hdist.wrap_model(plain, self.info)
        self.model = hdist.ModelHandle(self.wrapped, plain)
        self.ema = EMA(plain, decay=self.ema_decay)
        self.optimizer = self.optimizer_fn(plain)
        self.configured_groups = _hyperparameters(self.optimizer)  # before the schedule scales the LR
        self.scheduler = self.schedule_fn(self.optimizer, total_steps=self.train_steps)
        self.text_encoder = self.text_encoder_fn() if self.text_encoder_fn is not None else None
        text_dim = int(getattr(plain, "text_dim", 0) or 0)
        if self.text_encoder is not None and text_dim > 0:
            from hpdm.trainers.text import check_text_width

            check_text_width(self.text_encoder, text_dim)
        if self.sample_fn is None:
            self.sample_fn = _default_sample_fn()

    def _start(self, found) -> None:
        """Step 0, or the checkpoint ``found`` restored; then the config written and TensorBoard opened."""
        self.step = 0
        self.skipped_steps = 0
        self.consecutive_skips = 0
        # Compared before resuming (an override changes what is restored), written after (a
        # checkpoint that does not fit the model must not replace the saved config).
        self.config = config_diff.config_text()
        overridden = self._config_check()
        if found is not None:
            self._resume(*found, overridden=overridden)
        self._save_config()
        if self.info.is_main:
            from hpdm.trainers.tb import TBLogger

            self.tb = TBLogger(self.workdir)
            self.tb.text("config", self.config, self.step)

    def _lock_workdir(self) -> None:
        """Rank 0 holds the workdir's lock for the run; every rank stops if it cannot."""
        error = None
        if self.info.is_main:
            lock = WorkdirLock(self.workdir)
            try:
                lock.acquire()
                self.lock = lock
            except WorkdirLockedError as e:
                error = e
        if hdist.any_rank(error is not None, self.info.device):
            raise error or WorkdirLockedError(f"rank 0 could not lock {self.workdir}: see its log")

    def _load_latest(self):
        """The newest readable checkpoint, None for a new run; a workdir whose checkpoints are all
        unreadable is refused unless ``restart_from_scratch``, which sets them aside."""
        errors: list[str] = []
        found = ckpt.load_latest(self.workdir, errors)
        if found is not None or not errors:
            return found
        root = ckpt.checkpoints_root(self.workdir)
        listing = "\n".join(f"  {e}" for e in errors)
        if not self.restart_from_scratch:
            raise ckpt.CheckpointError(
                f"every checkpoint in {root} is unreadable:\n{listing}\nStarting again from step 0 would "
                "overwrite the run's history. Restore them from a backup, or pass --restart_from_scratch to "
                f"set them aside (renamed *{ckpt.UNREADABLE_SUFFIX}) and train from step 0."
            )
        hdist.barrier()  # every rank has read them before rank 0 renames them
        if self.info.is_main:
            moved = ckpt.set_aside(self.workdir)
            logging.warning("--restart_from_scratch: set aside %d unreadable checkpoints: %s", len(moved), ", ".join(moved))
        hdist.barrier()
        return None

    def _init_from(self, plain: nn.Module) -> None:
        from safetensors.torch import load_file

        path = layout.resolve_weights(self.init_from, use_ema=self.init_from_ema)
        loaded, initialised = ckpt.load_matching(plain, load_file(path), what=path)
        logging.info("Fine-tuning from %s: %d tensors loaded, %d initialised", path, len(loaded), len(initialised))
        self.finetune_report = (loaded, initialised)

    def _resume(self, path: str, payload, overridden: bool = False) -> None:
        model_sd, ema_sd, state = payload
        model_sd = ckpt.upgrade_state(self.plain, model_sd, what=path)
        ema_sd = ckpt.upgrade_state(self.plain, ema_sd, what=os.path.join(path, ckpt.EMA_FILE))
        ckpt.check_same_architecture(self.plain, model_sd, what=path)
        ckpt.check_same_architecture(self.plain, ema_sd, what=os.path.join(path, ckpt.EMA_FILE))
        ckpt.load_model_and_optimizer(self.plain, self.optimizer, model_sd, state["optimizer"])
        self.ema.load_state_dict(ema_sd, state["ema_updates"])
        self.step = int(state["step"])
        if overridden:
            self._apply_configured_schedule()
        else:
            self.scheduler.load_state_dict(state["scheduler"])
        ranks = state["ranks"]
        self._resume_data([r["data"] for r in ranks])
        rng.set_rng_state(ranks[self.info.rank % len(ranks)]["rng"])
        if int(state.get("seed", self.seed)) != self.seed:
            logging.warning("Resuming with --seed=%d; the run was started with %d", self.seed, state["seed"])
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive_skips = int(state["consecutive_skips"])
        logging.info("Resumed from %s at step %d", path, self.step)

    def _resume_data(self, saved: list) -> None:
        """Restore this rank's data position; on another world size, continue the global order."""
        if len(saved) == self.info.world_size:
            if hasattr(self.loader, "load_state_dict"):
                self.loader.load_state_dict(saved[self.info.rank])
            return
        if not hasattr(self.loader, "continue_from"):
            logging.warning(
                "Checkpoint was written by %d ranks, resuming on %d, and %s cannot continue their order: "
                "the data starts again from its beginning",
                len(saved),
                self.info.world_size,
                type(self.loader).__name__,
            )
            return
        self.loader.continue_from(saved)
        logging.info(
            "Checkpoint was written by %d ranks, resuming on %d: the data continues at the same place of "
            "the global sample order",
            len(saved),
            self.info.world_size,
        )

    def _apply_configured_schedule(self) -> None:
        """After an allowed config override: the config's optimiser settings, and its LR schedule at
        the resumed step, in place of the saved ones (which would keep the old LR and the old end)."""
        for group, configured in zip(self.optimizer.param_groups, self.configured_groups):
            group.pop("initial_lr", None)  # the schedule records its own, from the configured LR
            group.update(configured)
        self.scheduler = self.schedule_fn(self.optimizer, total_steps=self.train_steps)
        _fast_forward(self.scheduler, self.step)
        logging.info(
            "--allow_config_override: optimiser settings and LR schedule (%d steps) from the new config; "
            "LR at step %d: %.6g",
            self.train_steps,
            self.step,
            self.optimizer.param_groups[0]["lr"],
        )

    def _config_check(self) -> bool:
        """Compare this run's config with the one saved in the workdir (``config_diff``): True when
        it differs and ``allow_config_override`` lets it replace the saved one; ConfigConflictError
        when it differs otherwise."""
        path = os.path.join(self.workdir, gin_utils.OPERATIVE_CONFIG)
        if not os.path.isfile(path):
            return False
        return config_diff.check_resume(path, gin_utils.read_config(path), self.config, self.allow_config_override)

    def _save_config(self) -> None:
        if self.info.is_main:
            _atomic_write_text(os.path.join(self.workdir, gin_utils.OPERATIVE_CONFIG), self.config)
            # Beside config.gin: versions, commit, command line; one entry per start (a resume appends).
            run_record.write(self.workdir, self.info.world_size, start_step=self.step)

    # ------------------------------------------------------------------ one step: the phases

    def train_step(self) -> StepStats:
        """One optimiser step over the global batch: draw, accumulate, apply_update."""
        micro_batches = [next(self.loader) for _ in range(self.grad_accum)]
        draws = [self.draw(batch, m) for m, batch in enumerate(micro_batches)]
        losses = self.accumulate(micro_batches, draws)
        return StepStats(losses, self.apply_update(losses))

    def draw(self, batch: dict, micro: int) -> Draws:
        """Per-sample noise levels, noise, loss mask and condition dropout of micro-batch ``micro``,
        each sample's keyed by its position in the global batch."""
        x = batch["x"]
        b, levels = x.shape[:2]
        schedule = self.plain.schedule
        sigmas, masks, noises, drops = [], [], [], []
        for j in range(b):
            pos = self.info.world_size * (micro * self.micro_batch + j) + self.info.rank
            gen = rng.step_generator(self.seed, self.step, pos)
            sigma, mask = schedule.sample_training_sigmas(1, levels, gen)
            noises.append(torch.randn(x.shape[1:], generator=gen))
            drops.append(bool(torch.rand((), generator=gen).item() < self.label_dropout))
            sigmas.append(sigma[0])
            masks.append(mask[0])
        dev = self.info.device
        return Draws(
            sigma=torch.stack(sigmas).to(dev, x.dtype),
            noise=torch.stack(noises).to(dev, x.dtype),
            loss_mask=torch.stack(masks).to(dev),
            drop=drops,
        )

    def accumulate(self, micro_batches: list[dict], draws: list[Draws]) -> LossSums:
        """Forward and backward over the micro-batches; the gradients add up to those of the global
        batch's loss (Eq. 4) and the returned sums are this rank's."""
        # Normalise by the global (weighted) number of loss terms (levels not at context noise), so
        # the DDP-averaged gradient equals the single-process one whatever the sharding.
        if self.level_w is None:
            local_terms = [float(d.loss_mask.sum()) for d in draws]
        else:
            local_terms = [float((d.loss_mask.cpu().double() * self.level_w).sum()) for d in draws]
        local_terms = torch.tensor(local_terms, dtype=torch.float64)
        total = float(hdist.sum_over_ranks(local_terms.sum().clone(), self.info.device).clamp_min(1.0))
        loss_sum, level_sum, level_terms = 0.0, None, None
        for m, (batch, d) in enumerate(zip(micro_batches, draws)):
            x = batch["x"].to(self.info.device, non_blocking=True)
            coords = batch["coords"].to(self.info.device, non_blocking=True)
            cond = self._cond(batch, x, d.drop)
            last = m == self.grad_accum - 1
            with hdist.gradient_sync(self.wrapped, last), torch.autocast(
                self.info.device.type, dtype=torch.bfloat16, enabled=self.bf16
            ):
                loss, per_level = self.micro_batch_loss(x, coords, cond, d)
                weight = float(local_terms[m]) * self.info.world_size / total
                (loss.float() * weight).backward()
            loss_sum += loss.detach().float().item() * float(local_terms[m])
            terms = d.loss_mask.sum(0).double().cpu()
            pl = per_level.detach().double().cpu() * terms
            level_sum = pl if level_sum is None else level_sum + pl
            level_terms = terms if level_terms is None else level_terms + terms
        return LossSums(loss=loss_sum, level_loss=level_sum, terms=float(local_terms.sum()), level_terms=level_terms)

    def micro_batch_loss(self, x: torch.Tensor, coords: torch.Tensor, cond: Optional[dict], draws: Draws):
        """``(loss, per_level)`` of one micro-batch under its draws: the configured ``loss_fn``."""
        return self.loss_fn(
            self.model, x, coords, cond=cond, sigma=draws.sigma, noise=draws.noise, loss_mask=draws.loss_mask,
            **self.loss_kwargs,
        )

    def _cond(self, batch: dict, x: torch.Tensor, drops: list[bool]) -> Optional[dict]:
        """Conditioning with per-sample dropout to the null condition (Table 8: p = 0.1)."""
        drop = torch.tensor(drops, dtype=torch.bool, device=x.device)
        cond = {}
        num_classes = int(getattr(self.plain, "num_classes", 0))
        if num_classes > 0 and "label" in batch:
            label = batch["label"].to(x.device)
            cond["label"] = torch.where(drop, torch.full_like(label, num_classes), label)
        if int(getattr(self.plain, "text_dim", 0)) > 0 and "text" in batch:
            if self.text_encoder is None:
                raise ValueError("the batches carry captions: bind Trainer.text_encoder_fn = @TextEncoder")
            emb, mask = self.text_encoder(list(batch["text"]))
            emb, mask = emb.to(x.device), mask.to(x.device)
            # The sampler's null text (hpdm.samplers.null_cond): zero embeddings, every token masked.
            emb = torch.where(drop[:, None, None], torch.zeros_like(emb), emb)
            mask = mask & ~drop[:, None]
            cond["text"], cond["text_mask"] = emb, mask
        return cond or None

    def apply_update(self, losses: LossSums) -> Update:
        """Clip the gradients, then the optimiser and the EMA (skipped on every rank when any rank's
        loss or gradient is not finite), the LR schedule and the step count."""
        params = [p for p in self.plain.parameters() if p.grad is not None]
        max_norm = float("inf") if self.clip_grad_norm is None else float(self.clip_grad_norm)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        nonfinite = hdist.any_rank(not (math.isfinite(losses.loss) and math.isfinite(grad_norm)), self.info.device)
        if nonfinite:
            self.skipped_steps += 1
            self.consecutive_skips += 1
            logging.warning(
                "Step %d: non-finite loss or gradient; update skipped (%d in a row, %d in total)",
                self.step,
                self.consecutive_skips,
                self.skipped_steps,
            )
        else:
            self.optimizer.step()
            self.ema.update(self.plain)
            self.consecutive_skips = 0
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        if nonfinite and self.consecutive_skips >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"{self.consecutive_skips} consecutive non-finite steps (last at step {self.step - 1}); "
                f"stopping. The last good checkpoint is kept in {ckpt.checkpoints_root(self.workdir)}."
            )
        return Update(grad_norm=grad_norm, lr=lr, skipped=nonfinite)

    def log(self, window: LogWindow, last: Update) -> None:
        """TensorBoard scalars and the console line for the steps of ``window`` (losses over every
        rank: a collective), with the gradient norm and LR of its last step."""
        loss, per_level = window.losses.means(self.info.device)
        if not self.info.is_main:
            return
        levels = len(per_level)
        videos_per_s = self.global_batch * window.steps / max(time.time() - window.started, 1e-9)
        scalars = {
            "train/loss": loss,
            "train/lr": last.lr,
            "train/grad_norm": last.grad_norm,
            "train/skipped_steps": self.skipped_steps,
            "speed/videos_per_s": videos_per_s,
            "speed/patches_per_s": videos_per_s * levels,
        }
        for l, v in enumerate(per_level):
            scalars[f"train/loss_level_{l}"] = v
        data_skips = getattr(self.loader, "num_skipped", None)
        if data_skips is None and hasattr(getattr(self.loader, "source", None), "num_skipped"):
            data_skips = self.loader.source.num_skipped
        if data_skips is not None:
            scalars["data/skipped_samples"] = float(data_skips)
        self.tb.scalars(scalars, self.step)
        elapsed = time.time() - self.started_at
        rate = (self.step - self.started_step) / max(elapsed, 1e-9)
        eta = (self.train_steps - self.step) / rate if rate > 0 else float("inf")
        levels_txt = " ".join(f"l{l} {v:.4f}" for l, v in enumerate(per_level))
        logging.info(
            "step %d/%d | loss %.4f (%s) | lr %.2e | grad %.3f | %.2f videos/s %.2f patches/s | skipped %d | ETA %s",
            self.step,
            self.train_steps,
            loss,
            levels_txt,
            last.lr,
            last.grad_norm,
            videos_per_s,
            videos_per_s * levels,
            self.skipped_steps,
            format_duration(eta),
        )

    # ------------------------------------------------------------------ checkpoints and previews

    def save(self) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model_sd, optim_sd = get_state_dict(
            self.plain, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        ema_sd = self.ema.state_dict()
        rank_state = {
            "rng": rng.rng_state(),
            "data": self.loader.state_dict() if hasattr(self.loader, "state_dict") else {},
        }
        ranks = hdist.gather_objects(rank_state)
        if self.info.is_main:
            state = {
                "step": self.step,
                "seed": self.seed,
                "optimizer": optim_sd,
                "scheduler": self.scheduler.state_dict(),
                "ema_updates": self.ema.num_updates,
                "skipped_steps": self.skipped_steps,
                "consecutive_skips": self.consecutive_skips,
                "world_size": self.info.world_size,
                "ranks": ranks,
            }
            path = ckpt.save_checkpoint(self.workdir, self.step, model_sd, ema_sd, state, keep=self.keep_checkpoints)
            logging.info("Saved %s", path)
        hdist.barrier()

    def sample(self) -> None:
        """Log GIF previews of the EMA weights; every rank samples its share, rank 0 logs them.

        Sampling on rank 0 alone left the other ranks waiting in the next step's collective for the
        whole preview, which with the final sampler (Appendix C: 128 / 64 / 32 steps over fully
        overlapping tiles) can outlast the process group's 30-minute timeout. Here rank ``r`` samples
        videos ``r, r + W, ...`` (``preview_share``), so a preview costs each rank at most
        ``ceil(num_samples / W)`` videos, at ``preview_steps`` / ``preview_overlap``. Video ``i`` has
        its own seed, so a preview does not depend on the number of ranks. A failure on any rank is
        raised on rank 0 after the gather, so no rank is left waiting in it.
        """
        if self.num_samples < 1:
            return
        ema_sd = self.ema.state_dict()  # collective under FSDP: every rank takes part
        mine = preview_share(self.num_samples, self.info.rank, self.info.world_size)
        videos, error = {}, None
        try:
            videos = self._sample_videos(ema_sd, mine)
        except Exception as e:  # noqa: BLE001 - reported by rank 0 after the gather
            logging.exception("Sampling on rank %d failed", self.info.rank)
            error = f"rank {self.info.rank}: {type(e).__name__}: {e}"
        shares = hdist.gather_objects((videos, error))
        if not self.info.is_main:
            return
        errors = [err for _, err in shares if err is not None]
        if errors:
            raise RuntimeError("preview sampling failed on " + "; ".join(errors))
        gathered = {i: v for share, _ in shares for i, v in share.items()}
        batch = np.stack([gathered[i] for i in range(self.num_samples)])
        logging.info("Preview at step %d: %d videos sampled on %d rank(s)", self.step, len(batch), len(shares))
        self.tb.videos("samples", batch, self.step, fps=self.sample_fps)
        self.tb.flush()

    def _sample_videos(self, ema_sd: dict, indices: Sequence[int]) -> dict:
        """``{index: uint8 [T, H, W, C]}`` preview videos of the EMA weights (``sample_previews``)."""
        if not indices:
            return {}
        # Building the sampling model and sampling must not disturb the training RNG streams (exact resume).
        with torch.random.fork_rng(devices=[]):
            if getattr(self, "_sample_model", None) is None:
                self._sample_model = self.model_fn().to(self.info.device)
            self._sample_model.load_state_dict(ema_sd)
            return sample_previews(
                self._sample_model, self.sample_fn, self.seed, indices, self.preview_steps, self.preview_overlap
            )

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Train to ``train_steps``; TrainingStopped (after a checkpoint) when a signal stops it."""
        try:
            self.setup()
            self._loop()
        finally:
            self._close()

    def _close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        close = getattr(self.loader, "close", None)
        if close is not None:
            close()
        if self.lock is not None:  # last: nothing of this run writes to the workdir any more
            self.lock.release()
            self.lock = None

    def _loop(self) -> None:
        self.started_step, self.started_at = self.step, time.time()
        window = LogWindow()
        if self.step >= self.train_steps:
            logging.info("Nothing to do: the run is at step %d of %d", self.step, self.train_steps)
            return
        self.wrapped.train()
        with StopRequests() as requests:
            while self.step < self.train_steps:
                stats = self.train_step()
                window.add(stats)
                if self.step % self.log_every == 0 or self.step == self.train_steps:
                    self.log(window, stats.update)
                    window = LogWindow()
                self.checkpoint(requests)
                self.preview()

    def checkpoint(self, requests: StopRequests) -> None:
        """Save when due, or when a stop was asked for on any rank; then stop (TrainingStopped)."""
        # Every rank votes after every step, so all stop after the same one.
        stop = hdist.max_over_ranks(requests.received or 0, self.info.device)
        if stop or self.step % self.checkpoint_every == 0 or self.step == self.train_steps:
            self.save()
        if stop and self.step < self.train_steps:  # a signal during the last step: the run is done
            self._stopped(stop)

    def preview(self) -> None:
        """Sample previews when due; a sampler failure is logged and never ends the training run."""
        if self.sample_every > 0 and self.sample_fn is not None and self.step % self.sample_every == 0:
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 - a sampler failure must not end the training run
                logging.exception("Sampling at step %d failed: %s", self.step, e)

    def _stopped(self, signum: int) -> None:
        """Say where the run stopped and how to go on, then raise TrainingStopped (the checkpoint is written)."""
        logging.warning(
            "Stopped by %s after step %d of %d; checkpoint %s. Run the same command to resume. Exiting with "
            "status %d (128 + %s).",
            signal_name(signum),
            self.step,
            self.train_steps,
            ckpt.step_dir(self.workdir, self.step),
            exit_status(signum),
            signal_name(signum),
        )
        raise TrainingStopped(signum, self.step)
