"""Checkpoint conversion helpers, once: unwrap, rename by pattern table, resample position tables, check fit.

A family's checkpoint filter is then a short table of renames for each foreign layout
(the authors' release, timm's) into the zoo layout.
"""
from __future__ import annotations

import contextlib
import re
from contextvars import ContextVar
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import resize_rel_pos_bias_table

__all__ = ['CheckpointMismatchError', 'unwrap', 'rename', 'drop', 'resize_rel_pos_tables', 'check_fit',
           'recording_resamples', 'note_resampled']

StateDict = Dict[str, torch.Tensor]


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model (another variant, another layout, a broken file)."""


def unwrap(checkpoint: Mapping) -> StateDict:
    """The state dict inside a training checkpoint ({'model': ...}, {'state_dict': ...}), 'module.' stripped."""
    for key in ('model', 'state_dict'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
    return {k[7:] if k.startswith('module.') else k: v for k, v in checkpoint.items()}


def rename(state_dict: StateDict, rules: Sequence[Tuple[str, object]]) -> StateDict:
    """Apply (regex, replacement) rules in order to every key; a replacement may be a function of the match."""
    out = {}
    for k, v in state_dict.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def drop(state_dict: StateDict, patterns: Iterable[str]) -> StateDict:
    """Remove keys matching any pattern (buffers the zoo recomputes: position indices, attention masks)."""
    regex = re.compile('|'.join(patterns))
    return {k: v for k, v in state_dict.items() if not regex.search(k)}


Resampled = Tuple[str, Tuple[int, ...], Tuple[int, ...]]  # key, checkpoint shape, new shape
_resample_log: ContextVar[Optional[List[Resampled]]] = ContextVar('zoo_resample_log', default=None)


@contextlib.contextmanager
def recording_resamples() -> Iterator[List[Resampled]]:
    """Collect (key, checkpoint shape, new shape) for every tensor a checkpoint filter resamples inside the block
    (zoo.load_partial reports them)."""
    log: List[Resampled] = []
    token = _resample_log.set(log)
    try:
        yield log
    finally:
        _resample_log.reset(token)


def note_resampled(key: str, old: torch.Tensor, new: torch.Tensor) -> None:
    """Called by every resampling helper of a checkpoint filter; a no-op outside `recording_resamples`."""
    log = _resample_log.get()
    if log is not None:
        log.append((key, tuple(old.shape), tuple(new.shape)))


def resize_rel_pos_tables(state_dict: StateDict, model: nn.Module, suffix: str = 'relative_position_bias_table'):
    """Resample relative position bias tables to the model's window size where the shapes differ."""
    own = model.state_dict()
    for k, v in state_dict.items():
        if k.endswith(suffix) and k in own and own[k].shape != v.shape:
            module = model.get_submodule(k[:-len(suffix) - 1])
            state_dict[k] = resize_rel_pos_bias_table(v, new_window_size=module.window_size, new_bias_shape=own[k].shape)
            note_resampled(k, v, state_dict[k])
    return state_dict


def check_fit(state_dict: StateDict, model: nn.Module, ignore: Tuple[str, ...] = ('head.',), show: int = 6) -> StateDict:
    """Raise CheckpointMismatchError naming the missing, unexpected and differently shaped keys.

    Classifier keys are left to timm, which adapts or drops them when num_classes differs."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(ignore)}
    theirs = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [k for k in own if k in theirs and own[k].shape != theirs[k].shape]
    if not (missing or unexpected or shapes):
        return state_dict

    def listing(keys, fmt):
        more = f', ... ({len(keys) - show} more)' if len(keys) > show else ''
        return ', '.join(fmt(k) for k in keys[:show]) + more

    lines = [f'checkpoint does not fit {type(model).__name__} '
             f'({getattr(model, "pretrained_cfg", {}).get("architecture", "?")}):']
    if missing:
        lines.append(f'  {len(missing)} missing: ' + listing(missing, lambda k: f'{k} {list(own[k].shape)}'))
    if unexpected:
        lines.append(f'  {len(unexpected)} unexpected: ' + listing(unexpected, lambda k: f'{k} {list(theirs[k].shape)}'))
    if shapes:
        lines.append(f'  {len(shapes)} with other shapes: ' + listing(
            shapes, lambda k: f'{k} checkpoint {list(theirs[k].shape)} vs model {list(own[k].shape)}'))
    lines.append('  is it a checkpoint of another variant, family or layout?')
    raise CheckpointMismatchError('\n'.join(lines))
