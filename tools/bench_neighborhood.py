"""Neighborhood attention speed: zoo's cpu path vs 7x7 window attention (SDPA, same FLOPs) vs natten.na2d.

Side by side in one run: time (best of --repeat after a warm-up) and peak memory of one call (the highest
point of torch CPU tensor bytes allocated minus freed during the call, from torch's memory profiler).
The machine's load matters: compare rows of one run, not runs.

    python tools/bench_neighborhood.py                     # batch 8, 56x56, 3 heads x 32, kernel 7, 2 threads
    python tools/bench_neighborhood.py --dilation 8 --no-natten
    python tools/bench_neighborhood.py --models            # also DiNAT-T vs Swin-T img/s at 224 (batch 8)
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))


def timeit(fn, repeat: int) -> float:
    fn()
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_mem_mb(fn) -> float:
    """Peak bytes held by torch CPU tensors during `fn` (torch's CPU memory profiler), in MiB."""
    from torch.profiler import ProfilerActivity, profile
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    events = sorted((e for e in prof.events() if getattr(e, 'cpu_memory_usage', 0)), key=lambda e: e.time_range.start)
    for e in events:  # allocations (+) and frees (-) in time order
        current += e.cpu_memory_usage
        peak = max(peak, current)
    return peak / 2 ** 20


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=56)
    p.add_argument('--heads', type=int, default=3)
    p.add_argument('--head-dim', type=int, default=32)
    p.add_argument('--kernel', type=int, default=7)
    p.add_argument('--dilation', type=int, nargs='+', default=[1, 8])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--no-natten', action='store_true', help='skip natten.na2d (its CPU path is slow and big)')
    p.add_argument('--models', action='store_true', help='also DiNAT-T and Swin-T img/s at 224 (batch 8)')
    args = p.parse_args()
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

    rows = []

    def bench(name, fn):
        t = timeit(fn, args.repeat)
        m = peak_mem_mb(fn)
        rows.append((name, t * 1e3, m))
        print(f'{name:<44s} {t * 1e3:9.1f} ms  peak {m:8.1f} MiB', flush=True)

    print(f'torch {torch.__version__}, {args.threads} threads; B={B}, {S}x{S}, {h} heads x {d}, kernel {k}, fp32')
    bench(f'window attention {k}x{k} (SDPA, rel-pos bias)',
          lambda: F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias))
    with torch.no_grad():
        for dil in args.dilation:
            for use_rpb in (True, False):
                with force_backend('cpu', op='neighborhood'):
                    bench(f'zoo na2d cpu, dilation {dil}, rpb {"on" if use_rpb else "off"}',
                          lambda: na2d(q, kk, v, k, dil, rpb=rpb if use_rpb else None))
        if not args.no_natten and natten_available():
            import natten
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                for dil in args.dilation:
                    bench(f'natten.na2d {natten.__version__} (cpu), dilation {dil}, no rpb',
                          lambda: natten.na2d(q, kk, v, kernel_size=k, dilation=dil))
    base = rows[0][1]
    print('\nratio to window attention: ' + ', '.join(f'{n.split(",", 1)[-1].strip()} {t / base:.2f}x'
                                                     for n, t, _ in rows[1:]))

    if args.models:
        import timm
        import zoo  # noqa: F401
        x = torch.randn(8, 3, 224, 224)
        for name in ('zoo_dinat_tiny', 'zoo_swin_tiny'):
            model = timm.create_model(name).eval()
            with torch.no_grad():
                t = timeit(lambda: model(x), max(1, args.repeat // 2))
            print(f'{name:<20s} {8 / t:7.1f} img/s (batch 8, 224, {args.threads} threads, fp32)', flush=True)
    print(f'max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')


if __name__ == '__main__':
    main()
