"""`shape_cache`: lru_cache for functions that build index/mask tensors from sizes; `capturing_graph` and
`eager_inference`, which gate the eager-only inference shortcuts; `DerivedTensors`, a cache of tensors computed
from a module's weights.

A plain lru_cache would keep tensors created while torch.compile or the ONNX dynamo exporter trace the
model on fake tensors, and hand those back to later eager calls. While tracing, the cache is bypassed
(or, with constant_under_export, the tensors are built for real and enter the graph as constants)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch

__all__ = ['shape_cache', 'capturing_graph', 'eager_inference', 'DerivedTensors']


def _tracing() -> bool:
    if torch.compiler.is_compiling():
        return True
    from torch._guards import detect_fake_mode
    return detect_fake_mode() is not None


def capturing_graph() -> bool:
    """True while the model is captured as a graph (TorchScript scripting or tracing, which fvcore's FLOP counter
    uses; dynamo; torch.export) or its ops are recorded by a dispatch mode (torch's FlopCounterMode): eager-only
    shortcuts (folded BatchNorm, batch slices, native kernels) step aside so the graph keeps the model's own ops
    and no weights are frozen into it as constants."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or _tracing()
            or _get_current_dispatch_mode() is not None)


def eager_inference(module: Optional[torch.nn.Module] = None) -> bool:
    """True when `module` (if given) is in eval mode, grad is off and no graph is being captured: where the shared
    layers may take shortcuts that give the same values (to float32 rounding) but are not the plain ops (folded
    BatchNorm, in-place activations, batch slices)."""
    return not (module is not None and module.training) and not torch.is_grad_enabled() and not capturing_graph()


class DerivedTensors:
    """Tensors computed from some source tensors (a conv weight with its BatchNorm folded in, say), rebuilt when a
    source is replaced or changed in place (load_state_dict, an optimizer step, .to()): keyed on each source's
    storage pointer and version counter. Holds no callable, so the module that owns it still pickles. Sources
    created under torch.inference_mode have no version counter (and may change in place unseen): the value is
    rebuilt on every call for those."""

    def __init__(self):
        self.key: Optional[tuple] = None
        self.value: Any = None

    def get(self, build: Callable[[], Any], *sources: Optional[torch.Tensor]) -> Any:
        try:
            key = tuple((t.data_ptr(), t._version) if t is not None else None for t in sources)
        except RuntimeError:  # an inference tensor: no version counter
            return build()
        if key != self.key:
            self.value, self.key = build(), key
        return self.value


def _concrete(args, kwargs) -> bool:
    """True when every argument is a plain Python value (no symbolic size, also inside tuples and lists), so the
    result is a constant."""
    def plain(a):
        if isinstance(a, (tuple, list)):
            return all(plain(x) for x in a)
        return not isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool, torch.Tensor))
    return all(plain(a) for a in (*args, *kwargs.values()))


def shape_cache(maxsize: int = 128, constant_under_export: bool = False):
    """constant_under_export: while torch.compile (dynamo) or torch.export (non-strict; what
    torch.onnx.export(dynamo=True) runs) trace the model, build the tensors for real and use them as constants
    instead of tracing the ops that build them. Needed where those ops have data-dependent output sizes
    (torch.unique): dynamo breaks the graph there and torch.export fails. Arguments must be plain sizes (a
    symbolic size falls back to tracing)."""
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @torch._dynamo.assume_constant_result  # dynamo calls it eagerly and treats the result as a constant
        def constant(*args, **kwargs):
            return cached(*args, **kwargs)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if not _tracing():
                if torch.is_inference_mode_enabled():
                    # built under inference_mode they would be inference tensors, which autograd refuses to save:
                    # an index first built in an inference pass would break every later training step
                    with torch.inference_mode(False):
                        return cached(*args, **kwargs)
                return cached(*args, **kwargs)
            if constant_under_export and _concrete(args, kwargs):
                if torch.compiler.is_dynamo_compiling():
                    return constant(*args, **kwargs)
                from torch._subclasses.fake_tensor import unset_fake_temporarily
                with unset_fake_temporarily():
                    return cached(*args, **kwargs)
            return fn(*args, **kwargs)
        call.cache_clear, call.cache_info = cached.cache_clear, cached.cache_info
        return call
    return wrap
