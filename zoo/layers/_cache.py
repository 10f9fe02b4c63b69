"""`shape_cache`: lru_cache for functions that build index/mask tensors from sizes.

A plain lru_cache would keep tensors created while torch.compile or the ONNX dynamo exporter trace the
model on fake tensors, and hand those back to later eager calls. While tracing, the cache is bypassed."""
from __future__ import annotations

import functools

import torch

__all__ = ['shape_cache']


def _tracing() -> bool:
    if torch.compiler.is_compiling():
        return True
    from torch._guards import detect_fake_mode
    return detect_fake_mode() is not None


def shape_cache(maxsize: int = 128):
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return fn(*args, **kwargs) if _tracing() else cached(*args, **kwargs)
        call.cache_clear, call.cache_info = cached.cache_clear, cached.cache_info
        return call
    return wrap
