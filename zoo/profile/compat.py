"""Deployment compatibility of a model: torch.compile, ONNX (dynamic batch, checked with onnxruntime), TorchScript.

Each check returns a dict with `ok`, the numbers it compared (`max_abs_diff` against eager PyTorch) and,
on failure, the error and the first zoo source location in its traceback (`where`: file:line), so a
failure in the shared layers points at the line to fix. Outputs count as equal when
max |out - ref| <= atol * max(1, max |ref|).
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .flops import make_inputs

__all__ = ['check_compile', 'check_onnx', 'check_torchscript', 'check_model', 'format_compat', 'clear_zoo_caches',
           'family_key', 'smallest_per_family']

_ZOO_ROOT = str(Path(__file__).resolve().parents[1])
Size = Tuple[int, int]


def _chain(exc: BaseException) -> List[BaseException]:
    out = [exc]
    while (out[-1].__cause__ or out[-1].__context__) is not None and len(out) < 20:
        out.append(out[-1].__cause__ or out[-1].__context__)
    return out


def _where(exc: BaseException) -> str:
    """Deepest zoo source frame (file:line in function) in the exception chain, else the zoo source line the
    message quotes (TorchScript's compiler reports the offending line in its message, not its traceback),
    else the deepest frame."""
    frames = [f for e in _chain(exc) for f in traceback.extract_tb(e.__traceback__)]
    zoo_frames = [f for f in frames if f.filename.startswith(_ZOO_ROOT) and '/profile/' not in f.filename]
    if not zoo_frames:
        quoted = re.search(r'File "(' + re.escape(_ZOO_ROOT) + r'/[^"]+)", line (\d+)', str(exc))
        if quoted:
            return f'{os.path.relpath(quoted.group(1), os.path.dirname(_ZOO_ROOT))}:{quoted.group(2)}'
    f = (zoo_frames or frames or [None])[-1]
    if f is None:
        return ''
    name = os.path.relpath(f.filename, os.path.dirname(_ZOO_ROOT)) if f.filename.startswith(_ZOO_ROOT) \
        else f.filename.split('site-packages/')[-1]
    return f'{name}:{f.lineno} in {f.name}'


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {msg[0][:300] if msg else ""}'


def _err(exc: BaseException) -> Dict[str, Any]:
    """The error, its root cause (exporters wrap the real reason several times) and where it happened."""
    root = _chain(exc)[-1]
    error = _first_line(exc) + (f' <- root cause {_first_line(root)}' if root is not exc else '')
    return {'ok': False, 'error': error, 'where': _where(exc)}


def _close(out: torch.Tensor, ref: torch.Tensor, atol: float) -> Tuple[bool, float]:
    diff = (out.float() - ref.float()).abs().max().item()
    return diff <= atol * max(1.0, ref.abs().max().item()), diff


def _sizes(sizes) -> List[Size]:
    return [(s, s) if isinstance(s, int) else tuple(s) for s in sizes]


@torch.no_grad()
def check_compile(model: nn.Module, sizes: Sequence = (224, (192, 256)), backend: str = 'inductor',
                  batch_size: int = 2, atol: float = 1e-4, explain: bool = True,
                  fullgraph: bool = False, dynamic: Optional[bool] = None) -> Dict[str, Any]:
    """torch.compile at each size (same compiled module, so the second size is a recompile), graph breaks
    counted with torch._dynamo.explain at the first size. fullgraph=True makes any graph break an error (a
    cheaper proof of 'no graph breaks' than explain, which traces once more). dynamic: torch.compile's flag;
    zoo models compile each image size static whatever it says (Backbone.check_input specializes H and W: symbolic
    sizes through padded windows took inductor minutes of sympy), so it only decides the batch dim."""
    import torch._dynamo as dynamo
    model.eval()
    res: Dict[str, Any] = {'backend': backend, 'sizes': {}}
    sizes = _sizes(sizes)
    dynamo.reset()
    try:
        if explain:
            out = dynamo.explain(model)(make_inputs(model, sizes[0], batch_size))
            res['graph_count'] = out.graph_count
            res['graph_break_count'] = out.graph_break_count
            reasons = []
            for r in out.break_reasons:
                stack = [f for f in (r.user_stack or []) if f.filename.startswith(_ZOO_ROOT)]
                loc = f'{os.path.relpath(stack[-1].filename, os.path.dirname(_ZOO_ROOT))}:{stack[-1].lineno}' \
                    if stack else ''
                reasons.append(f'{r.reason.strip().splitlines()[0][:200]}' + (f' ({loc})' if loc else ''))
            res['break_reasons'] = sorted(set(reasons))
            dynamo.reset()
        compiled = torch.compile(model, backend=backend, fullgraph=fullgraph, dynamic=dynamic)
        res['fullgraph'], res['dynamic'] = fullgraph, dynamic
        ok = True
        for size in sizes:
            x = make_inputs(model, size, batch_size)
            t0 = time.perf_counter()
            y = compiled(x)
            took = time.perf_counter() - t0
            good, diff = _close(y, model(x), atol)
            res['sizes'][f'{size[0]}x{size[1]}'] = {'max_abs_diff': diff, 'equal': good, 'first_call_s': took}
            ok &= good
        res['ok'] = ok
    except Exception as e:
        res.update(_err(e))
    finally:
        dynamo.reset()
    return res


@torch.no_grad()
def check_onnx(model: nn.Module, size=224, export_batch: int = 2, check_batches: Sequence[int] = (1, 3),
               atol: float = 1e-4, opset: Optional[int] = None, dynamo: Optional[bool] = None,
               path: Optional[str] = None) -> Dict[str, Any]:
    """Export with a dynamic batch dimension, run in onnxruntime at other batch sizes, compare to PyTorch.

    dynamo: True (torch.export-based exporter), False (TorchScript-based exporter), None: try the dynamo
    exporter first and fall back to the TorchScript one (the result says which one worked).
    """
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover
        return {'ok': False, 'error': f'onnxruntime not installed ({e}); pip install zoo[tools]', 'where': ''}
    model.eval()
    size = _sizes([size])[0]
    x = make_inputs(model, size, export_batch)
    res: Dict[str, Any] = {}
    tmpdir = tempfile.mkdtemp()
    f = path or os.path.join(tmpdir, 'model.onnx')
    tries = [True, False] if dynamo is None else [dynamo]
    errors = []
    for use_dynamo in tries:
        try:
            kwargs = dict(input_names=['input'], output_names=['output'], dynamic_axes={'input': {0: 'batch'},
                          'output': {0: 'batch'}}, dynamo=use_dynamo)
            if opset:
                kwargs['opset_version'] = opset
            t0 = time.perf_counter()
            with warnings.catch_warnings(), _quiet():
                warnings.simplefilter('ignore')
                if use_dynamo:
                    kwargs.pop('dynamic_axes')
                    kwargs['dynamic_shapes'] = ({0: torch.export.Dim('batch', min=1, max=1024)},)
                torch.onnx.export(model, (x,), f, **kwargs)
            res['exporter'] = 'dynamo' if use_dynamo else 'torchscript'
            res['export_s'] = time.perf_counter() - t0
            break
        except Exception as e:
            errors.append(dict(_err(e), exporter='dynamo' if use_dynamo else 'torchscript'))
        finally:
            if use_dynamo:
                clear_zoo_caches()
    else:
        res.update(errors[-1])
        res['errors'] = errors
        return res
    if errors:
        res['fallback_from'] = errors
    try:
        sess = ort.InferenceSession(f, providers=['CPUExecutionProvider'])
        ok, diffs = True, {}
        for b in check_batches:
            xb = make_inputs(model, size, b)
            out = sess.run(None, {sess.get_inputs()[0].name: xb.numpy()})[0]
            good, diff = _close(torch.from_numpy(out), model(xb), atol)
            diffs[str(b)] = diff
            ok &= good
        res.update(ok=ok, max_abs_diff=diffs, onnx_mb=os.path.getsize(f) / 2 ** 20)
    except Exception as e:
        res.update(_err(e))
    finally:
        if path is None:
            for name in os.listdir(tmpdir):
                os.remove(os.path.join(tmpdir, name))
            os.rmdir(tmpdir)
    return res


class _quiet:
    """Silence stdout chatter of the exporters (they print progress)."""

    def __enter__(self):
        import contextlib
        self._buf = io.StringIO()
        self._cm = contextlib.redirect_stdout(self._buf)
        self._cm.__enter__()

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)


@torch.no_grad()
def check_torchscript(model: nn.Module, size=224, batch_size: int = 2, other_batch: int = 3,
                      atol: float = 1e-4, script: bool = True) -> Dict[str, Any]:
    """torch.jit.trace (checked at the traced and another batch size) and, optionally, torch.jit.script."""
    model.eval()
    size = _sizes([size])[0]
    res: Dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            traced = torch.jit.trace(model, make_inputs(model, size, batch_size), check_trace=False)
        diffs, ok = {}, True
        for b in (batch_size, other_batch):
            xb = make_inputs(model, size, b)
            good, diff = _close(traced(xb), model(xb), atol)
            diffs[str(b)] = diff
            ok &= good
        res['trace'] = {'ok': ok, 'max_abs_diff': diffs}
    except Exception as e:
        res['trace'] = _err(e)
    if script:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                scripted = torch.jit.script(model)
            xb = make_inputs(model, size, batch_size)
            good, diff = _close(scripted(xb), model(xb), atol)
            res['script'] = {'ok': good, 'max_abs_diff': diff}
        except Exception as e:
            res['script'] = _err(e)
    return res


def clear_zoo_caches() -> int:
    """Clear every functools.lru_cache in zoo.layers; returns how many were cleared.

    Non-strict torch.export (what torch.onnx.export(dynamo=True) runs) executes the model's Python with fake
    tensors, so a cached helper that builds tensors (window masks, window orders) caches fake tensors,
    which break every later eager call with the same key. Clearing after an export keeps later checks valid.
    """
    import sys
    n = 0
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not mod_name.startswith('zoo.layers'):
            continue
        for obj in vars(mod).values():
            if callable(getattr(obj, 'cache_clear', None)) and hasattr(obj, 'cache_info'):
                obj.cache_clear()
                n += 1
    return n


def check_model(name: str, sizes: Sequence = (224, (192, 256)), checks: Sequence[str] = ('compile', 'torchscript', 'onnx'),
                compile_backend: str = 'inductor', atol: float = 1e-4, model_kwargs: Optional[Dict[str, Any]] = None,
                progress=None, onnx_dynamo: Optional[bool] = None,
                compile_dynamic: Optional[bool] = None) -> Dict[str, Any]:
    """Every check for one registered model name; returns one result row."""
    import timm
    torch.manual_seed(0)
    row: Dict[str, Any] = {'model': name}
    model = timm.create_model(name, **(model_kwargs or {})).eval()
    for c in checks:
        if progress is not None:
            progress.set_postfix_str(f'{name}: {c}')
        t0 = time.perf_counter()
        if c == 'compile':
            row['compile'] = check_compile(model, sizes, compile_backend, atol=atol, dynamic=compile_dynamic)
        elif c == 'onnx':
            row['onnx'] = check_onnx(model, _sizes(sizes)[0], atol=atol, dynamo=onnx_dynamo)
        elif c == 'torchscript':
            row['torchscript'] = check_torchscript(model, _sizes(sizes)[0], atol=atol)
        else:
            raise ValueError(f'unknown check {c!r}')
        row[c]['seconds'] = time.perf_counter() - t0
    return row


def family_key(name: str) -> str:
    """'zoo_swin_tiny' -> 'zoo_swin'; host x mixer families keep the host: 'zoo_agent_pvt_tiny' -> 'zoo_agent_pvt'."""
    parts = name.split('_')
    # host x mixer families (agent/inline on swin and pvt) count as one family per host
    return '_'.join(parts[:3]) if parts[1] in ('agent', 'inline') else '_'.join(parts[:2])


_SIZE_ORDER = ['mini', 's1', 'tiny', 's12', 's2', 'small', 's24', 's3', 's36', 'medium', 'm36', 's4', 'base', 'm48',
               'large', 'huge']


def _name_rank(name: str) -> float:
    """Rough size rank from the variant name (resolution/extra suffixes rank later)."""
    tokens = name.split('_')[2:]
    rank = min((_SIZE_ORDER.index(t) for t in tokens if t in _SIZE_ORDER), default=len(_SIZE_ORDER))
    return rank + 0.1 * (len(tokens) - 1)


def smallest_per_family(names: Optional[Sequence[str]] = None) -> List[str]:
    """The smallest variant per family (of `names`, default every registered zoo model), by the variant name
    (tiny < small < base ...), then the paper's params. tools/compat.py and tests/test_compat_families.py use it."""
    from zoo.profile.paper import paper_number
    if names is None:
        import zoo
        names = zoo.list_models()
    best = {}
    for name in names:
        n = paper_number(name, 'params_m')
        n = (_name_rank(name), n if n is not None else float('inf'))
        key = family_key(name)
        if key not in best or n < best[key][0]:
            best[key] = (n, name)
    return sorted(v[1] for v in best.values())


def _cell(r: Optional[Dict[str, Any]]) -> str:
    if r is None:
        return '-'
    if r.get('ok'):
        return 'ok'
    return 'FAIL' if 'error' in r else 'MISMATCH'


def format_compat(report: Dict[str, Any], notes: str = '') -> str:
    """Markdown for docs/COMPAT.md from {'context', 'options', 'results'}; `notes` (markdown) is appended."""
    o, ctx = report['options'], report['context']
    lines = [
        '# Compatibility', '',
        'Generated by `tools/compat.py`; do not edit by hand. Each model is built with random weights and '
        f'checked against eager PyTorch (equal: max |diff| <= {o["atol"]} x max(1, max |ref|)).', '',
        f'- torch.compile: backend `{o["compile_backend"]}`, batch 2, input sizes {o["sizes"]} (the second size '
        're-uses the compiled module: dynamo recompiles it, '
        + ('for the static shape (`dynamic=False`)' if o.get('compile_dynamic') is False else 'with dynamic shapes')
        + '); graph breaks from `torch._dynamo.explain` at the first size.',
        f'- ONNX: exported at batch 2 with a dynamic batch dimension (exporter: {o.get("onnx_exporter", "auto")}; '
        'auto = the dynamo exporter, falling back to the TorchScript one), run with onnxruntime (CPU) at batch 1 and 3.',
        '- TorchScript: `torch.jit.trace` at batch 2, checked at batch 2 and 3; `torch.jit.script` as a bonus.', '',
        f'Context: torch {ctx["torch"]}, timm {ctx["timm"]}, onnx {o.get("onnx", "?")}, onnxruntime '
        f'{o.get("onnxruntime", "?")}, {ctx["cpu"]}, {ctx["date_utc"]} UTC.', '',
        '| model | compile | graphs / breaks | compile max diff | ONNX (dyn. batch) | ONNX max diff | trace | script '
        '| seconds (compile / TorchScript / ONNX) |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    failures = []
    for r in report['results']:
        c, x, ts = r.get('compile'), r.get('onnx'), r.get('torchscript') or {}
        gb = f'{c.get("graph_count", "?")} / {c.get("graph_break_count", "?")}' if c else '-'
        cd = ', '.join(f'{k}: {v["max_abs_diff"]:.1e}' for k, v in c.get('sizes', {}).items()) if c else '-'
        exporter = f' ({x["exporter"]})' if x and 'exporter' in x else ''
        xd = ', '.join(f'b{k}: {v:.1e}' for k, v in x.get('max_abs_diff', {}).items()) if x else '-'
        secs = ' / '.join(f'{s["seconds"]:.0f}' if s and 'seconds' in s else '-' for s in (c, r.get('torchscript'), x))
        lines.append(f'| {r["model"]} | {_cell(c)} | {gb} | {cd} | {_cell(x)}{exporter} | {xd} | '
                     f'{_cell(ts.get("trace"))} | {_cell(ts.get("script"))} | {secs} |')
        for key, sub in (('compile', c), ('onnx', x), ('trace', ts.get('trace')), ('script', ts.get('script'))):
            if sub and 'error' in sub:
                failures.append(f'- `{r["model"]}` {key}: {sub["error"]}' + (f' at `{sub["where"]}`' if sub.get('where') else ''))
            if sub and sub.get('fallback_from'):
                for fb in sub['fallback_from']:
                    failures.append(f'- `{r["model"]}` {key}: {fb["exporter"]} exporter failed ({fb["error"]}'
                                    + (f' at `{fb["where"]}`' if fb.get('where') else '') + '); the other one was used')
            if sub and sub.get('break_reasons'):
                for reason in sub['break_reasons']:
                    failures.append(f'- `{r["model"]}` graph break: {reason}')
    if failures:
        lines += ['', '## Failures, fallbacks and graph breaks (as reported)', ''] + failures
    if notes.strip():
        lines += ['', notes.strip()]
    return '\n'.join(lines) + '\n'
