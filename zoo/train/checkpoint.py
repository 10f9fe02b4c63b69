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

import fnmatch
import os
import random
import signal
from typing import Any, BinaryIO, Callable, Dict

import numpy as np
import torch

from ..models._load import CheckpointFileError, check_checkpoint_file, read_checkpoint_file
from . import UsageError

__all__ = ['save_atomic', 'load_checkpoint', 'check_file', 'is_train_checkpoint', 'get_rng_state', 'set_rng_state']


def save_atomic(obj: Any, path: str) -> None:
    """torch.save through `write_atomic`: a crash mid-write never leaves a truncated checkpoint."""
    write_atomic(path, lambda f: torch.save(obj, f))


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


def write_atomic(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on `path.tmp`, fsync it, rename it over `path` and fsync the folder: whenever the process
    or the machine dies, `path` is either the previous complete file or the new complete file."""
    tmp = f'{path}.tmp'
    with open(tmp, 'wb') as f:
        write(_kill_during_write_for_tests(f, path))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable (POSIX; not possible on Windows)
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Fault-injection hook for the tests: ZOO_TEST_KILL_DURING_SAVE='PATTERN:N' SIGKILLs this process in the middle of
# its N-th atomic write to a file whose name matches PATTERN (fnmatch, e.g. 'last.pth:2' or 'iter_*.pth:2'),
# once KILL_AFTER_BYTES bytes of the temporary file are on disk.
KILL_AFTER_BYTES = 4096
_writes_seen: Dict[str, int] = {}


class _KillAfter:
    def __init__(self, f: BinaryIO, limit: int):
        self.f, self.left = f, limit

    def write(self, data) -> int:
        data = memoryview(data).cast('B')
        if len(data) >= self.left:
            self.f.write(data[:self.left])
            self.f.flush()
            os.fsync(self.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _kill_during_write_for_tests(f: BinaryIO, path: str):
    spec = os.environ.get('ZOO_TEST_KILL_DURING_SAVE')
    if not spec:
        return f
    pattern, nth = spec.rsplit(':', 1)
    if not fnmatch.fnmatch(os.path.basename(path), pattern):
        return f
    _writes_seen[pattern] = _writes_seen.get(pattern, 0) + 1
    return _KillAfter(f, KILL_AFTER_BYTES) if _writes_seen[pattern] == int(nth) else f
