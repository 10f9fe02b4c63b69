"""The training loop behind tools/train.py, on timm's stack.

timm provides the model registry, transforms (RandAugment, random erasing), Mixup/CutMix, the losses (soft-target
and label-smoothing cross entropy), `create_optimizer_v2` (with layer-wise lr decay from the model's
group_matcher), `create_scheduler_v2`, `ModelEmaV3` and `NativeScaler`. This module wires them together with DDP,
AMP, exact resume and logging:

    output/
      last.pth  best.pth     written atomically (tmp file + os.replace); last.pth also mid-epoch on request
      log.csv                one row per epoch (losses, top-1/top-5, lr, throughput, skipped images)
      steps.csv              loss and lr every --log-interval steps (the loss curve; mean over all processes)
      args.yaml              the resolved options of the run

Resume (`--resume`) restores model, optimizer, scheduler, EMA, AMP scaler, epoch, step within the epoch and the
RNG states of every process; with the per-(epoch, sample) augmentation seeds and the resumable sampler of
data.py, an interrupted and resumed run ends with the same weights as one that was never interrupted.
"""
from __future__ import annotations

import csv
import difflib
import json
import logging
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from typing import Any, Dict, Optional

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from timm.data import Mixup, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import zoo  # noqa: F401  (registers the zoo models)

from ..models._load import CheckpointFileError
from . import UsageError
from .checkpoint import check_file, get_rng_state, load_checkpoint, save_atomic, set_rng_state
from .data import build_eval_loader, build_train_loader, check_image_folder, find_split
from .dist import DistInfo, all_gather_object, all_reduce_sum, barrier, cleanup, init_distributed
from .heap import keep_freed_memory

_logger = logging.getLogger('zoo.train')

__all__ = ['create_model', 'resolve_eval_config', 'evaluate', 'Trainer', 'run']


# --- model and data config ---------------------------------------------------------------------------------
def check_model_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f'did you mean {", ".join(close)}?' if close else "zoo.list_models() lists the zoo's models"
        raise UsageError(f'unknown model {name!r} ({hint})')


def create_model(name: str, img_size: Optional[int] = None, **kwargs) -> nn.Module:
    """timm.create_model with a one-line error for a bad name, arguments or checkpoint file. `img_size` is passed to
    models that take it (the zoo's and timm's transformers size their position tables by it) and dropped for those
    that don't."""
    check_model_name(name)
    try:
        if img_size is not None and 'img_size' not in kwargs:
            try:
                return timm.create_model(name, img_size=img_size, **kwargs)
            except TypeError as e:
                if 'img_size' not in str(e):
                    raise UsageError(f'cannot build {name}: {e}') from None
        try:
            return timm.create_model(name, **kwargs)
        except TypeError as e:
            raise UsageError(f'cannot build {name}: {e}') from None
    except CheckpointFileError as e:
        raise UsageError(str(e)) from None


def resolve_eval_config(model: nn.Module, img_size: Optional[int] = None, crop_pct: Optional[float] = None,
                        interpolation: str = '', mean=None, std=None, base: Optional[Dict] = None) -> Dict[str, Any]:
    """The eval transform: the model's pretrained_cfg (input size, crop_pct, interpolation, mean/std), or `base`
    (the config a training run stored in its checkpoint), with the given overrides."""
    overrides = dict(input_size=(3, img_size, img_size) if img_size else None, crop_pct=crop_pct,
                     interpolation=interpolation or None, mean=tuple(mean) if mean else None,
                     std=tuple(std) if std else None)
    if base is not None:
        cfg = dict(base, **{k: v for k, v in overrides.items() if v is not None})
    else:
        cfg = resolve_data_config(overrides, model=model)
    keys = ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')
    return {k: tuple(cfg[k]) if isinstance(cfg.get(k), list) else cfg.get(k) for k in keys}


@torch.no_grad()
def evaluate(model: nn.Module, loader, info: DistInfo, amp_dtype: Optional[torch.dtype] = None,
             channels_last: bool = False) -> Dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy, summed exactly over all processes."""
    model.eval()
    loss_sum = top1 = top5 = n = skipped = 0.
    for images, targets, n_skipped in loader:
        skipped += n_skipped
        if images is None:
            continue
        images, targets = images.to(info.device), targets.to(info.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(info.device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction='sum').item()
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = topk.eq(targets[:, None])
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        n += len(targets)
    loss_sum, top1, top5, n, skipped = all_reduce_sum([loss_sum, top1, top5, n, skipped], info)
    return dict(loss=loss_sum / max(n, 1), top1=100. * top1 / max(n, 1), top5=100. * top5 / max(n, 1),
                n=int(n), skipped=int(skipped))


# --- training ----------------------------------------------------------------------------------------------
class Trainer:
    """One training run: everything built from `args` in __init__, then `fit()`."""

    def __init__(self, args, info: DistInfo):
        self.args, self.info = args, info
        self.out = args.output
        self.amp_dtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16}[args.amp_dtype] if args.amp else None
        torch.manual_seed(args.seed + info.rank)   # model init (rank 0's is broadcast by DDP), dropout, mixup
        np.random.seed((args.seed + info.rank) % 2 ** 32)
        random.seed(args.seed + info.rank)

        # data folders first: a bad path should fail before anything is built
        data_dir = args.data_dir
        if args.dataset == 'digits':
            data_dir = data_dir or os.path.join('data', 'digits')
            if info.is_main:
                from .digits import make_digits
                make_digits(data_dir)
            barrier(info)
        if not data_dir:
            raise UsageError('no data: pass --data-dir DIR (an ImageFolder with train/ and val/) or --dataset digits')
        train_dir, val_dir = find_split(data_dir, args.train_split), find_split(data_dir, args.val_split)
        self.class_map = check_image_folder(train_dir)
        val_classes = check_image_folder(val_dir)
        if set(val_classes) != set(self.class_map):
            diff = sorted(set(val_classes) ^ set(self.class_map), key=str)[:5]
            raise UsageError(f'class folders of {train_dir} and {val_dir} differ (e.g. {", ".join(diff)})')
        check_model_name(args.model)
        for path in (args.pretrained_file, '' if args.resume == 'auto' else args.resume):
            if path:
                check_file(path)   # a bad file fails now, not after the model and data are set up

        # model
        kwargs = dict(args.model_kwargs)
        if args.drop_path is not None:
            kwargs['drop_path_rate'] = args.drop_path
        if args.pretrained or args.pretrained_file:
            kwargs.update(pretrained=True)
            if args.pretrained_file:
                kwargs['pretrained_cfg_overlay'] = dict(file=args.pretrained_file)
        self.model = create_model(args.model, img_size=args.img_size, num_classes=len(self.class_map),
                                  drop_rate=args.drop, **kwargs)
        if args.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.model.to(info.device)
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.data_config = resolve_eval_config(self.model, args.img_size, args.crop_pct, args.interpolation,
                                               args.mean, args.std)

        # data
        self.train_loader = build_train_loader(train_dir, self.class_map, self.data_config, args,
                                               info.world_size, info.rank)
        self.steps_per_epoch = len(self.train_loader.batch_sampler)
        self.val_loader = build_eval_loader(val_dir, self.class_map, self.data_config,
                                            args.val_batch_size or args.batch_size // info.world_size,
                                            args.workers, info.world_size, info.rank)

        # optimization
        opt_kwargs = dict(eps=args.opt_eps) if args.opt_eps is not None else {}
        if args.opt_betas:
            opt_kwargs['betas'] = tuple(args.opt_betas)
        self.optimizer = create_optimizer_v2(self.model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                             momentum=args.momentum, layer_decay=args.layer_decay, **opt_kwargs)
        self.scheduler = create_scheduler_v2(
            self.optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
            warmup_lr=args.warmup_lr, min_lr=args.min_lr, cooldown_epochs=args.cooldown_epochs,
            step_on_epochs=False, updates_per_epoch=self.steps_per_epoch)[0]
        self.scaler = NativeScaler(device=info.device.type) if self.amp_dtype == torch.float16 else None
        self.ema = ModelEmaV3(self.model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) \
            if args.model_ema else None

        num_classes = len(self.class_map)
        self.mixup = None
        if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
            self.mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                               prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                               label_smoothing=args.smoothing, num_classes=num_classes)
        if self.mixup is not None:
            self.loss_fn = SoftTargetCrossEntropy()       # smoothing is folded into the mixed targets
        elif args.smoothing > 0:
            self.loss_fn = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
        else:
            self.loss_fn = nn.CrossEntropyLoss()

        # state and resume
        self.epoch = self.step = self.global_step = 0
        self.best_metric, self.best_epoch = None, -1
        resume = args.resume
        if resume == 'auto':
            resume = os.path.join(self.out, 'last.pth') if os.path.isfile(os.path.join(self.out, 'last.pth')) else ''
        if resume:
            self._load(resume)
        self.scheduler.step_update(self.global_step)

        # wrappers: DDP, then compile (the raw self.model is what gets saved and evaluated)
        self.train_model = self.model
        if info.distributed:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[info.local_rank] if info.device.type == 'cuda' else None)
        if args.torch_compile:
            self.train_model = torch.compile(self.train_model,
                                             mode=None if args.torch_compile == 'default' else args.torch_compile)

        self._stop_signal = False
        if info.is_main:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, 'args.yaml'), 'w') as f:
                yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}, f)
            self._trim_logs()

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _state(self) -> Dict[str, Any]:
        rng = all_gather_object(get_rng_state(), self.info)     # every process's RNG, for exact resume
        return {
            'arch': self.args.model, 'model_kwargs': dict(self.args.model_kwargs), 'num_classes': len(self.class_map),
            'class_to_idx': self.class_map, 'data_config': self.data_config,
            'model': self.model.state_dict(), 'ema': self.ema.module.state_dict() if self.ema else None,
            'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
            'scaler': self.scaler.state_dict() if self.scaler else None,
            'epoch': self.epoch, 'step': self.step, 'global_step': self.global_step,
            'best_metric': self.best_metric, 'best_epoch': self.best_epoch, 'rng': rng,
            'args': {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.args).items()},
        }

    def save(self, *names: str) -> None:
        state = self._state()          # collective: all processes take part
        if self.info.is_main:
            for name in names:
                save_atomic(state, os.path.join(self.out, name))
        barrier(self.info)

    def _load(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get('arch') != self.args.model:
            raise UsageError(f'{path} is a checkpoint of {ckpt.get("arch")!r}, not of {self.args.model!r}')
        self.model.load_state_dict(ckpt['model'])
        if self.ema is not None and ckpt.get('ema') is not None:
            self.ema.module.load_state_dict(ckpt['ema'])
        self.optimizer.load_state_dict(ckpt['optimizer'])
        self.scheduler.load_state_dict(ckpt['scheduler'])
        if self.scaler is not None and ckpt.get('scaler'):
            self.scaler.load_state_dict(ckpt['scaler'])
        self.epoch, self.step, self.global_step = ckpt['epoch'], ckpt['step'], ckpt['global_step']
        self.best_metric, self.best_epoch = ckpt['best_metric'], ckpt['best_epoch']
        rng = ckpt.get('rng') or []
        if len(rng) == self.info.world_size:
            set_rng_state(rng[self.info.rank])
        else:   # data order and augmentation stay exact (data.py); mixup / drop-path draws are re-seeded
            _logger.warning('checkpoint has RNG states of %d processes, this run has %d: re-seeding',
                            len(rng), self.info.world_size)
            torch.manual_seed(self.args.seed + self.info.rank + self.global_step)
        if self.info.is_main:
            print(f'resumed from {path}: epoch {self.epoch}, step {self.step}, global step {self.global_step}',
                  flush=True)

    def _trim_logs(self) -> None:
        """After a resume, drop log rows written after the checkpoint (they will be written again)."""
        for name, key, limit in (('log.csv', 'epoch', self.epoch), ('steps.csv', 'global_step', self.global_step + 1)):
            path = os.path.join(self.out, name)
            if not os.path.isfile(path):
                continue
            with open(path, newline='') as f:
                rows = list(csv.DictReader(f))
            if rows and any(int(r[key]) >= limit for r in rows):
                with open(path, 'w', newline='') as f:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(r for r in rows if int(r[key]) < limit)

    def _append_csv(self, name: str, row: Dict[str, Any]) -> None:
        path = os.path.join(self.out, name)
        new = not os.path.isfile(path)
        with open(path, 'a', newline='') as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    # -- loop -----------------------------------------------------------------------------------------------
    def _request_stop(self, signum, frame):
        self._stop_signal = True

    def _should_stop(self) -> bool:
        stop = self._stop_signal or (0 < self.args.stop_after_steps <= self.global_step)
        if self.info.distributed:       # every process must stop at the same step
            stop = all_reduce_sum([float(stop)], self.info)[0] > 0
        return stop

    def train_epoch(self) -> Dict[str, float]:
        """Train from (self.epoch, self.step) to the end of the epoch, or until a stop is requested."""
        args, info = self.args, self.info
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(self.epoch, self.step)
        if self.mixup is not None and args.mixup_off_epoch and self.epoch >= args.mixup_off_epoch:
            self.mixup.mixup_enabled = False
        self.train_model.train()
        loss_sum, n_loss, skipped, images_seen, t0 = 0., 0, 0, 0, time.time()
        bar = tqdm(total=self.steps_per_epoch, initial=self.step, desc=f'epoch {self.epoch}', dynamic_ncols=True,
                   disable=args.no_progress or not info.is_main, leave=False)
        for images, targets, n_skipped in self.train_loader:
            skipped += n_skipped
            if images is None:   # a batch of unreadable images only: nothing to learn from
                if info.distributed:
                    raise RuntimeError(f'every image of a batch was unreadable on rank {info.rank}; '
                                       'fix or remove the files named in the warnings above')
                self.step, self.global_step = self.step + 1, self.global_step + 1
                self.scheduler.step_update(num_updates=self.global_step)
                bar.update()
                continue
            images, targets = images.to(info.device, non_blocking=True), targets.to(info.device, non_blocking=True)
            if self.mixup is not None:
                if len(images) % 2:      # timm's Mixup pairs samples; an image was skipped
                    images, targets = images[:-1], targets[:-1]
                images, targets = self.mixup(images, targets)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(info.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext():
                loss = self.loss_fn(self.train_model(images), targets)
            self.optimizer.zero_grad(set_to_none=True)
            params = self.model.parameters()
            if self.scaler is not None:
                self.scaler(loss, self.optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                            parameters=params)
            else:
                loss.backward()
                if args.clip_grad is not None:
                    dispatch_clip_grad(params, args.clip_grad, mode=args.clip_mode)
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, step=self.global_step)
            self.step += 1
            self.global_step += 1
            self.scheduler.step_update(num_updates=self.global_step)

            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise RuntimeError(f'loss is {loss_value} at epoch {self.epoch} step {self.step}; stopping')
            loss_sum, n_loss = loss_sum + loss_value, n_loss + 1
            images_seen += len(images) * info.world_size
            lr = self.optimizer.param_groups[0]['lr']
            if self.global_step % args.log_interval == 0 or self.step == self.steps_per_epoch:
                mean_loss = all_reduce_sum([loss_value], info)[0] / info.world_size
                if info.is_main:
                    self._append_csv('steps.csv', dict(global_step=self.global_step, epoch=self.epoch,
                                                       step=self.step, loss=f'{mean_loss:.6f}', lr=f'{lr:.6e}'))
            bar.set_postfix(loss=f'{loss_sum / n_loss:.4f}', lr=f'{lr:.2e}',
                            img_s=f'{images_seen / max(time.time() - t0, 1e-9):.0f}')
            bar.update()
            if self.step < self.steps_per_epoch:
                if self._should_stop():
                    bar.close()
                    return dict(stopped=True)
                if args.save_every_steps and self.global_step % args.save_every_steps == 0:
                    self.save('last.pth')
        bar.close()
        loss_sum, n_loss, skipped = all_reduce_sum([loss_sum, n_loss, skipped], self.info)
        elapsed = time.time() - t0
        return dict(stopped=False, loss=loss_sum / max(n_loss, 1), skipped=int(skipped), time=elapsed,
                    img_s=images_seen / max(elapsed, 1e-9))

    def fit(self) -> Dict[str, Any]:
        args, info = self.args, self.info
        for sig in (signal.SIGTERM, signal.SIGUSR1):   # preemption: finish the step, save, exit
            signal.signal(sig, self._request_stop)
        if info.is_main:
            n_params = sum(p.numel() for p in self.model.parameters())
            print(f'{args.model}: {n_params / 1e6:.3f} M params, {len(self.class_map)} classes, '
                  f'{len(self.train_loader.dataset)} train / {len(self.val_loader.dataset)} val images, '
                  f'{self.steps_per_epoch} steps/epoch, {info.world_size} process(es) on {info.device.type}',
                  flush=True)
        last = {}
        while self.epoch < args.epochs:
            train = self.train_epoch()
            if train['stopped']:
                self.save('last.pth')
                if info.is_main:
                    print(f'stopped at epoch {self.epoch} step {self.step} (global step {self.global_step}); '
                          f'saved {os.path.join(self.out, "last.pth")}, continue with --resume', flush=True)
                return dict(stopped=True, global_step=self.global_step)
            val = evaluate(self.model, self.val_loader, info, self.amp_dtype, args.channels_last)
            row = dict(epoch=self.epoch, lr=f'{self.optimizer.param_groups[0]["lr"]:.6e}',
                       train_loss=f'{train["loss"]:.6f}', val_loss=f'{val["loss"]:.6f}',
                       val_top1=f'{val["top1"]:.4f}', val_top5=f'{val["top5"]:.4f}')
            metric = val['top1']
            if self.ema is not None:
                ema = evaluate(self.ema.module, self.val_loader, info, self.amp_dtype, args.channels_last)
                row.update(ema_val_loss=f'{ema["loss"]:.6f}', ema_val_top1=f'{ema["top1"]:.4f}',
                           ema_val_top5=f'{ema["top5"]:.4f}')
                metric = ema['top1']
            skipped = train['skipped'] + val['skipped']
            row.update(skipped=skipped, epoch_time_s=f'{train["time"]:.2f}', train_img_s=f'{train["img_s"]:.1f}')
            self.scheduler.step(self.epoch + 1, metric)
            improved = self.best_metric is None or metric > self.best_metric
            if improved:
                self.best_metric, self.best_epoch = metric, self.epoch
            if info.is_main:
                self._append_csv('log.csv', row)
                print(f'epoch {self.epoch}: train loss {train["loss"]:.4f}, val loss {val["loss"]:.4f}, '
                      f'top-1 {val["top1"]:.2f}, top-5 {val["top5"]:.2f}'
                      + (f', EMA top-1 {row["ema_val_top1"]}' if self.ema is not None else '')
                      + (f', skipped {skipped} unreadable image(s)' if skipped else '')
                      + f', {train["img_s"]:.0f} img/s', flush=True)
            self.epoch, self.step = self.epoch + 1, 0
            self.save(*(('last.pth', 'best.pth') if improved else ('last.pth',)))
            last = dict(top1=val['top1'], top5=val['top5'], loss=val['loss'], epoch=self.epoch - 1)
            if self._should_stop():
                return dict(stopped=True, global_step=self.global_step)
        return dict(stopped=False, last=last, best_top1=self.best_metric, best_epoch=self.best_epoch,
                    global_step=self.global_step)


def run(args) -> Dict[str, Any]:
    """Train as described by `args` (tools/train.py's options); returns a summary (printed as JSON by the tool)."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    if args.deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
    info = init_distributed(args.device)
    if info.device.type == 'cpu' and not args.default_heap:
        keep_freed_memory()
    try:
        summary = Trainer(args, info).fit()
        if info.is_main:
            print(json.dumps(summary), flush=True)
        return summary
    finally:
        cleanup(info)
