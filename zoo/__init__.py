"""zoo: vision backbones registered in timm as `zoo_<family>_<variant>`.

    import zoo, timm
    model = timm.create_model('zoo_swin_tiny', pretrained=True, features_only=True)
"""
from __future__ import annotations

import fnmatch
from typing import List

import timm

from . import models  # noqa: F401  (registers every model)
from .models._partial import LoadReport, load_partial

__version__ = '0.1.0'
__all__ = ['list_models', 'load_partial', 'LoadReport']


def list_models(pattern: str = '*', pretrained: bool = False) -> List[str]:
    """Names of the registered zoo models matching a shell-style pattern (e.g. 'zoo_swin_*' or '*tiny*')."""
    return fnmatch.filter(timm.list_models('zoo_*', pretrained=pretrained), pattern)
