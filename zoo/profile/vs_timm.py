"""zoo vs timm on the same architecture with the same weights, timed alternately in two processes.

For each pair: build timm's model, load its state_dict into the zoo model through the zoo family's
checkpoint filter (the same path a user's timm checkpoint takes: `pretrained=True` with a file overlay,
strict), check the logits agree within `atol`, then time both alternately (ABBA order over rounds) so
that drift in machine load hits both equally. The ratio is the median over rounds of timm's time / zoo's time
within the round (paired: a slow minute slows both sides of its round), with its interquartile range.

Each model runs in a process of its own (the other one waits, idle, while it runs). In one shared process
the two models share glibc's heap: one model's allocation pattern decides how often the other's large
tensors are mapped and page-faulted in afresh, which moved timm's Swin-T/DaViT-T by 10-15% at batch 8.

`fault_free=True` starts both processes with glibc's heap told to keep freed memory (zoo.train.heap, as
tools/train.py sets it on CPU), so neither pays page faults for fresh large tensors: it compares compute alone.
In the default heap timm's DaViT-T page-faults ~220 MB per batch-8 forward (0.15 s of system time), zoo's ~28 MB.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple
from unittest import mock

import torch

from ..train.heap import KEEP_FREED_ENV
from .flops import make_inputs
from .paper import paper_table
from .speed import (
    BenchOptions, _autocast, _inputs, _sync, num_threads, prepare_model, process_peak_memory, train_step)

__all__ = ['TIMM_EQUIVALENTS', 'timm_equivalents', 'load_timm_weights', 'compare_pair', 'compare']

# zoo name -> timm name for the same architecture. Families not registered yet are listed under the names
# the zoo naming rule gives them (zoo_<family>_<variant>); pairs whose zoo model is missing are skipped.
TIMM_EQUIVALENTS: Dict[str, str] = {
    'zoo_swin_tiny': 'swin_tiny_patch4_window7_224',
    'zoo_swin_small': 'swin_small_patch4_window7_224',
    'zoo_swin_base': 'swin_base_patch4_window7_224',
    'zoo_swin_large': 'swin_large_patch4_window7_224',
    'zoo_swin_base_384': 'swin_base_patch4_window12_384',
    'zoo_swin_large_384': 'swin_large_patch4_window12_384',
    'zoo_maxvit_tiny': 'maxvit_tiny_tf_224',
    'zoo_maxvit_small': 'maxvit_small_tf_224',
    'zoo_maxvit_base': 'maxvit_base_tf_224',
    'zoo_maxvit_large': 'maxvit_large_tf_224',
    'zoo_davit_tiny': 'davit_tiny',
    'zoo_davit_small': 'davit_small',
    'zoo_davit_base': 'davit_base',
    'zoo_focalnet_tiny_srf': 'focalnet_tiny_srf',
    'zoo_focalnet_tiny_lrf': 'focalnet_tiny_lrf',
    'zoo_focalnet_small_srf': 'focalnet_small_srf',
    'zoo_focalnet_small_lrf': 'focalnet_small_lrf',
    'zoo_focalnet_base_srf': 'focalnet_base_srf',
    'zoo_focalnet_base_lrf': 'focalnet_base_lrf',
    'zoo_poolformer_s12': 'poolformer_s12',
    'zoo_poolformer_s24': 'poolformer_s24',
    'zoo_poolformer_s36': 'poolformer_s36',
    'zoo_poolformer_m36': 'poolformer_m36',
    'zoo_poolformer_m48': 'poolformer_m48',
    'zoo_shvit_s1': 'shvit_s1',
    'zoo_shvit_s2': 'shvit_s2',
    'zoo_shvit_s3': 'shvit_s3',
    'zoo_shvit_s4': 'shvit_s4',
    'zoo_convit_tiny': 'convit_tiny',
    'zoo_convit_small': 'convit_small',
    'zoo_convit_base': 'convit_base',
}

# zoo-only arguments that make the zoo model the same function as timm's port
ZOO_KWARGS_FOR_TIMM = {'zoo_poolformer_': dict(head_norm='pooled')}  # timm normalises the pooled vector


def zoo_kwargs_for_timm(zoo_name: str) -> Dict[str, Any]:
    return next((dict(kw) for prefix, kw in ZOO_KWARGS_FOR_TIMM.items() if zoo_name.startswith(prefix)), {})


# the headline set: the smallest/typical variant per family timm also has
HEADLINE = ['zoo_swin_tiny', 'zoo_maxvit_tiny', 'zoo_davit_tiny', 'zoo_focalnet_tiny_srf', 'zoo_poolformer_s12',
            'zoo_shvit_s4', 'zoo_convit_tiny']


def timm_equivalents(registered_only: bool = True) -> Dict[str, str]:
    """The mapping above, plus any zoo_name/timm name pair in the paper table; only registered pairs."""
    import timm
    import zoo
    pairs = dict(TIMM_EQUIVALENTS)
    for name, row in paper_table().items():
        timm_name = row.get('timm_name_if_any', '').split('.')[0].strip()
        if timm_name and '?' not in timm_name:
            pairs.setdefault(name, timm_name)
    if registered_only:
        have = set(zoo.list_models())
        pairs = {z: t for z, t in pairs.items() if z in have and timm.is_model(t)}
    return pairs


def load_timm_weights(zoo_name: str, timm_model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """The zoo model `zoo_name` with `timm_model`'s weights, loaded through the zoo checkpoint filter (strict)."""
    import timm
    fd, path = tempfile.mkstemp(suffix='.pth')
    os.close(fd)
    try:
        torch.save(timm_model.state_dict(), path)
        return timm.create_model(zoo_name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)
    finally:
        os.remove(path)


@torch.no_grad()
def max_abs_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    return (a(x).float() - b(x).float()).abs().max().item()


def _environment(env: Dict[str, str]):
    """os.environ updated with `env` inside the block (for the processes started there), restored after."""
    return mock.patch.dict(os.environ, env)


def _compile_counts() -> Dict[str, int]:
    """torch._dynamo's running totals: graphs compiled and graph breaks met."""
    from torch._dynamo.utils import counters
    return {'graphs': counters['stats']['unique_graphs'], 'graph_breaks': sum(counters['graph_break'].values())}


def _timing_worker(conn, model: torch.nn.Module, size, batch_size: int, opts: BenchOptions, mode: str = 'inference',
                   grad_checkpointing: bool = False, second_size=None) -> None:
    """Child process: prepares one model, then answers each request `n` with the seconds of n forward passes
    (mode 'inference') or n training steps (mode 'train': forward + backward + AdamW step), and the request
    'report' with its peak memory, the seconds of its first call (compilation, under opts.compile) and, compiled
    with a `second_size`, the graphs and graph breaks at the first size and the graphs a call at the second size
    adds (recompiles). None ends it. An error is sent back as a string."""
    try:
        with num_threads(opts.threads):
            torch.manual_seed(0)
            if grad_checkpointing:
                model.set_grad_checkpointing(True)
            x = _inputs(model, size, batch_size, opts)
            model = prepare_model(model, opts, train=mode == 'train')
            device = torch.device(opts.device)

            def make_step(x):
                if mode == 'train':
                    return train_step(model, x, opts, optimizer='adamw')
                return lambda: _infer(model, x, device, opts)

            step, first_call_s = make_step(x), None
            for n in iter(conn.recv, None):
                if n == 'report':
                    report = dict(process_peak_memory(device), first_call_s=first_call_s)
                    if opts.compile:
                        report.update(_compile_counts())
                        if second_size is not None:
                            make_step(_inputs(model, second_size, batch_size, opts))()
                            report['second_size_graphs'] = _compile_counts()['graphs'] - report['graphs']
                    conn.send(report)
                    continue
                times = []
                for _ in range(n):
                    _sync(device)
                    t0 = time.perf_counter()
                    step()
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                first_call_s = times[0] if first_call_s is None else first_call_s
                conn.send(times)
    except Exception as e:  # pragma: no cover - reported by the parent
        conn.send(f'{type(e).__name__}: {e}')


def _infer(model, x, device, opts):
    with torch.inference_mode(), _autocast(device, opts.amp):
        return model(x)


def _time_alternately(models: Dict[str, torch.nn.Module], size, batch_size: int, opts: BenchOptions, rounds: int,
                      iters_per_round: int, progress=None, label: str = '', fault_free: bool = False,
                      worker_kwargs: Optional[Dict[str, Dict[str, Any]]] = None
                      ) -> Tuple[Dict[str, List[float]], Dict[str, Dict[str, Any]]]:
    """Seconds per forward pass (or training step) of each model, each in its own process, in ABBA order over
    rounds; and each process's report (peak memory, first call, compile counts: see _timing_worker)."""
    ctx = mp.get_context('spawn')
    workers = {}
    try:
        for key, model in models.items():
            conn, child_conn = ctx.Pipe()
            proc = ctx.Process(target=_timing_worker, args=(child_conn, model, size, batch_size, opts),
                               kwargs=(worker_kwargs or {}).get(key, {}), daemon=True)
            with _environment(KEEP_FREED_ENV if fault_free else {}):
                proc.start()
            workers[key] = (proc, conn)

        def request(key: str, n):
            conn = workers[key][1]
            conn.send(n)
            answer = conn.recv()
            if isinstance(answer, str):
                raise RuntimeError(f'{key} timing process: {answer}')
            return answer

        keys = list(models)
        for key in keys:
            request(key, opts.warmup)
        times: Dict[str, List[float]] = {key: [] for key in keys}
        for r in range(rounds):
            for key in (keys if r % 2 == 0 else keys[::-1]):
                times[key] += request(key, iters_per_round)
            if progress is not None:
                progress.set_postfix_str(f'{label}: round {r + 1}/{rounds}')
        return times, {key: request(key, 'report') for key in keys}
    finally:
        for proc, conn in workers.values():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def compare_pair(zoo_name: str, timm_name: str, input_size=224, batch_size: int = 8,
                 opts: Optional[BenchOptions] = None, rounds: int = 6, iters_per_round: int = 3,
                 atol: float = 1e-4, progress=None, model_kwargs: Optional[Dict[str, Any]] = None,
                 fault_free: bool = False, mode: str = 'inference', grad_checkpointing: bool = False,
                 second_size=None) -> Dict[str, Any]:
    """Parity check then alternating timing (one process per model) of one zoo/timm pair; returns a result row.

    mode 'inference' times eval-mode forward passes, 'train' training steps (forward + backward + AdamW, both models
    with `grad_checkpointing` if set). Each process's peak memory is in the row; compiled (opts.compile), so are each
    model's first-call seconds (compilation) and, for zoo's model, its graph breaks and the graphs a call at
    `second_size` (default: input + 32 px per side) adds."""
    import timm
    if mode not in ('inference', 'train'):
        raise ValueError(f"mode must be 'inference' or 'train', got {mode!r}")
    opts = opts or BenchOptions()
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)[-2:]
    row: Dict[str, Any] = {'zoo': zoo_name, 'timm': timm_name, 'input_size': list(size), 'batch_size': batch_size,
                           'mode': mode, 'grad_checkpointing': grad_checkpointing}
    with num_threads(opts.threads):
        torch.manual_seed(0)
        model_kwargs = dict(model_kwargs or {})
        default = tuple(timm.get_pretrained_cfg(timm_name).input_size[-2:]) if timm.get_pretrained_cfg(timm_name) \
            else size
        if size != default:  # build both for this resolution (timm's Swin/MaxViT fix it at creation)
            model_kwargs.setdefault('img_size', size)
        try:
            timm_model = timm.create_model(timm_name, **model_kwargs).eval()
        except TypeError:  # a fully convolutional timm model (SHViT) takes no img_size: it needs none
            model_kwargs.pop('img_size', None)
            timm_model = timm.create_model(timm_name, **model_kwargs).eval()
        zoo_model = load_timm_weights(zoo_name, timm_model, **model_kwargs, **zoo_kwargs_for_timm(zoo_name)).eval()
        x = make_inputs(zoo_model, size, 2)
        diff = max_abs_diff(zoo_model, timm_model, x)
        row['max_abs_diff'] = diff
        row['identical'] = diff <= atol
        if not row['identical']:
            row['error'] = f'outputs differ by {diff:.3g} > {atol}; not timed'
            return row
        kwargs = dict(mode=mode, grad_checkpointing=grad_checkpointing)
        if opts.compile:
            second_size = tuple(second_size or (s + 32 for s in size))
            row['second_size'] = list(second_size)
        times, reports = _time_alternately({'zoo': zoo_model, 'timm': timm_model}, size, batch_size, opts, rounds,
                                           iters_per_round, progress, zoo_name, fault_free,
                                           {'zoo': dict(kwargs, second_size=second_size), 'timm': kwargs})
        med = {k: statistics.median(v) for k, v in times.items()}
        rounds_ratio = [statistics.median(times['timm'][i:i + iters_per_round]) /
                        statistics.median(times['zoo'][i:i + iters_per_round])
                        for i in range(0, len(times['zoo']), iters_per_round)]
        row.update({
            'zoo_img_s': batch_size / med['zoo'], 'timm_img_s': batch_size / med['timm'],
            'zoo_ms': 1e3 * med['zoo'], 'timm_ms': 1e3 * med['timm'],
            'ratio': statistics.median(rounds_ratio), 'ratio_iqr': _quartiles(rounds_ratio),
            'ratio_rounds': rounds_ratio, 'fault_free': fault_free,
            'zoo_peak_mb': reports['zoo']['peak_mb'], 'timm_peak_mb': reports['timm']['peak_mb'],
            'memory_kind': reports['zoo']['kind'],
        })
        if opts.compile:
            z = reports['zoo']
            row.update({'zoo_compile_s': z['first_call_s'], 'timm_compile_s': reports['timm']['first_call_s'],
                        'zoo_graphs': z['graphs'], 'zoo_graph_breaks': z['graph_breaks'],
                        'zoo_second_size_graphs': z.get('second_size_graphs')})
    return row


def _quartiles(values: List[float]) -> List[float]:
    """[first, third] quartile (the values themselves when there are fewer than two)."""
    if len(values) < 2:
        return [values[0], values[0]]
    q = statistics.quantiles(values, n=4, method='inclusive')
    return [q[0], q[2]]


def compare(pairs: Dict[str, str], input_size=224, batch_size: int = 8, opts: Optional[BenchOptions] = None,
            rounds: int = 6, iters_per_round: int = 3, atol: float = 1e-4, progress: bool = True,
            fault_free: bool = False, mode: str = 'inference', grad_checkpointing: bool = False) -> Dict[str, Any]:
    """Every pair in turn (compare_pair); returns {'context', 'options', 'results'} (see report.context)."""
    from tqdm.auto import tqdm

    from .report import context
    opts = opts or BenchOptions()
    rows = []
    bar = tqdm(pairs.items(), desc='zoo vs timm', disable=not progress, leave=False)
    for zoo_name, timm_name in bar:
        try:
            rows.append(compare_pair(zoo_name, timm_name, input_size, batch_size, opts, rounds, iters_per_round,
                                     atol, progress=bar, fault_free=fault_free, mode=mode,
                                     grad_checkpointing=grad_checkpointing))
        except Exception as e:
            rows.append({'zoo': zoo_name, 'timm': timm_name, 'error': f'{type(e).__name__}: {str(e)[:300]}'})
    return {'context': context(opts), 'options': dict(opts.to_dict(), input_size=input_size, batch_size=batch_size,
                                                      rounds=rounds, iters_per_round=iters_per_round, atol=atol,
                                                      fault_free=fault_free, mode=mode,
                                                      grad_checkpointing=grad_checkpointing),
            'results': rows}


def pool_reports(reports: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Several runs' reports (`compare`'s, e.g. read back from --json) -> one row per pair: each run's img/s and
    ratio, and the median / quartiles of all their per-round ratios together. A single run's ratio moves with the
    machine's drift; pooled rounds from runs at different times are the steadier figure."""
    rows: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for report in reports:
        for r in report['results']:
            if 'ratio' not in r:
                continue
            row = rows.setdefault((r['zoo'], r['timm']), {'zoo': r['zoo'], 'timm': r['timm'], 'zoo_img_s': [],
                                                          'timm_img_s': [], 'run_ratios': [], 'ratio_rounds': []})
            row['zoo_img_s'].append(r['zoo_img_s'])
            row['timm_img_s'].append(r['timm_img_s'])
            row['run_ratios'].append(r['ratio'])
            row['ratio_rounds'] += r['ratio_rounds']
    for row in rows.values():
        row['ratio'], row['ratio_iqr'] = statistics.median(row['ratio_rounds']), _quartiles(row['ratio_rounds'])
    return list(rows.values())


def format_pooled(rows: List[Dict[str, Any]]) -> str:
    runs = max((len(r['run_ratios']) for r in rows), default=0)  # no timed pair: the header alone
    header = ['zoo', 'timm', 'zoo img/s', 'timm img/s', *(f'run {i + 1}' for i in range(runs)),
              'pooled: median of all rounds (IQR)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        cells = [f'{v:.2f}x' for v in r['run_ratios']] + ['-'] * (runs - len(r['run_ratios']))
        lo, hi = r['ratio_iqr']
        lines.append(f'| {r["zoo"]} | {r["timm"]} | {" / ".join(f"{v:.1f}" for v in r["zoo_img_s"])} | '
                     f'{" / ".join(f"{v:.1f}" for v in r["timm_img_s"])} | {" | ".join(cells)} | '
                     f'**{r["ratio"]:.2f}x** ({lo:.2f}-{hi:.2f}, {len(r["ratio_rounds"])} rounds) |')
    return '\n'.join(lines)


def format_compare(report: Dict[str, Any]) -> str:
    o = report['options']
    timed = [r for r in report['results'] if 'ratio' in r]
    memory = any('zoo_peak_mb' in r for r in timed)
    compiled = any('zoo_compile_s' in r for r in timed)
    header = ['zoo', 'timm', 'max abs diff', 'zoo img/s', 'timm img/s', 'zoo / timm', 'IQR', 'per-round ratios']
    if memory:
        header.append('peak MB zoo / timm')
    if compiled:
        second = next((r['second_size'] for r in timed if r.get('second_size')), None)
        header += ['compile s zoo / timm', 'zoo graphs / breaks',
                   f'zoo recompiles at {second[0]}x{second[1]}' if second else 'zoo recompiles']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in report['results']:
        if 'ratio' in r:
            rr = ', '.join(f'{v:.2f}' for v in r['ratio_rounds'])
            lo, hi = r['ratio_iqr']
            cells = [r['zoo'], r['timm'], f'{r["max_abs_diff"]:.2e}', f'{r["zoo_img_s"]:.2f}', f'{r["timm_img_s"]:.2f}',
                     f'**{r["ratio"]:.3f}x**', f'{lo:.2f}-{hi:.2f}', rr]
            if memory:
                cells.append(f'{r["zoo_peak_mb"]:.0f} / {r["timm_peak_mb"]:.0f}' if 'zoo_peak_mb' in r else '-')
            if compiled:
                cells += [f'{r["zoo_compile_s"]:.1f} / {r["timm_compile_s"]:.1f}',
                          f'{r["zoo_graphs"]} / {r["zoo_graph_breaks"]}', str(r.get('zoo_second_size_graphs', '-'))]
        else:
            diff = f'{r["max_abs_diff"]:.2e}' if 'max_abs_diff' in r else '-'
            cells = [r['zoo'], r['timm'], diff, '-', '-', '-', '-', r.get('error', '')] + ['-'] * (len(header) - 8)
        lines.append('| ' + ' | '.join(cells) + ' |')
    ctx = report['context']
    what = ('training steps (forward + backward + AdamW)' + (', grad checkpointing' if o.get('grad_checkpointing')
                                                            else '')) if o.get('mode') == 'train' else 'inference'
    lines += ['', f'Options: {what}, input {o["input_size"]}, batch {o["batch_size"]}, device {o["device"]}, '
              f'dtype {o["dtype"]}, amp {o["amp"]}, channels_last {o["channels_last"]}, compile {o["compile"]}, '
              f'threads {ctx["threads"]}, {o["rounds"]} interleaved rounds x {o["iters_per_round"]} iters (ABBA order), '
              f'warmup {o["warmup"]}' + (', fault-free heap (KEEP_FREED_ENV).' if o.get('fault_free') else '.'),
              f'Context: torch {ctx["torch"]}, timm {ctx["timm"]}, {ctx.get("gpu") or ctx["cpu"]}, '
              f'load average {ctx.get("loadavg")}, {ctx["date_utc"]} UTC.']
    if memory:
        kind = next(r['memory_kind'] for r in timed if 'memory_kind' in r)
        lines.append(f'Peak memory: each timing process\'s {kind}, whole run.')
    if compiled:
        lines.append('Compile s: the first call (compilation and one run); graphs / breaks: what dynamo compiled at the '
                     'input size; recompiles: the graphs one call at the second size adds.')
    return '\n'.join(lines)
