"""The first hour on a GPU: every attention backend against the reference, a bf16 training step of every family,
and zoo vs timm / DiNAT backend throughput, in one run with a time limit per section (tools/gpu_check.py).

Sections (each records its rows; a failing row never stops the run, a section out of time skips its remaining rows):

  backends   every backend of every op in zoo.layers.attention.list_ops() against 'reference' on a few calls per
             op: forward (no grad) and backward (grads of every input), fp32 and bf16; the error is
             max |out - ref| / max(1, max |ref|) against the reference in the same dtype or (bf16) in fp32 on the
             same rounded inputs, whichever is closer, within a tolerance per dtype. A backend that cannot run a call
             (natten with an rpb, native off CPU, ...) is 'n/a'.
  train      one bf16-autocast training step (AdamW) of the smallest variant of every family: loss and every
             gradient finite.
  vs_timm    zoo vs timm (same weights) through zoo.profile.vs_timm.compare, inference and training steps.
  dinat      DiNAT-T img/s with neighborhood attention forced on each backend (flex and the tiled 'cpu' path with
             its rpb; flex and natten with the rpb removed, as NATTEN >= 0.20 has none), inference and training.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .speed import BenchOptions, _autocast, num_threads, time_iterations, train_step

__all__ = ['run_checks', 'format_checks', 'TOLERANCE', 'SECTIONS']

SECTIONS = ('backends', 'train', 'vs_timm', 'dinat')

# max |out - ref| / max(1, max |ref|) allowed per dtype (the closer of the same-dtype and fp32 references: _references)
TOLERANCE = {'fp32': 1e-4, 'bf16': 3e-2}
_DTYPE = {'fp32': torch.float32, 'bf16': torch.bfloat16}


class Budget:
    """Seconds left to a section: `expired` once its limit has passed."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.end


# --- backends against the reference -----------------------------------------------------------------------
def _calls(quick: bool) -> Dict[str, List[Tuple[str, Callable]]]:
    """op -> [(label, make(generator, device) -> (args, kwargs))], fp32 tensors; float tensors get gradients."""
    def randn(g, device, *shape):
        return torch.randn(*shape, generator=g).to(device)

    def dense(bias_shape, q_shape):
        def make(g, device):
            q, k, v = (randn(g, device, *q_shape) for _ in range(3))
            bias = None if bias_shape is None else randn(g, device, *bias_shape)
            return (q, k, v), dict(bias=bias)
        return make

    def neighborhood(H, W, kernel, dilation, rpb, stride=1, causal=False, T=None):
        """2-D (or 3-D with T frames, kernel 3 in time) neighborhood attention, stride / causal on every axis."""
        def make(g, device):
            spatial, kernel_size = ((H, W), (kernel,) * 2) if T is None else ((T, H, W), (3, kernel, kernel))
            nd = len(spatial)
            q, k, v = (randn(g, device, 2, *spatial, 2, 16) for _ in range(3))
            table = randn(g, device, 2, *(2 * x - 1 for x in kernel_size)) if rpb else None
            return (q, k, v, kernel_size, (1,) * (nd - 2) + (dilation,) * 2, table, 16 ** -0.5,
                    (1,) * (nd - 2) + (stride,) * 2, (causal,) * nd), {}
        return make

    def routing(g, device):
        q, k, v = (randn(g, device, 2, 14, 14, 32) for _ in range(3))
        return (q, k, v), dict(n_win=7, topk=4, num_heads=2)

    def gpsa(g, device):
        q, k, v = (randn(g, device, 2, 2, 49, 16) for _ in range(3))
        return (q, k, v, randn(g, device, 2, 49, 49), randn(g, device, 2)), {}

    calls = {
        'dense': [('self 49 tokens + bias', dense((3, 49, 49), (2, 3, 49, 16))),
                  ('windows + mask', dense((4, 1, 49, 49), (2, 4, 3, 49, 16))),
                  ('256 tokens', dense(None, (2, 2, 256, 32)))],
        # few kernel sizes: each (kernel, rpb on/off, dtype) is a flex compile (forward and backward) on a GPU
        'neighborhood': [('13x11 k5 d2 rpb', neighborhood(13, 11, 5, 2, True)),
                         ('28x28 k7 d4 rpb', neighborhood(28, 28, 7, 4, True)),
                         ('28x28 k7 d1', neighborhood(28, 28, 7, 1, False)),
                         ('28x28 k7 stride 7 (blocked)', neighborhood(28, 28, 7, 1, False, stride=7)),
                         ('6x14x14 k3x5x5 d1x2x2 stride 1x2x2 causal rpb',
                          neighborhood(14, 14, 5, 2, True, stride=2, causal=True, T=6))],
        'routing': [('14x14 7x7 regions top-4', routing)],
        'gpsa': [('49 tokens', gpsa)],
    }
    if quick:  # one call per op: each compiled flex call on CPU is an inductor compile
        calls = {op: c[:1] for op, c in calls.items()}
    return calls


def _cast(args, kwargs, dtype, grad: bool):
    def conv(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.to(dtype).detach().requires_grad_(grad)
        return t
    return [conv(a) for a in args], {k: conv(v) for k, v in kwargs.items()}


def _leaves(args, kwargs) -> List[torch.Tensor]:
    return [t for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor) and t.requires_grad]


def _error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return ((out - ref).abs().max() / ref.abs().max().clamp(min=1)).item()


def _run_op(op, backend, args, kwargs, grad: bool):
    """(output, grads of every input) of one forced call; grads of sum(out * w) with a fixed weight."""
    if not grad:
        with torch.no_grad():
            return op(*args, backend=backend, **kwargs), []
    out = op(*args, backend=backend, **kwargs)
    w = torch.linspace(-1, 1, out.shape[-1], device=out.device, dtype=torch.float32)
    return out, list(torch.autograd.grad((out.float() * w).sum(), _leaves(args, kwargs), allow_unused=True))


# SDPA's CUDA kernels, each forced in turn: which of them zoo's calls (biases, window masks, head sizes) can use
_SDPA_KERNELS = ('FLASH_ATTENTION', 'EFFICIENT_ATTENTION', 'CUDNN_ATTENTION')


def _variants(op_name: str, backends: List[str], device: torch.device) -> List[Tuple[str, Optional[str]]]:
    """(backend, forced SDPA kernel or None) for every backend but the reference; on CUDA the dense op's 'sdpa'
    also runs with each of SDPA's kernels forced."""
    out = []
    for backend in backends:
        if backend == 'reference':
            continue
        out.append((backend, None))
        if op_name == 'dense' and backend == 'sdpa' and device.type == 'cuda':
            out += [(backend, k) for k in _SDPA_KERNELS]
    return out


def _sdpa_kernel(name: Optional[str]):
    from contextlib import nullcontext
    if name is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(getattr(SDPBackend, name))


def _references(op, args, kwargs):
    """The reference's (output, grads) on these inputs in their dtype and, for low precision, in fp32 too: a backend
    passes when it is close to either. The same-dtype reference shares the backend's rounding in discrete steps
    (routing's region selection), which fp32 would not; but its bf16 reductions (a 7x7 rpb's gradient sums every
    query) are themselves worse than a backend that accumulates in fp32, which only the fp32 reference shows."""
    refs = [_run_op(op, 'reference', args, kwargs, grad=True)]
    if any(t.dtype != torch.float32 for t in _leaves(args, kwargs)):
        refs.append(_run_op(op, 'reference', *_cast(args, kwargs, torch.float32, grad=True), grad=True))
    return refs


def check_backends(device: torch.device, dtypes: List[str], quick: bool, budget: Budget, log) -> List[Dict]:
    from zoo.layers.attention import get_op, list_ops
    rows = []
    calls = _calls(quick)
    for op_name, backends in list_ops().items():
        op = get_op(op_name)
        for label, make in calls.get(op_name, []):
            for dtype in dtypes:
                g = torch.Generator().manual_seed(0)
                base_args, base_kwargs = make(g, device)
                refs = None  # the references of this call and dtype, computed once for all its backends
                for backend, sdpa_kernel in _variants(op_name, backends, device):
                    row = {'op': op_name, 'backend': backend + (f'[{sdpa_kernel}]' if sdpa_kernel else ''),
                           'call': label, 'dtype': dtype}
                    rows.append(row)
                    if budget.expired:
                        row['status'] = 'skipped (section time limit)'
                        continue
                    args, kwargs = _cast(base_args, base_kwargs, _DTYPE[dtype], grad=False)
                    grad_args, grad_kwargs = _cast(base_args, base_kwargs, _DTYPE[dtype], grad=True)
                    if not op.backends[backend].runs(*args, **kwargs):
                        row['status'] = 'n/a'
                        continue
                    if quick and backend == 'flex' and device.type == 'cpu':
                        row['status'] = 'skipped (quick: an inductor compile; tests/test_nat.py holds it on CPU)'
                        continue
                    t0 = time.perf_counter()
                    try:
                        refs = refs or _references(op, grad_args, grad_kwargs)
                        with _sdpa_kernel(sdpa_kernel):
                            out, _ = _run_op(op, backend, args, kwargs, grad=False)
                        row['forward_error'] = min(_error(out, ref) for ref, _ in refs)
                        if backend == 'flex' and device.type != 'cuda':
                            row['backward'] = 'CUDA only (torch has no flex backward on CPU)'
                        elif not op.backends[backend].runs(*grad_args, **grad_kwargs):
                            row['backward'] = 'n/a (inference only)'
                        else:
                            with _sdpa_kernel(sdpa_kernel):
                                _, grads = _run_op(op, backend, grad_args, grad_kwargs, grad=True)
                            row['backward_error'] = min(max(
                                (_error(a, b) for a, b in zip(grads, ref_grads) if a is not None and b is not None),
                                default=0.) for _, ref_grads in refs)
                        worst = max(row['forward_error'], row.get('backward_error', 0.))
                        row['status'] = 'ok' if worst <= TOLERANCE[dtype] else f'MISMATCH (tolerance {TOLERANCE[dtype]:g})'
                    except Exception as e:
                        if sdpa_kernel and 'No available kernel' in str(e):
                            row['status'] = f'n/a ({sdpa_kernel} refuses these inputs)'
                        else:
                            row['status'] = f'error: {type(e).__name__}: {(str(e).splitlines() or [""])[0][:200]}'
                    row['seconds'] = time.perf_counter() - t0
                    log(f'  {op_name}/{row["backend"]} {label} {dtype}: {row["status"]} ({row["seconds"]:.1f} s)')
    return rows


# --- a bf16 training step of every family --------------------------------------------------------------------
def check_training(device: torch.device, names: List[str], size: int, batch_size: int, budget: Budget,
                   log) -> List[Dict]:
    import timm
    rows = []
    for name in names:
        row = {'model': name}
        rows.append(row)
        if budget.expired:
            row['status'] = 'skipped (section time limit)'
            continue
        t0 = time.perf_counter()
        try:
            torch.manual_seed(0)
            model = timm.create_model(name).to(device).train()
            x = torch.randn(batch_size, 3, size, size, device=device)
            target = torch.randint(0, model.num_classes, (batch_size,), device=device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(x)
                loss = torch.nn.functional.cross_entropy(out.float(), target)
            loss.backward()
            bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            opt.step()
            row.update(loss=loss.item(), output_dtype=str(out.dtype).replace('torch.', ''),
                       params_without_grad=sum(p.grad is None for p in model.parameters()),
                       nonfinite_grads=bad[:5])
            row['status'] = 'ok' if torch.isfinite(loss) and not bad else 'NON-FINITE'
        except Exception as e:
            row['status'] = f'error: {type(e).__name__}: {(str(e).splitlines() or [""])[0][:200]}'
        row['seconds'] = time.perf_counter() - t0
        log(f'  {name}: {row["status"]} ({row["seconds"]:.1f} s)')
    return rows


# --- zoo vs timm -----------------------------------------------------------------------------------------------
def check_vs_timm(pairs: Dict[str, str], opts: BenchOptions, size: int, batch_size: int, rounds: int, iters: int,
                  budget: Budget, log, modes=('inference', 'train')) -> List[Dict]:
    from .vs_timm import compare_pair
    rows = []
    for zoo_name, timm_name in pairs.items():  # pair by pair, so the pairs timed within the limit have both modes
        for mode in modes:
            if budget.expired:
                rows.append({'zoo': zoo_name, 'timm': timm_name, 'mode': mode,
                             'error': 'skipped (section time limit)'})
                continue
            t0 = time.perf_counter()
            try:
                # bf16 parity differs from fp32's by design: the weights' equality is checked in fp32 by compare_pair
                row = compare_pair(zoo_name, timm_name, size, batch_size, opts, rounds, iters, mode=mode)
            except Exception as e:
                row = {'zoo': zoo_name, 'timm': timm_name, 'mode': mode,
                       'error': f'{type(e).__name__}: {str(e)[:200]}'}
            rows.append(row)
            ratio = f'{row["ratio"]:.2f}x' if 'ratio' in row else row.get('error')
            log(f'  {zoo_name} vs {timm_name} ({mode}): {ratio} ({time.perf_counter() - t0:.1f} s)')
    return rows


# --- DiNAT-T on each neighborhood backend ---------------------------------------------------------------------
def _without_rpb(model):
    from zoo.layers.attention import NeighborhoodAttention2D
    for m in model.modules():
        if isinstance(m, NeighborhoodAttention2D):
            m.rpb = None
    return model


def check_dinat(device: torch.device, name: str, size: int, batch_size: int, warmup: int, iters: int,
                budget: Budget, log) -> List[Dict]:
    import timm
    from zoo.layers.attention import force_backend
    cases = [('flex', True), ('cpu', True), ('flex', False), ('natten', False)]
    if device.type != 'cuda':  # flex forward on CPU compiles per map size; natten's CPU path is the slow one
        cases = [('cpu', True), ('cpu', False)]
    rows = []
    opts = BenchOptions(device=str(device), amp='bf16', warmup=warmup, iters=iters)
    torch.manual_seed(0)
    base = timm.create_model(name).to(device)
    for backend, rpb in cases:
        model = base if rpb else _without_rpb(timm.create_model(name).to(device))
        x = torch.randn(batch_size, 3, size, size, device=device)
        for mode in ('inference', 'train'):
            row = {'model': name, 'backend': backend, 'rpb': rpb, 'mode': mode}
            rows.append(row)
            if budget.expired:
                row['status'] = 'skipped (section time limit)'
                continue
            try:
                model.train(mode == 'train')
                if mode == 'train':
                    step = train_step(model, x, opts, optimizer='adamw')
                else:
                    def step(model=model):
                        with torch.inference_mode(), _autocast(device, 'bf16'):
                            return model(x)
                with force_backend(backend, op='neighborhood'):
                    times = time_iterations(step, device, opts.warmup, opts.iters)
                row['img_s'] = batch_size / sorted(times)[len(times) // 2]
                row['status'] = 'ok'
            except Exception as e:
                row['status'] = f'error: {type(e).__name__}: {(str(e).splitlines() or [""])[0][:200]}'
            log(f'  {name} {backend} rpb={rpb} {mode}: {row.get("img_s", 0):.1f} img/s {row["status"]}')
    return rows


# --- the run -----------------------------------------------------------------------------------------------------
def run_checks(device: str = 'cuda', quick: bool = False, limits: Optional[Dict[str, float]] = None,
               threads: Optional[int] = None, log=print,
               on_section: Optional[Callable[[Dict[str, Any]], None]] = None,
               sections: Optional[List[str]] = None) -> Dict[str, Any]:
    """Each of `sections` (default: all of SECTIONS) in turn within its time limit (seconds; default
    `default_limits(quick)`); `on_section` gets the report so far after each section (the tool writes it, so a run
    cut short still leaves its rows)."""
    from .compat import smallest_per_family
    from .report import context
    from .vs_timm import HEADLINE, timm_equivalents
    dev = torch.device(device)
    limits = dict(default_limits(quick), **(limits or {}))
    cpu_bf16 = dev.type == 'cpu' and torch.backends.mkldnn.is_available()
    dtypes = ['fp32', 'bf16'] if dev.type == 'cuda' or cpu_bf16 else ['fp32']
    families = smallest_per_family()
    pairs = {z: t for z, t in timm_equivalents().items() if z in HEADLINE}
    if quick:
        families, pairs = ['zoo_shvit_s1'], {'zoo_shvit_s1': 'shvit_s1'}
    ctx = context(BenchOptions(device=device, threads=threads))
    from zoo.layers.attention.neighborhood import _natten
    ctx['natten'] = getattr(_natten(), '__version__', None)
    log(f'{ctx.get("gpu") or ctx.get("cpu")}: torch {ctx["torch"]} (CUDA {ctx.get("cuda")}), timm {ctx["timm"]}, '
        f'natten {ctx["natten"]}, zoo {ctx.get("zoo_commit")}')
    report: Dict[str, Any] = {'context': ctx,
                              'options': {'device': device, 'quick': quick, 'limits': limits, 'dtypes': dtypes,
                                          'sections': sections or list(SECTIONS)}}
    started = time.monotonic()
    with num_threads(threads):
        steps = [
            ('backends', lambda b: check_backends(dev, dtypes, quick, b, log)),
            ('train', lambda b: check_training(dev, families, 64 if quick else 224, 2 if quick else 8, b, log)),
            ('vs_timm', lambda b: check_vs_timm(
                pairs, BenchOptions(device=device, amp='bf16', warmup=1 if quick else 3, threads=threads),
                64 if quick else 224, 2 if quick else 64, 1 if quick else 4, 1 if quick else 5, b, log,
                # quick: training steps only (two processes per mode; inference is the same path, tests/test_profile.py)
                ('train',) if quick else ('inference', 'train'))),
            ('dinat', lambda b: check_dinat(dev, 'zoo_dinat_tiny', 64 if quick else 224, 1 if quick else 64,
                                            1 if quick else 3, 1 if quick else 10, b, log)),
        ]
        for name, fn in (s for s in steps if sections is None or s[0] in sections):
            log(f'[{time.monotonic() - started:6.1f} s] {name} (limit {limits[name]:.0f} s)')
            t0 = time.monotonic()
            report[name] = fn(Budget(limits[name]))
            report.setdefault('seconds', {})[name] = time.monotonic() - t0
            report['failures'] = failures(report)
            if on_section is not None:
                on_section(report)
    report['failures'] = failures(report)
    log(f'[{time.monotonic() - started:6.1f} s] done: {len(report["failures"])} failure(s)')
    return report


def default_limits(quick: bool) -> Dict[str, float]:
    """Seconds per section. A section starts no row past its limit, so a run can exceed the sum by its last rows:
    the full run's limits add up to 7 minutes, leaving one for those (flex compiles, a vs-timm pair's two processes)."""
    if quick:
        return {'backends': 120, 'train': 60, 'vs_timm': 120, 'dinat': 60}
    return {'backends': 140, 'train': 60, 'vs_timm': 160, 'dinat': 60}


def failures(report: Dict[str, Any]) -> List[str]:
    """One line per failed row: mismatched or erroring backends, non-finite or failed training steps, untimed pairs
    (rows skipped for time are not failures)."""
    out = []
    for r in report.get('backends', []):
        if r['status'] != 'ok' and not r['status'].startswith(('n/a', 'skipped')):
            out.append(f'backend {r["op"]}/{r["backend"]} {r["call"]} {r["dtype"]}: {r["status"]}')
    for r in report.get('train', []) + report.get('dinat', []):
        if r['status'] != 'ok' and not r['status'].startswith('skipped'):
            out.append(f'{r["model"]} {r.get("backend", "train step")}: {r["status"]}')
    for r in report.get('vs_timm', []):
        if 'error' in r and not r['error'].startswith('skipped'):
            out.append(f'vs timm {r["zoo"]} ({r.get("mode")}): {r["error"]}')
    return out


def _fmt(v: Optional[float]) -> str:
    return '-' if v is None else f'{v:.1e}'


def format_checks(report: Dict[str, Any]) -> str:
    ctx, o = report['context'], report['options']
    lines = [f'# GPU check: {ctx.get("gpu") or ctx.get("cpu")}, torch {ctx.get("torch")}, timm {ctx.get("timm")}, '
             f'{ctx.get("date_utc")} UTC' + (' (quick)' if o['quick'] else ''), '',
             f'Failures: {len(report["failures"])}', *(f'- {f}' for f in report['failures']), '',
             '## Backends against the reference', '',
             f'Error = max |out - ref| / max(1, max |ref|), ref the reference in the same dtype or in fp32 on the '
             f'same rounded inputs, whichever is closer; tolerance {TOLERANCE}.', '',
             '| op | backend | call | dtype | forward | backward | status |', '|---|---|---|---|---|---|---|']
    for r in report.get('backends', []):
        back = r.get('backward') or _fmt(r.get('backward_error'))
        lines.append(f'| {r["op"]} | {r["backend"]} | {r["call"]} | {r["dtype"]} | {_fmt(r.get("forward_error"))} | '
                     f'{back} | {r["status"]} |')
    lines += ['', '## bf16-autocast training step (AdamW), smallest variant per family', '',
              '| model | loss | output dtype | params without grad | status |', '|---|---|---|---|---|']
    for r in report.get('train', []):
        loss = f'{r["loss"]:.3f}' if 'loss' in r else '-'
        lines.append(f'| {r["model"]} | {loss} | {r.get("output_dtype", "-")} | {r.get("params_without_grad", "-")} | '
                     f'{r["status"]} |')
    lines += ['', '## zoo vs timm (bf16 autocast)', '',
              '| zoo | timm | mode | zoo img/s | timm img/s | zoo / timm | peak MB zoo / timm |', '|---|---|---|---|---|---|---|']
    for r in report.get('vs_timm', []):
        if 'ratio' in r:
            lines.append(f'| {r["zoo"]} | {r["timm"]} | {r["mode"]} | {r["zoo_img_s"]:.1f} | {r["timm_img_s"]:.1f} | '
                         f'**{r["ratio"]:.2f}x** | {r["zoo_peak_mb"]:.0f} / {r["timm_peak_mb"]:.0f} |')
        else:
            lines.append(f'| {r["zoo"]} | {r["timm"]} | {r.get("mode", "-")} | - | - | - | {r.get("error", "")} |')
    lines += ['', '## DiNAT: neighborhood attention backends (bf16 autocast)', '',
              '| model | backend | rpb | mode | img/s | status |', '|---|---|---|---|---|---|']
    for r in report.get('dinat', []):
        img_s = f'{r["img_s"]:.1f}' if 'img_s' in r else '-'
        lines.append(f'| {r["model"]} | {r["backend"]} | {r["rpb"]} | {r["mode"]} | {img_s} | {r["status"]} |')
    secs = ', '.join(f'{k} {v:.0f} s' for k, v in report.get('seconds', {}).items())
    lines += ['', f'Section times: {secs} (limits {o["limits"]}).']
    return '\n'.join(lines)
