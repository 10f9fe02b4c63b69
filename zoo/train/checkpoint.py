"""Training checkpoints: atomic writes, RNG states, and the layout tools/validate.py reads back.

A checkpoint written by tools/train.py is a dict of plain types and tensors only (loads with
`torch.load(weights_only=True)`, so timm's own loader accepts it too):

    model          the model's state_dict (timm and the zoo families' filters find it under this key)
    ema            EMA weights or None (a key timm does not pick up by itself; validate.py --use-ema reads it)
    optimizer, scheduler, scaler      their state_dicts
    epoch, step    where to continue: `step` batches of `epoch` are done (0 = start of that epoch)
    global_step, best_metric, best_epoch
    rng            per-process RNG states (torch, cuda, numpy, python), one entry per rank
    arch, model_kwargs, num_classes, class_to_idx, data_config, args    what is needed to rebuild and evaluate
"""
from __future__ import annotations

import os
import random
from typing import Any, Dict

import numpy as np
import torch

from ..models._load import CheckpointFileError, check_checkpoint_file, read_checkpoint_file
from . import UsageError

__all__ = ['save_atomic', 'load_checkpoint', 'check_file', 'is_train_checkpoint', 'get_rng_state', 'set_rng_state']


def save_atomic(obj: Any, path: str) -> None:
    """Write to `path.tmp`, then rename over `path`: a crash mid-write never leaves a truncated checkpoint."""
    tmp = f'{path}.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Any checkpoint file (.pth / .safetensors, see zoo.models._load), read safely; a bad one is a UsageError."""
    try:
        return read_checkpoint_file(path)
    except CheckpointFileError as e:
        raise UsageError(str(e)) from None


def check_file(path: str) -> None:
    """The cheap checks of a checkpoint file (no tensors read), so a bad file fails before the model is built."""
    try:
        check_checkpoint_file(path)
    except CheckpointFileError as e:
        raise UsageError(str(e)) from None


def is_train_checkpoint(ckpt: Any) -> bool:
    """True for a checkpoint written by tools/train.py (as opposed to a bare or authors' state dict)."""
    return isinstance(ckpt, dict) and 'arch' in ckpt and 'model' in ckpt


def get_rng_state() -> Dict[str, Any]:
    """This process's RNG states as tensors and plain Python types."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'numpy': (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        'python': random.getstate(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
