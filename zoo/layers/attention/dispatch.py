"""One place that picks an attention backend per call.

Every attention op in the zoo (dense attention, neighborhood attention, ...) is an `AttentionOp`:
a set of named backends, each with a priority and a `supports(*args, **kwargs)` predicate that
looks at the call (device, dtype, whether a bias is passed, whether an optional package imported).
A call runs the highest-priority backend that supports it, unless a backend is forced:

    with force_backend('reference'):            # every op that has a 'reference' backend
        y = model(x)
    with force_backend('cpu', op='neighborhood'):
        ...

or with the environment variable ZOO_ATTN_BACKEND=name (or op=name,op=name). The 'reference'
backend of each op is the plain, readable definition that tests hold every other backend to.

`supports` says whether a backend is a good (fast) choice for the call; a backend may also register `runs`,
the wider set of calls it can execute at all (default: the same as `supports`). Automatic selection uses
`supports`, a forced backend only needs `runs`: e.g. neighborhood attention's 'flex' backend is picked
for CUDA tensors only, but can be forced on CPU tensors, where tests hold it to the reference.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

__all__ = ['AttentionOp', 'force_backend', 'list_ops', 'get_op']

_OPS: Dict[str, 'AttentionOp'] = {}


class _ThreadState(threading.local):
    """Per-thread state, set up by __init__ on each thread's first access. Not lazily in _forced(): torch.compile
    would guard on the missing attribute and recompile the whole model on its second call."""

    def __init__(self):
        self.forced: Dict[str, str] = {}
        for item in filter(None, os.environ.get('ZOO_ATTN_BACKEND', '').split(',')):
            op, _, name = item.rpartition('=')
            self.forced[op or '*'] = name


_local = _ThreadState()


def _forced() -> Dict[str, str]:
    """Backends forced for this thread: {op name or '*': backend name}."""
    return _local.forced


@dataclass
class Backend:
    name: str
    fn: Callable
    priority: int
    supports: Callable[..., bool]
    runs: Callable[..., bool]


class AttentionOp:
    """A named attention op with several interchangeable backends."""

    def __init__(self, name: str, doc: str = ''):
        if name in _OPS:
            raise ValueError(f'attention op {name!r} is defined twice')
        self.name = name
        self.__doc__ = doc
        self.backends: Dict[str, Backend] = {}
        _OPS[name] = self

    def register(self, name: str, priority: int = 0, supports: Optional[Callable[..., bool]] = None,
                 runs: Optional[Callable[..., bool]] = None):
        """Decorator: add `fn` as backend `name`. Higher priority wins among supporting backends.

        `supports(*args, **kwargs)`: the backend is chosen automatically for this call (default: always).
        `runs(*args, **kwargs)`: the backend can execute this call when forced (default: `supports`)."""
        def wrap(fn):
            ok = supports or (lambda *a, **k: True)
            self.backends[name] = Backend(name, fn, priority, ok, runs or ok)
            return fn
        return wrap

    def candidates(self, *args, **kwargs) -> List[str]:
        """Names of the backends that support this call, best first."""
        ok = [b for b in self.backends.values() if b.supports(*args, **kwargs)]
        return [b.name for b in sorted(ok, key=lambda b: -b.priority)]

    def forced(self) -> Optional[str]:
        """The backend of this op forced in this thread (force_backend / ZOO_ATTN_BACKEND), or None."""
        forced = _forced()
        name = forced.get(self.name) or forced.get('*')
        return name if name in self.backends else None

    def select(self, *args, backend: Optional[str] = None, **kwargs) -> str:
        name = backend or self.forced()
        if name is not None and name in self.backends:
            if not self.backends[name].runs(*args, **kwargs):
                raise RuntimeError(f'attention op {self.name!r}: backend {name!r} does not support this call')
            return name
        best = self.candidates(*args, **kwargs)
        if not best:
            raise RuntimeError(f'attention op {self.name!r}: no backend supports this call')
        return best[0]

    def __call__(self, *args, backend: Optional[str] = None, **kwargs):
        return self.backends[self.select(*args, backend=backend, **kwargs)].fn(*args, **kwargs)

    def __repr__(self):
        return f'AttentionOp({self.name!r}, backends={list(self.backends)})'


@contextmanager
def force_backend(name: str, op: Optional[str] = None):
    """Run `op` (or every op that has a backend `name`) on backend `name` inside the block."""
    forced = _forced()
    key = op or '*'
    old = forced.get(key)
    forced[key] = name
    try:
        yield
    finally:
        if old is None:
            forced.pop(key, None)
        else:
            forced[key] = old


def list_ops() -> Dict[str, List[str]]:
    return {name: list(op.backends) for name, op in _OPS.items()}


def get_op(name: str) -> AttentionOp:
    return _OPS[name]
