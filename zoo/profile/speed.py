"""Inference throughput, batch-1 latency, training-step throughput and peak memory of a model.

Every function takes a built model and the measurement options:

    device          'cpu', 'cuda', 'cuda:1', ...
    dtype           'fp32' | 'bf16' | 'fp16': the dtype of weights and inputs (pure low precision)
    amp             None | 'bf16' | 'fp16': torch.autocast around the forward (weights stay fp32)
    channels_last   convert model and inputs to torch.channels_last
    compile         torch.compile the model (mode string or True for the default mode)
    threads         torch.set_num_threads for the measurement (restored afterwards)
    warmup, iters   untimed and timed iterations

Times are wall clock with device synchronisation around each timed iteration; throughput uses the
median iteration. Peak memory: CUDA max allocated (reset before the measurement) on GPU; on CPU the
process RSS high-water mark (VmHWM) reset through /proc/self/clear_refs right before the measurement,
so the number is per measurement, or, where that file is not writable, measured in a fresh subprocess
(resource.getrusage there).
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from .flops import make_inputs

__all__ = [
    'BenchOptions', 'add_bench_arguments', 'prepare_model', 'inference_throughput', 'latency', 'train_throughput', 'peak_memory',
    'num_threads', 'time_iterations', 'train_step', 'process_peak_memory',
]

_DTYPES = {'fp32': torch.float32, 'float32': torch.float32, 'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16,
           'fp16': torch.float16, 'float16': torch.float16}


@dataclass
class BenchOptions:
    device: str = 'cpu'
    dtype: str = 'fp32'
    amp: Optional[str] = None
    channels_last: bool = False
    compile: Union[bool, str] = False
    threads: Optional[int] = None
    warmup: int = 3
    iters: int = 10

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_args(cls, args) -> 'BenchOptions':
        """From argparse arguments added by `add_bench_arguments`."""
        return cls(**{k: getattr(args, k) for k in cls.__dataclass_fields__ if hasattr(args, k)})


def add_bench_arguments(parser, warmup: int = 3, iters: int = 10) -> None:
    """The measurement options of BenchOptions as command-line flags (shared by the tools)."""
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16', 'fp16'])
    parser.add_argument('--amp', default=None, choices=['bf16', 'fp16'])
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--compile', nargs='?', const=True, default=False, help='torch.compile (optionally a mode)')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--warmup', type=int, default=warmup)
    parser.add_argument('--iters', type=int, default=iters)


@contextlib.contextmanager
def num_threads(n: Optional[int]):
    """torch intra-op threads set to `n` inside the block (None: unchanged)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: Optional[str]):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[amp])


def prepare_model(model: nn.Module, opts: BenchOptions, train: bool = False) -> nn.Module:
    """Move/cast/convert (and compile) `model` as `opts` say; returns the (possibly compiled) model."""
    model = model.to(device=opts.device, dtype=_DTYPES[opts.dtype])
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(train)
    if opts.compile:
        mode = opts.compile if isinstance(opts.compile, str) else None
        model = torch.compile(model, mode=mode)
    return model


def _inputs(model: nn.Module, input_size, batch_size: int, opts: BenchOptions) -> torch.Tensor:
    x = make_inputs(model, input_size, batch_size, device=opts.device, dtype=_DTYPES[opts.dtype])
    return x.contiguous(memory_format=torch.channels_last) if opts.channels_last else x


def time_iterations(step: Callable[[], Any], device: Union[str, torch.device], warmup: int, iters: int,
                    progress=None) -> list:
    """Seconds per call of `step()` for `iters` timed calls after `warmup` untimed ones."""
    device = torch.device(device)
    for _ in range(warmup):
        step()
        if progress is not None:
            progress.update(0)
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _summary(times: Sequence[float], batch_size: int) -> Dict[str, float]:
    med = statistics.median(times)
    return {
        'img_per_s': batch_size / med, 'ms_median': 1e3 * med, 'ms_min': 1e3 * min(times),
        'ms_p90': 1e3 * sorted(times)[min(len(times) - 1, int(0.9 * len(times)))],
        'batch_size': batch_size, 'iters': len(times),
    }


def _infer_step(model: nn.Module, x: torch.Tensor, opts: BenchOptions) -> Callable[[], Any]:
    device = torch.device(opts.device)

    def step():
        with torch.inference_mode(), _autocast(device, opts.amp):
            return model(x)
    return step


def inference_throughput(model: nn.Module, input_size=224, batch_size: int = 8,
                         opts: Optional[BenchOptions] = None, **kwargs) -> Dict[str, float]:
    """Images per second of eval-mode forward passes at `batch_size` (kwargs override BenchOptions fields)."""
    opts = _opts(opts, kwargs)
    with num_threads(opts.threads):
        model = prepare_model(model, opts)
        x = _inputs(model, input_size, batch_size, opts)
        return _summary(time_iterations(_infer_step(model, x, opts), opts.device, opts.warmup, opts.iters),
                        batch_size)


def latency(model: nn.Module, input_size=224, opts: Optional[BenchOptions] = None, **kwargs) -> Dict[str, float]:
    """Batch-1 forward latency (ms_median, ms_p90, ms_min)."""
    return inference_throughput(model, input_size, 1, opts, **kwargs)


def _train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor, optimizer, opts: BenchOptions):
    device = torch.device(opts.device)
    scaler = torch.amp.GradScaler(device.type, enabled=opts.amp == 'fp16')

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, opts.amp):
            out = model(x)
            loss = nn.functional.cross_entropy(out.float(), target) if out.ndim == 2 else out.float().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def train_step(model: nn.Module, x: torch.Tensor, opts: BenchOptions, optimizer: str = 'sgd') -> Callable[[], Any]:
    """One training step of the prepared `model` on `x` per call: cross-entropy on fixed random targets (the mean
    output for a model without classes), backward, `optimizer` step ('sgd' with momentum 0.9, or 'adamw'), lr 1e-6."""
    num_classes = getattr(model, 'num_classes', 0) or 1
    target = torch.randint(0, num_classes, (x.shape[0],), device=x.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6) if optimizer == 'adamw' else torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    return _train_step(model, x, target, opt, opts)


def train_throughput(model: nn.Module, input_size=224, batch_size: int = 8, optimizer: str = 'sgd',
                     opts: Optional[BenchOptions] = None, **kwargs) -> Dict[str, float]:
    """Images per second of full training steps (forward + backward + optimizer step) on a copy of `model`."""
    opts = _opts(opts, kwargs)
    with num_threads(opts.threads):
        model = copy.deepcopy(model)
        x = _inputs(model, input_size, batch_size, opts)
        model = prepare_model(model, opts, train=True)
        return _summary(time_iterations(train_step(model, x, opts, optimizer), opts.device, opts.warmup, opts.iters),
                        batch_size)


# --- memory ----------------------------------------------------------------------------------------------
def process_peak_memory(device: Union[str, torch.device] = 'cpu') -> Dict[str, Any]:
    """This process's peak memory so far, MiB: CUDA max allocated on a GPU; on CPU the RSS high-water mark VmHWM
    (per address space, so a spawned process does not inherit its parent's the way ru_maxrss, kept across exec,
    does), ru_maxrss where /proc is missing."""
    device = torch.device(device)
    if device.type == 'cuda':
        return {'peak_mb': torch.cuda.max_memory_allocated(device) / 2 ** 20, 'kind': 'cuda_max_allocated'}
    try:
        return {'peak_mb': _rss_status()['VmHWM'] / 2 ** 20, 'kind': 'cpu_rss_high_water (VmHWM)'}
    except (OSError, KeyError):
        import resource
        return {'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10, 'kind': 'cpu_ru_maxrss'}


def _rss_status() -> Dict[str, int]:
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(('VmRSS:', 'VmHWM:')):
                out[line.split(':')[0]] = int(line.split()[1]) * 1024
    return out


def _can_reset_hwm() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return 'VmHWM' in _rss_status()
    except OSError:
        return False


def _measure_memory(model: nn.Module, input_size, batch_size: int, mode: str, opts: BenchOptions) -> Dict[str, Any]:
    device = torch.device(opts.device)
    with num_threads(opts.threads):
        if mode == 'train':
            model = copy.deepcopy(model)
        x = _inputs(model, input_size, batch_size, opts)
        model = prepare_model(model, opts, train=mode == 'train')
        if mode == 'train':
            step = train_step(model, x, opts)
            step()  # optimizer state exists from here on, as in a real run
        else:
            step = _infer_step(model, x, opts)
            if opts.compile:
                step()
        if device.type == 'cuda':
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step()
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            kind = 'cuda_max_allocated'
        else:
            import gc
            gc.collect()
            if _can_reset_hwm():
                base = _rss_status()['VmRSS']
                step()
                after = _rss_status()
                # the kernel's RSS counters are batched per thread, so the high-water mark can lag
                # the current RSS by a few pages: never report a peak below what was resident
                peak = max(after['VmHWM'], after['VmRSS'], base)
                kind = 'cpu_rss_high_water (VmHWM reset per measurement)'
            else:
                import resource
                base = _rss_status().get('VmRSS', 0)
                step()
                peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, base)
                kind = 'cpu_rss_high_water (ru_maxrss of a fresh subprocess)'
    return {'peak_mb': peak / 2 ** 20, 'base_mb': base / 2 ** 20, 'increase_mb': (peak - base) / 2 ** 20,
            'kind': kind, 'mode': mode, 'batch_size': batch_size}


def _memory_child(queue, model, input_size, batch_size, mode, opts):
    try:
        queue.put(_measure_memory(model, input_size, batch_size, mode, opts))
    except Exception as e:  # pragma: no cover - reported to the parent
        queue.put({'error': f'{type(e).__name__}: {e}'})


def peak_memory(model: nn.Module, input_size=224, batch_size: int = 8, mode: str = 'inference',
                opts: Optional[BenchOptions] = None, **kwargs) -> Dict[str, Any]:
    """Peak memory of one forward pass ('inference') or one training step ('train').

    Returns peak_mb (CUDA max allocated / process RSS high-water), base_mb (allocated / RSS just before),
    increase_mb = peak - base, and which kind of number it is.
    """
    opts = _opts(opts, kwargs)
    if torch.device(opts.device).type == 'cuda' or _can_reset_hwm():
        return _measure_memory(model, input_size, batch_size, mode, opts)
    import multiprocessing as mp
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(queue, model.cpu(), input_size, batch_size, mode, opts))
    proc.start()
    result = queue.get()
    proc.join()
    if 'error' in result:
        raise RuntimeError(result['error'])
    return result


def _opts(opts: Optional[BenchOptions], kwargs: Dict[str, Any]) -> BenchOptions:
    opts = copy.copy(opts) if opts is not None else BenchOptions()
    for k, v in kwargs.items():
        if not hasattr(opts, k):
            raise TypeError(f'unknown benchmark option {k!r}')
        setattr(opts, k, v)
    if opts.dtype not in _DTYPES or (opts.amp and opts.amp not in _DTYPES):
        raise ValueError(f'dtype/amp must be one of {sorted(_DTYPES)}')
    return opts
