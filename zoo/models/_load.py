"""Reading checkpoint files safely: STAND-IN for the 'sec' helper's module of the same name.

Only what zoo/weights.py and zoo.load_partial need, with the same two functions and signatures; the lead replaces
this file with sec's version (safe globals for mm checkpoints, one clear error per broken file) at merge.

    read_checkpoint_file(path_or_url) -> the object stored in the file (dict), never unpickling code
    read_state_dict(path_or_url)      -> its state dict ({'model': ...} / {'state_dict': ...} unwrapped)
"""
from __future__ import annotations

import os
from typing import Any, Dict

import torch

from ._convert import unwrap

__all__ = ['read_checkpoint_file', 'read_state_dict']


def read_checkpoint_file(path_or_url: str) -> Dict[str, Any]:
    """A .safetensors file by suffix, anything else with torch.load(weights_only=True); URLs via torch.hub's cache."""
    path = str(path_or_url)
    if path.startswith(('http://', 'https://')):
        if path.split('?')[0].endswith('.safetensors'):
            raise ValueError(f'{path}: download .safetensors files first (tools/weights.py fetch)')
        return torch.hub.load_state_dict_from_url(path, map_location='cpu', weights_only=True)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such checkpoint file')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device='cpu')
    return torch.load(path, map_location='cpu', weights_only=True)


def read_state_dict(path_or_url: str) -> Dict[str, torch.Tensor]:
    """The state dict in a checkpoint file (training wrappers and 'module.' prefixes removed)."""
    return unwrap(read_checkpoint_file(path_or_url))
