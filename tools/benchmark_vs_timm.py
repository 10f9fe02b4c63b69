#!/usr/bin/env python
"""zoo vs timm on the same architecture and the same weights, timed interleaved in one run.

    python tools/benchmark_vs_timm.py                          # every registered pair, CPU, batch 8, 224
    python tools/benchmark_vs_timm.py zoo_swin_tiny --threads 2 --batch-size 8 --json out/vs_timm.json
    python tools/benchmark_vs_timm.py --headline --device cuda --amp bf16 --batch-size 64
    python tools/benchmark_vs_timm.py --pool a.json b.json c.json    # several runs' --json, rounds pooled
    python tools/benchmark_vs_timm.py --headline --train --threads 2 --rounds 4 --iters-per-round 2   # training steps
    python tools/benchmark_vs_timm.py --headline --train --grad-checkpointing
    python tools/benchmark_vs_timm.py --headline --compile --threads 2    # both inductor-compiled (warm-up untimed)

For each pair, timm's state_dict is loaded into the zoo model through the zoo checkpoint filter and the
logits must agree within --atol before anything is timed. The ratio is timm's time / zoo's time (> 1: zoo
is faster): the median over rounds that alternate zoo/timm (ABBA), each round's own ratio, so drift cancels.
Each process's peak memory (RSS high-water mark, or CUDA max allocated) is in the table. --train times training
steps (forward + backward + AdamW; fp32, or --amp bf16). --compile compiles both models (inductor) and reports each
one's compile seconds and zoo's graphs, graph breaks and recompiles at a second size (input + 32 px).
"""
import argparse
import fnmatch
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402,F401
from zoo.profile import BenchOptions, add_bench_arguments, dump_json  # noqa: E402
from zoo.profile.vs_timm import (  # noqa: E402
    HEADLINE, TIMM_EQUIVALENTS, compare, format_compare, format_pooled, pool_reports, timm_equivalents)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('models', nargs='*', help='zoo names or patterns (default: every registered pair)')
    p.add_argument('--headline', action='store_true', help="only the issue's set (Swin-T, MaxViT-T, DaViT-T, ...)")
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--batch-size', type=int, default=8)
    add_bench_arguments(p, warmup=2)  # --iters is unused here: see --rounds/--iters-per-round
    p.add_argument('--rounds', type=int, default=6)
    p.add_argument('--iters-per-round', type=int, default=3)
    p.add_argument('--atol', type=float, default=1e-4)
    p.add_argument('--fault-free', action='store_true',
                   help="glibc heap that keeps freed memory in both processes: no page faults, compute alone")
    p.add_argument('--train', action='store_true', help='time training steps (forward + backward + AdamW step)')
    p.add_argument('--grad-checkpointing', action='store_true', help='with --train: both models checkpoint blocks')
    p.add_argument('--json', default=None)
    p.add_argument('--list', action='store_true', help='print the zoo -> timm mapping and exit')
    p.add_argument('--pool', nargs='+', metavar='JSON', default=None,
                   help="time nothing: pool the per-round ratios of earlier runs' --json reports into one table")
    args = p.parse_args(argv)

    if args.pool:
        rows = pool_reports([json.loads(Path(f).read_text()) for f in args.pool])
        print(format_pooled(rows))
        return rows

    pairs = timm_equivalents(registered_only=True)
    if args.list:
        for z, t in {**TIMM_EQUIVALENTS, **timm_equivalents(False)}.items():
            print(f'{z:28s} {t:34s} {"registered" if z in pairs else "missing (skipped)"}')
        return
    if args.headline:
        pairs = {z: t for z, t in pairs.items() if z in HEADLINE}
    if args.models:
        pairs = {z: t for z, t in pairs.items() if any(fnmatch.fnmatch(z, m) for m in args.models)}
    missing = [m for m in args.models if not any(fnmatch.fnmatch(z, m) for z in pairs)]
    for m in missing:
        print(f'skipped {m}: no registered zoo model with a timm equivalent', file=sys.stderr)
    if not pairs:
        p.error('nothing to compare')
    if args.grad_checkpointing and not args.train:
        p.error('--grad-checkpointing needs --train')
    opts = BenchOptions.from_args(args)
    report = compare(pairs, args.img_size, args.batch_size, opts, args.rounds, args.iters_per_round, args.atol,
                     fault_free=args.fault_free, mode='train' if args.train else 'inference',
                     grad_checkpointing=args.grad_checkpointing)
    print(format_compare(report))
    dump_json(report, args.json)
    return report


if __name__ == '__main__':
    main()
