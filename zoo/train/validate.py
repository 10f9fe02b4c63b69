"""tools/validate.py: evaluate a checkpoint (zoo, timm, authors' or tools/train.py format) on an ImageFolder."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict

import torch

from . import UsageError
from .checkpoint import is_train_checkpoint, load_checkpoint
from .data import build_eval_loader, check_image_folder, find_split
from .dist import cleanup, init_distributed
from .engine import check_model_name, create_model, evaluate, resolve_eval_config

__all__ = ['run']


def run(args) -> Dict[str, Any]:
    info = init_distributed(args.device)
    try:
        return _run(args, info)
    finally:
        cleanup(info)


def _run(args, info) -> Dict[str, Any]:
    folder = find_split(args.data_dir, args.split) if args.split else args.data_dir   # '' = the folder itself
    class_map = check_image_folder(folder)

    ckpt = load_checkpoint(args.checkpoint) if args.checkpoint else None
    train_ckpt = is_train_checkpoint(ckpt)
    name = args.model or (ckpt['arch'] if train_ckpt else '')
    if not name:
        raise UsageError('--model is required (the checkpoint does not name its model)')
    check_model_name(name)
    if args.use_ema and not (train_ckpt and ckpt.get('ema') is not None):
        raise UsageError(f'--use-ema: {args.checkpoint or "no checkpoint"} holds no EMA weights')

    kwargs = dict(args.model_kwargs)
    img_size = args.img_size
    if train_ckpt:
        kwargs = dict(ckpt['model_kwargs'], **kwargs)
        img_size = img_size or ckpt['args'].get('img_size')
        if set(ckpt['class_to_idx']) != set(class_map):
            raise UsageError(f'class folders of {folder} differ from those the checkpoint was trained on')
        class_map = ckpt['class_to_idx']
        kwargs['num_classes'] = ckpt['num_classes']

    base_config = ckpt['data_config'] if train_ckpt else None
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            file = args.checkpoint
            if args.use_ema:      # timm reads 'model'; hand it the EMA weights under that key
                file = os.path.join(tmp, 'ema.pth')
                torch.save({'model': ckpt['ema']}, file)
            overlay = dict(file=file)
            if 'num_classes' in kwargs:   # the checkpoint's classifier has that many classes: keep it (timm would
                overlay['num_classes'] = kwargs['num_classes']   # drop it as not matching the pretrained_cfg's)
            kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
        elif args.pretrained:
            kwargs['pretrained'] = True
        del ckpt
        model = create_model(name, img_size=img_size, **kwargs)
    if model.num_classes != len(class_map):
        raise UsageError(f'{name} has {model.num_classes} classes but {folder} has {len(class_map)} class folders')

    data_config = resolve_eval_config(model, args.img_size, args.crop_pct, args.interpolation, args.mean, args.std,
                                      base=base_config)
    model.to(info.device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = build_eval_loader(folder, class_map, data_config, args.batch_size, args.workers,
                               info.world_size, info.rank)
    metrics = evaluate(model, loader, info, torch.bfloat16 if args.amp else None, args.channels_last)
    result = dict(model=name, checkpoint=args.checkpoint, ema=args.use_ema, data=folder, **metrics,
                  img_size=data_config['input_size'][-1], crop_pct=data_config['crop_pct'],
                  interpolation=data_config['interpolation'])
    if info.is_main:
        print(f'{name} on {folder} ({metrics["n"]} images at {result["img_size"]}px, crop_pct {result["crop_pct"]}, '
              f'{result["interpolation"]}): top-1 {metrics["top1"]:.2f}, top-5 {metrics["top5"]:.2f}, '
              f'loss {metrics["loss"]:.4f}' + (f', skipped {metrics["skipped"]} unreadable' if metrics['skipped']
                                              else ''), flush=True)
        print(json.dumps(result), flush=True)
        if args.results_file:
            with open(args.results_file, 'w') as f:
                json.dump(result, f, indent=2)
    return result
