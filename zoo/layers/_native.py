"""zoo's native CPU kernels (zoo/csrc/*.cpp): compiled on first use with the system C++ compiler, cached, loaded
through ctypes.

They need Linux on an AVX2 + FMA CPU and a C++ compiler (CXX, default c++). Anything else, or ZOO_NATIVE=0,
and `library()` returns None: the layers then run their PyTorch paths, which give the same values. The shared
object is cached under ZOO_NATIVE_CACHE (default ~/.cache/zoo/native), keyed by the source, the flags and the
compiler, so it builds once per machine (about 3 s) and again only when one of them changes.

`measured(name, fn)` keeps a short measurement of this machine (which backend is fastest where: the dense
attention op's timings) in the same cache, keyed by the CPU, torch and the kernels, so it too runs once per
machine.

The kernels parallelise with OpenMP; linked against libgomp, they share the OpenMP runtime PyTorch has
already loaded (torch ships libgomp.so.1), so they run on torch's thread pool with torch.get_num_threads().
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

__all__ = ['library', 'int64_array', 'measured']

_SOURCES = ('cpu_attention.cpp', 'activations.cpp')
_HEADERS = ('simd.h',)
_FLAGS = ('-O3', '-std=c++17', '-mavx2', '-mfma', '-fopenmp', '-fPIC', '-shared')
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p  # pointers go in as addresses (Tensor.data_ptr(); None is NULL)
_I64P = ctypes.POINTER(ctypes.c_int64)
# every exported function: (name, restype, argtypes)
_SIGNATURES = (
    ('zoo_short_attention_f32', ctypes.c_int,
     [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64P, _I64P, _I64P,
      _PTR, _I64, _I64P, _PTR, ctypes.c_float, ctypes.c_int]),
    ('zoo_window_attention_f32', ctypes.c_int,
     [_PTR, _PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _PTR, _PTR, ctypes.c_float, ctypes.c_int]),
    ('zoo_gelu_tanh_f32', ctypes.c_int, [_PTR, _PTR, _I64, ctypes.c_int]),
    ('zoo_gelu_tanh_backward_f32', ctypes.c_int, [_PTR, _PTR, _PTR, _I64, ctypes.c_int]),
)


def _cpu_ok() -> bool:
    return (platform.system() == 'Linux' and platform.machine() in ('x86_64', 'AMD64')
            and torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'))


def _build(compiler: str, sources, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # build beside the target, then rename: atomic
        target = Path(tmp) / out.name
        subprocess.run([compiler, *_FLAGS, *map(str, sources), '-o', str(target)], check=True,
                       capture_output=True, text=True)
        os.replace(target, out)


def _cache_dir() -> Path:
    return Path(os.environ.get('ZOO_NATIVE_CACHE', Path.home() / '.cache' / 'zoo' / 'native'))


def _sources_key(compiler: str) -> str:
    csrc = Path(__file__).resolve().parents[1] / 'csrc'
    key = hashlib.sha256()
    for part in (*[(csrc / f).read_bytes() for f in _SOURCES + _HEADERS], ' '.join(_FLAGS).encode(),
                 compiler.encode()):
        key.update(part)
    return key.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def library() -> Optional[ctypes.CDLL]:
    """The compiled kernels, or None where they cannot run here (see the module docstring)."""
    if os.environ.get('ZOO_NATIVE', '1') == '0' or not _cpu_ok():
        return None
    compiler = shutil.which(os.environ.get('CXX', 'c++'))
    if compiler is None:
        return None
    csrc = Path(__file__).resolve().parents[1] / 'csrc'
    sources = [csrc / name for name in _SOURCES]
    path = _cache_dir() / _sources_key(compiler) / 'libzoo_cpu.so'
    try:
        if not path.exists():
            _build(compiler, sources, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, 'stderr', '') or e
        warnings.warn(f'zoo: native CPU kernels unavailable, using the PyTorch paths ({detail})')
        return None
    for name, restype, argtypes in _SIGNATURES:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _cpu_name() -> str:
    """The CPU's model name, family and model number (/proc/cpuinfo), '' where not readable."""
    try:
        lines = Path('/proc/cpuinfo').read_text().splitlines()
    except OSError:
        return ''
    fields = ('model name', 'cpu family', 'model', 'flags')
    info = {k.strip(): v.strip() for k, _, v in (line.partition(':') for line in lines) if k.strip() in fields}
    return ' | '.join(info.get(f, '') for f in fields)


def measured(name: str, measure: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """`measure()`'s result (a JSON-able dict), measured once per machine and cached on disk beside the native
    build: keyed by `name`, the CPU (model, family, flags), torch's version and CPU capability, and whether and
    which native kernels load here. A cache file that does not read back is measured again and replaced."""
    key = hashlib.sha256(' | '.join((
        name, _cpu_name(), torch.__version__, torch.backends.cpu.get_cpu_capability(),
        str(library() is not None and _sources_key(shutil.which(os.environ.get('CXX', 'c++')) or '')),
    )).encode()).hexdigest()[:16]
    path = _cache_dir() / 'measured' / f'{name}-{key}.json'
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    # the first call may come from inside a checkpointed forward: its saved-tensor hooks would take the timed
    # steps' tensors as the block's own (and the recompute then saves fewer); identity hooks keep them apart
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        result = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile('w', dir=path.parent, delete=False, suffix='.tmp') as f:
            json.dump(result, f)
        os.replace(f.name, path)  # atomic: a concurrent reader sees the old file or the whole new one
    except OSError as e:
        warnings.warn(f'zoo: could not cache the measurement {name!r} in {path.parent} ({e}); it runs again '
                      'in the next process')
    return result


def int64_array(values) -> ctypes.Array:
    return (ctypes.c_int64 * len(values))(*values)
