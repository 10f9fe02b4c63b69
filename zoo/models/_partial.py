"""Partial initialisation: load every tensor of a checkpoint that fits a model and say what happened to the rest.

For fine-tuning a related architecture from its parent's weights (Agent-Swin / InLine-Swin from Swin, Agent-PVT
from PVT, a detection backbone at another window size from the classification weights). The checkpoint goes
through the model's family filter first (Agent-Swin's filter is Swin's plus the agent terms, so an authors' Swin
release is renamed and its position tables resampled as for Swin itself), then tensors are matched by name and
shape. Strict loading (every key, every shape) stays the default everywhere else.

    report = zoo.load_partial(model, 'swin_tiny_patch4_window7_224.pth')
    print(report)       # loaded / resampled / newly initialised / ignored
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from ._convert import recording_resamples, resize_rel_pos_tables, unwrap

__all__ = ['LoadReport', 'partial_state_dict', 'load_partial']

Shape = Tuple[int, ...]


@dataclass
class LoadReport:
    """What a partial load did with each tensor (names in the model's layout, after the family filter).

    loaded: taken from the checkpoint as they are; resampled: (name, checkpoint shape, model shape), position
    tables resampled to the model's window / grid; new: (name, why) keeping the model's own initialisation
    (not in the checkpoint, or a shape that cannot be resampled); ignored: checkpoint tensors the model has no
    place for.
    """
    model: str
    loaded: List[str] = field(default_factory=list)
    resampled: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    new: List[Tuple[str, str]] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.resampled) + len(self.new)
        lines = [f'partial load into {self.model}: {len(self.loaded) + len(self.resampled)} of {total} tensors '
                 f'from the checkpoint']
        lines.append(f'  loaded as they are: {len(self.loaded)}')
        lines.append(f'  resampled: {len(self.resampled)}' + ''.join(
            f'\n    {k} {list(a)} -> {list(b)}' for k, a, b in self.resampled[:8]) +
            (f'\n    ... ({len(self.resampled) - 8} more)' if len(self.resampled) > 8 else ''))
        lines.append(f'  newly initialised: {len(self.new)}' + _groups([k for k, _ in self.new], dict(self.new)))
        lines.append(f'  ignored (not in the model): {len(self.ignored)}' + _groups(self.ignored))
        return '\n'.join(lines)


def _groups(keys: List[str], notes: Optional[Dict[str, str]] = None, show: int = 8) -> str:
    """Keys folded over their layer indices ('stages.*.blocks.*.attn.qkv.weight x12'), one per line."""
    if not keys:
        return ''
    notes = notes or {}
    groups: Dict[str, List[str]] = {}
    for k in keys:
        groups.setdefault(re.sub(r'\.\d+\.', '.*.', re.sub(r'\.\d+\.', '.*.', k)), []).append(k)
    out = []
    for pattern, members in list(groups.items())[:show]:
        note = {notes.get(k, '') for k in members}
        note_text = f' ({note.pop()})' if len(note) == 1 and '' not in note else ''
        out.append(f'    {pattern}' + (f' x{len(members)}' if len(members) > 1 else '') + note_text)
    if len(groups) > show:
        out.append(f'    ... ({len(groups) - show} more groups)')
    return '\n' + '\n'.join(out)


def partial_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                       checkpoint_filter: Optional[Callable] = None) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """The tensors of `state_dict` that fit `model` (after `checkpoint_filter(state_dict, model)` and resampling of
    relative position tables), and the report of what fits, what was resampled, what is new and what is unused."""
    state_dict = unwrap(state_dict)
    with recording_resamples() as log:
        if checkpoint_filter is not None:
            state_dict = checkpoint_filter(state_dict, model)
        state_dict = resize_rel_pos_tables(state_dict, model)
    resampled = {k: (old, new) for k, old, new in log}
    own = model.state_dict()
    fits = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    report = LoadReport(model=getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__)
    for k in fits:
        if k in resampled:
            report.resampled.append((k, resampled[k][0], tuple(own[k].shape)))
        else:
            report.loaded.append(k)
    for k, v in own.items():
        if k not in fits:
            why = 'not in the checkpoint' if k not in state_dict else \
                f'checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}'
            report.new.append((k, why))
    report.ignored = [k for k in state_dict if k not in own]
    return fits, report


def load_partial(model: nn.Module, file_or_state_dict: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
                 filter: Union[bool, Callable] = True) -> LoadReport:
    """Load every tensor of a checkpoint (a path, URL or state dict) that fits `model`; return the LoadReport.

    filter: True applies the checkpoint filter of the model's zoo family (authors' / timm layouts -> zoo layout,
    position tables resampled); False matches the names as they are; a callable(state_dict, model) is used instead.
    """
    from ._builder import family_filter
    from ._load import read_state_dict

    if isinstance(file_or_state_dict, (str, os.PathLike)):
        state_dict = read_state_dict(os.fspath(file_or_state_dict))
    else:
        state_dict = dict(file_or_state_dict)
    checkpoint_filter = family_filter(model) if filter is True else (filter or None)
    fits, report = partial_state_dict(state_dict, model, checkpoint_filter)
    model.load_state_dict(fits, strict=False)
    return report
