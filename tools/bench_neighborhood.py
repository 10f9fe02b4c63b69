"""Neighborhood attention speed: zoo's cpu path vs 7x7 window attention (SDPA, same FLOPs) vs natten.na2d;
with --device cuda: window SDPA vs zoo's flex backend vs NATTEN's fused kernels vs zoo's cpu (tiled) path on a GPU.
Then generalized neighborhood attention: 2-D strides (--stride; stride = kernel is blocked attention) and 3-D video
maps (--frames x --video-size^2, kernel --video-kernel x kernel^2, in time causal or not), each block of rows led by
window attention with the same FLOPs (every query attends prod(kernel) keys; causal in time: fewer).

Side by side in one run: time (best of --repeat rounds that run every case once, after a warm-up) and the
memory one call adds at its peak (RSS high-water mark of a fresh process running that call alone). The machine's load matters: compare
rows of one run, not runs.

    python tools/bench_neighborhood.py                     # batch 8, 56x56, 3 heads x 32, kernel 7, 2 threads
    python tools/bench_neighborhood.py --dilation 8 --no-natten
    python tools/bench_neighborhood.py --models            # also DiNAT-T vs Swin-T img/s at 224 (batch 8)
    python tools/bench_neighborhood.py --device cuda       # GPU: bf16, batch 8 ... (--dtype, --backward)
    python tools/bench_neighborhood.py --device cuda --batch 32 --backward --models
    python tools/bench_neighborhood.py --batch 2 --size 28 --dilation 1 --stride 7 --frames 8 --video-size 14
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))


def interleaved_best(fns, repeat: int):
    """Best time of each fn over `repeat` rounds that run every fn once: machine noise hits all rows alike."""
    for fn in fns:
        fn()
    best = [float('inf')] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def peak_mem_mb(case: int) -> float:
    """Memory case `case` adds at its peak, in MiB: run once in a fresh process (so no earlier call's freed
    memory hides it), as RSS high-water mark minus RSS just before the call."""
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], '--memory-of', str(case)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def cuda_time(fn, repeat: int) -> float:
    """Median seconds of `repeat` timed calls (CUDA events), after warm-up calls (torch.compile happens there)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def cuda_peak_mb(fn) -> float:
    """Memory one call adds at its peak (after warm-up), MiB."""
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def gna_cases(args, make, zoo_backends, natten_rows: bool):
    """Stride and 3-D rows as (name, fn) pairs: window attention with the same FLOPs (SDPA, rel-pos bias), then
    zoo's na2d / na3d on each of `zoo_backends` [(label, backend)] with rpb, then (natten_rows) natten's, no rpb.
    `make(*shape)` makes an input on the benchmark's device."""
    from zoo.layers.attention import force_backend, na2d, na3d
    cases = []

    def window(B, sizes, kernel):
        N = math.prod(kernel)
        qw, kw, vw = (make(B * math.prod(s // k for s, k in zip(sizes, kernel)), args.heads, N, args.head_dim)
                      for _ in range(3))
        bias = make(1, args.heads, N, N)
        name = 'x'.join(map(str, kernel))
        cases.append((f'window attention {name} (SDPA, rel-pos bias)',
                      lambda: F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias)))

    def rows(op, B, sizes, kernel, stride, causal, label):
        q, k, v = (make(B, *sizes, args.heads, args.head_dim) for _ in range(3))
        rpb = make(args.heads, *(2 * x - 1 for x in kernel))
        for name, backend in zoo_backends:
            def fn(backend=backend):
                with force_backend(backend, op='neighborhood'):
                    return op(q, k, v, kernel, rpb=rpb, stride=stride, is_causal=causal)
            cases.append((f'{name} {label}, rpb on', fn))
        if natten_rows:
            import natten
            na = getattr(natten, f'na{len(sizes)}d')
            cases.append((f'natten {label}, no rpb',
                          lambda: na(q, k, v, kernel_size=kernel, stride=stride, is_causal=causal)))

    k, S = args.kernel, args.size
    window(args.batch, (S, S), (k, k))
    for stride in args.stride:
        rows(na2d, args.batch, (S, S), (k, k), (stride, stride), False, f'na2d stride {stride}')
    if args.frames:
        T, V, kt = args.frames, args.video_size, args.video_kernel
        kernel = (kt, k, k)
        window(args.video_batch, (T, V, V), kernel)
        for stride, causal in ((1, False), (1, True), (kernel, False)):
            stride = (stride,) * 3 if isinstance(stride, int) else stride
            label = f'na3d {T}x{V}x{V} k{"x".join(map(str, kernel))} stride {"x".join(map(str, stride))}'
            rows(na3d, args.video_batch, (T, V, V), kernel, stride, (causal, False, False),
                 label + (', causal in time' if causal else ''))
    return cases


def main_cuda(args):
    """GPU rows: window attention (SDPA), zoo flex (compiled flex_attention, rpb on/off), natten.na2d (fused, no
    rpb), zoo cpu path (tiled SDPA, runs on any device). --backward times forward + backward."""
    from zoo.layers.attention import force_backend, na2d
    from zoo.layers.attention.neighborhood import natten_available

    if not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but torch.cuda.is_available() is False')
    dev, dtype = torch.device('cuda'), getattr(torch, args.dtype)
    B, S, h, d, k = args.batch, args.size, args.heads, args.head_dim, args.kernel
    grad = args.backward

    def make(*shape):
        return torch.randn(*shape, device=dev, dtype=dtype, requires_grad=grad)

    q, kk, v = (make(B, S, S, h, d) for _ in range(3))
    rpb = torch.randn(h, 2 * k - 1, 2 * k - 1, device=dev, requires_grad=grad)  # fp32 parameter, as in the models
    nw = (S // k) ** 2
    qw, kw, vw = (make(B * nw, h, k * k, d) for _ in range(3))
    bias = torch.randn(1, h, k * k, k * k, device=dev, dtype=dtype)

    def run(fn):
        def call():
            with torch.set_grad_enabled(grad):
                out = fn()
                if grad:
                    out.backward(torch.ones_like(out))
        return call

    def na(backend, dil, use_rpb):
        def fn():
            with force_backend(backend, op='neighborhood'):
                return na2d(q, kk, v, k, dil, rpb=rpb if use_rpb else None)
        return fn

    cases = [(f'window attention {k}x{k} (SDPA, rel-pos bias)',
              run(lambda: F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias)))]
    for dil in args.dilation:
        for use_rpb in (True, False):
            cases.append((f'zoo flex, dilation {dil}, rpb {"on" if use_rpb else "off"}', run(na('flex', dil, use_rpb))))
        if not args.no_natten and natten_available():
            import natten
            cases.append((f'natten.na2d {natten.__version__}, dilation {dil}, no rpb',
                          run(lambda dil=dil: natten.na2d(q, kk, v, kernel_size=k, dilation=dil))))
        cases.append((f'zoo cpu path (tiled SDPA), dilation {dil}, rpb on', run(na('cpu', dil, True))))
    natten_rows = not args.no_natten and natten_available()
    cases += [(name, run(fn)) for name, fn in gna_cases(args, make, [('zoo flex', 'flex'), ('zoo cpu path', 'cpu')],
                                                        natten_rows)]

    mode = 'forward + backward' if grad else 'forward'
    print(f'torch {torch.__version__}, {torch.cuda.get_device_name()}; B={B}, {S}x{S}, {h} heads x {d}, kernel {k}, '
          f'{args.dtype}, {mode}')
    base = None
    for name, fn in cases:
        try:
            t = cuda_time(fn, args.repeat)
            mem = cuda_peak_mb(fn)
        except Exception as e:  # one failing backend (compile error, missing kernel) must not hide the others
            print(f'{name:<52s} failed: {type(e).__name__}: {(str(e).splitlines() or [""])[0][:100]}', flush=True)
            continue
        base = t if name.startswith('window attention') or base is None else base  # ratios: to the block's window row
        print(f'{name:<72s} {t * 1e3:9.3f} ms  {t / base:6.2f}x  peak +{mem:8.1f} MiB', flush=True)

    if args.models:
        import timm
        import zoo  # noqa: F401
        x = torch.randn(args.batch, 3, 224, 224, device=dev)
        for name in ('zoo_dinat_tiny', 'zoo_nat_tiny', 'zoo_swin_tiny'):
            model = timm.create_model(name).to(dev).eval()
            with torch.no_grad(), torch.autocast('cuda', dtype=dtype):
                t = cuda_time(lambda: model(x), args.repeat)
            print(f'{name:<20s} {args.batch / t:8.1f} img/s (batch {args.batch}, 224, {args.dtype} autocast)',
                  flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=56)
    p.add_argument('--heads', type=int, default=3)
    p.add_argument('--head-dim', type=int, default=32)
    p.add_argument('--kernel', type=int, default=7)
    p.add_argument('--dilation', type=int, nargs='+', default=[1, 8])
    p.add_argument('--stride', type=int, nargs='*', default=[2, 7], help='2-D GNA rows (stride <= kernel)')
    p.add_argument('--frames', type=int, default=8, help='3-D rows: frames of the video map (0: no 3-D rows)')
    p.add_argument('--video-size', type=int, default=28, help='3-D rows: height = width of each frame')
    p.add_argument('--video-kernel', type=int, default=2, help='3-D rows: kernel size in time')
    p.add_argument('--video-batch', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--no-natten', action='store_true', help='skip natten.na2d (its CPU path is slow and big)')
    p.add_argument('--models', action='store_true', help='also DiNAT-T and Swin-T img/s at 224 (batch 8)')
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--dtype', default='bfloat16', choices=('float32', 'float16', 'bfloat16'), help='cuda only')
    p.add_argument('--backward', action='store_true', help='cuda only: time forward + backward')
    p.add_argument('--memory-of', type=int, default=None, help=argparse.SUPPRESS)  # the subprocess of peak_mem_mb
    args = p.parse_args()
    if args.device == 'cuda':
        torch.manual_seed(0)
        return main_cuda(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from zoo.layers.attention import force_backend, na2d
    from zoo.layers.attention.neighborhood import natten_available

    B, S, h, d, k = args.batch, args.size, args.heads, args.head_dim, args.kernel
    q, kk, v = (torch.randn(B, S, S, h, d) for _ in range(3))
    rpb = torch.randn(h, 2 * k - 1, 2 * k - 1)
    # window attention with the same FLOPs: k x k windows, (1, heads, N, N) relative position bias
    nw = (S // k) ** 2
    qw, kw, vw = (torch.randn(B * nw, h, k * k, d) for _ in range(3))
    bias = torch.randn(1, h, k * k, k * k)

    cases = [(f'window attention {k}x{k} (SDPA, rel-pos bias)',
              lambda: F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias))]
    for dil in args.dilation:
        for use_rpb in (True, False):
            cases.append((f'zoo na2d cpu, dilation {dil}, rpb {"on" if use_rpb else "off"}',
                          lambda dil=dil, use_rpb=use_rpb: na2d(q, kk, v, k, dil, rpb=rpb if use_rpb else None)))
    natten_rows = not args.no_natten and natten_available()
    if natten_rows:
        import natten
        warnings.simplefilter('ignore')
        for dil in args.dilation:
            cases.append((f'natten.na2d {natten.__version__} (cpu), dilation {dil}, no rpb',
                          lambda dil=dil: natten.na2d(q, kk, v, kernel_size=k, dilation=dil)))
    cases += gna_cases(args, torch.randn, [('zoo cpu', 'cpu')], natten_rows)

    with torch.no_grad(), force_backend('cpu', op='neighborhood'):
        if args.memory_of is not None:
            from zoo.profile.speed import _rss_status
            gc.collect()
            base = _rss_status()['VmRSS']
            cases[args.memory_of][1]()
            print((_rss_status()['VmHWM'] - base) / 2 ** 20)  # not ru_maxrss: Linux keeps it across exec
            return
        print(f'torch {torch.__version__}, {args.threads} threads; B={B}, {S}x{S}, {h} heads x {d}, kernel {k}, fp32')
        times = interleaved_best([fn for _, fn in cases], args.repeat)
        base = times[0]
        for i, ((name, fn), t) in enumerate(zip(cases, times)):
            base = t if name.startswith('window attention') else base  # ratios: to the block's window attention row
            print(f'{name:<72s} {t * 1e3:9.1f} ms  {t / base:5.2f}x  peak +{peak_mem_mb(i):7.1f} MiB', flush=True)

    if args.models:
        import timm
        import zoo  # noqa: F401
        x = torch.randn(8, 3, 224, 224)
        names = ('zoo_dinat_tiny', 'zoo_swin_tiny')
        models = [timm.create_model(name).eval() for name in names]
        with torch.no_grad():
            times = interleaved_best([lambda m=m: m(x) for m in models], max(1, args.repeat // 2))
        for name, t in zip(names, times):
            print(f'{name:<20s} {8 / t:7.1f} img/s (batch 8, 224, {args.threads} threads, fp32)', flush=True)
    print(f'max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')


if __name__ == '__main__':
    main()
