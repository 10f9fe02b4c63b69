"""Profile models by name: params, MACs, throughput, latency, training speed, memory; as rows, a table, JSON."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn

from .flops import CONVENTION, count_params, flop_report
from .speed import BenchOptions, inference_throughput, latency, num_threads, peak_memory, train_throughput

__all__ = ['MEASURES', 'context', 'profile_model', 'profile_models', 'format_table', 'resolve_names', 'dump_json']

MEASURES = ('params', 'macs', 'infer', 'latency', 'train', 'memory')


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(['git', '-C', str(root), 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except Exception:
        return ''


def context(opts: Optional[BenchOptions] = None) -> Dict[str, Any]:
    """Hardware and software the numbers were measured on."""
    import timm
    import zoo
    opts = opts or BenchOptions()
    ctx = {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S'),
        'python': platform.python_version(), 'torch': torch.__version__, 'timm': timm.__version__,
        'zoo': zoo.__version__, 'zoo_commit': _git_commit(), 'platform': platform.platform(),
        'cpu': _cpu_model(), 'cpu_count': os.cpu_count(),
        'threads': opts.threads or torch.get_num_threads(), 'device': opts.device,
        'mac_convention': CONVENTION,
    }
    try:
        import fvcore
        ctx['fvcore'] = getattr(fvcore, '__version__', '?')
    except ImportError:
        pass
    if torch.device(opts.device).type == 'cuda' and torch.cuda.is_available():
        ctx['gpu'] = torch.cuda.get_device_name(torch.device(opts.device))
        ctx['cuda'] = torch.version.cuda
    try:
        with open('/proc/loadavg') as f:
            ctx['loadavg'] = f.read().split()[:3]
    except OSError:
        pass
    return ctx


def resolve_names(patterns: Sequence[str]) -> List[str]:
    """Model names from names or shell patterns over the zoo registry (exact timm names pass through)."""
    import timm
    import zoo
    names: List[str] = []
    for p in patterns:
        found = zoo.list_models(p) if any(c in p for c in '*?[') else [p]
        if not found:
            found = timm.list_models(p)
        names += [n for n in found if n not in names]
    return names


def profile_model(model: nn.Module, name: str = '', input_size=224, batch_size: int = 8,
                  measures: Iterable[str] = MEASURES, opts: Optional[BenchOptions] = None,
                  train_batch_size: Optional[int] = None, progress=None) -> Dict[str, Any]:
    """One result row for `model`: params (M), GMACs/GFLOPs, img/s, batch-1 ms, train img/s, peak memory (MB)."""
    opts = opts or BenchOptions()
    measures = list(measures)
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ValueError(f'unknown measures {sorted(unknown)}; choose from {MEASURES}')
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)[-2:]
    row: Dict[str, Any] = {'model': name or type(model).__name__, 'input_size': list(size),
                           'batch_size': batch_size}
    train_bs = train_batch_size or batch_size

    def tick(what):
        if progress is not None:
            progress.set_postfix_str(f'{row["model"]}: {what}')

    for m in measures:
        tick(m)
        try:
            if m == 'params':
                row['params_m'] = count_params(model) / 1e6
            elif m == 'macs':
                with num_threads(opts.threads):
                    rep = flop_report(model.float().cpu(), size)
                row.update(gmacs=rep['gmacs'], gflops=rep['gflops'], macs_method=rep['method'],
                           macs_by_operator=rep['by_operator'], macs_uncounted_ops=rep['uncounted_ops'])
            elif m == 'infer':
                r = inference_throughput(model, size, batch_size, opts)
                row.update(infer_img_s=r['img_per_s'], infer_ms_batch=r['ms_median'])
            elif m == 'latency':
                r = latency(model, size, opts)
                row.update(latency_ms=r['ms_median'], latency_ms_p90=r['ms_p90'])
            elif m == 'train':
                r = train_throughput(model, size, train_bs, opts=opts)
                row.update(train_img_s=r['img_per_s'], train_ms_step=r['ms_median'], train_batch_size=train_bs)
            elif m == 'memory':
                r = peak_memory(model, size, batch_size, 'inference', opts)
                row.update(infer_peak_mb=r['peak_mb'], infer_mem_increase_mb=r['increase_mb'], memory_kind=r['kind'])
                if 'train' in measures:
                    r = peak_memory(model, size, train_bs, 'train', opts)
                    row.update(train_peak_mb=r['peak_mb'], train_mem_increase_mb=r['increase_mb'])
        except Exception as e:  # one failing measurement should not lose the others
            row.setdefault('errors', {})[m] = f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
        if progress is not None:
            progress.update(1)
    return row


def profile_models(names: Sequence[str], input_size=224, batch_size: int = 8, measures: Iterable[str] = MEASURES,
                   opts: Optional[BenchOptions] = None, train_batch_size: Optional[int] = None,
                   progress: bool = True, model_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Profile every model name; returns {'context': ..., 'options': ..., 'results': [rows]}."""
    import timm
    from tqdm.auto import tqdm
    opts = opts or BenchOptions()
    measures = list(measures)
    rows = []
    bar = tqdm(total=len(names) * len(measures), desc='profile', disable=not progress, leave=False)
    try:
        for name in names:
            bar.set_postfix_str(f'{name}: build')
            torch.manual_seed(0)
            model = timm.create_model(name, **(model_kwargs or {})).eval()
            rows.append(profile_model(model, name, input_size, batch_size, measures, opts, train_batch_size, bar))
            del model
    finally:
        bar.close()
    return {'context': context(opts), 'options': dict(opts.to_dict(), batch_size=batch_size,
                                                       train_batch_size=train_batch_size or batch_size,
                                                       input_size=input_size, measures=measures),
            'results': rows}


_COLUMNS = [
    ('model', 'model', '{}'), ('params_m', 'params (M)', '{:.2f}'), ('gmacs', 'GMACs', '{:.3f}'),
    ('gflops', 'GFLOPs (=2xMACs)', '{:.3f}'), ('infer_img_s', 'infer img/s', '{:.1f}'),
    ('latency_ms', 'bs1 latency ms', '{:.1f}'), ('train_img_s', 'train img/s', '{:.1f}'),
    ('infer_peak_mb', 'infer peak MB', '{:.0f}'), ('train_peak_mb', 'train peak MB', '{:.0f}'),
]


def format_table(report: Dict[str, Any]) -> str:
    """Markdown table of a `profile_models` report, with the convention and context under it."""
    rows = report['results']
    cols = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    lines = ['| ' + ' | '.join(c[1] for c in cols) + ' |', '|' + '---|' * len(cols)]
    for r in rows:
        lines.append('| ' + ' | '.join(c[2].format(r[c[0]]) if c[0] in r else '-' for c in cols) + ' |')
    ctx, o = report['context'], report['options']
    lines += ['', f'Convention: {ctx["mac_convention"]}.',
              f'Options: input {o["input_size"]}, batch {o["batch_size"]} (train {o["train_batch_size"]}), '
              f'device {o["device"]}, dtype {o["dtype"]}, amp {o["amp"]}, channels_last {o["channels_last"]}, '
              f'compile {o["compile"]}, threads {ctx["threads"]}, warmup {o["warmup"]}, iters {o["iters"]}.',
              f'Context: torch {ctx["torch"]}, timm {ctx["timm"]}, {ctx.get("gpu") or ctx["cpu"]}, '
              f'{ctx["date_utc"]} UTC.']
    for r in rows:
        for m, err in r.get('errors', {}).items():
            lines.append(f'- {r["model"]}: {m} failed: {err}')
    return '\n'.join(lines)


def dump_json(report: Dict[str, Any], path, verbose: bool = True) -> None:
    """Write `report` as JSON to `path` (nothing when path is None)."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1, default=str) + '\n')
    if verbose:
        print(f'wrote {path}')
