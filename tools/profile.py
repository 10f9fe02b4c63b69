#!/usr/bin/env python
"""Profile models: params, MACs/FLOPs (fvcore + attention handles), throughput, latency, training, memory.

    python tools/profile.py zoo_swin_tiny 'zoo_swin_*' --img-size 224 --batch-size 8 --threads 2
    python tools/profile.py zoo_swin_tiny --device cuda --amp bf16 --batch-size 64 --channels-last --compile
    python tools/profile.py zoo_swin_tiny --measures params macs --json out/profile.json

Prints a markdown table (convention: MACs; FLOPs = 2 x MACs) and optionally writes JSON with the
hardware/software context. The library behind it is `zoo.profile`.
"""
import sys

if __name__ != '__main__':
    # A script run from tools/ has tools/ first on sys.path, so `import profile` (done by cProfile, which
    # torch._dynamo imports) finds this file instead of the standard library's profile module. Hand such
    # an import over to the standard library module, so that every script in tools/ keeps working.
    import importlib.util
    import os
    import sysconfig
    _spec = importlib.util.spec_from_file_location('profile', os.path.join(sysconfig.get_paths()['stdlib'],
                                                                          'profile.py'))
    _std = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _std
    _spec.loader.exec_module(_std)
    globals().update({k: v for k, v in vars(_std).items() if not k.startswith('__')})


def main(argv=None):
    import argparse
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import zoo  # noqa: F401  (registers the models)
    from zoo.profile import MEASURES, BenchOptions, add_bench_arguments, dump_json, format_table, profile_models, resolve_names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('models', nargs='+', help='model names or shell patterns over the zoo registry')
    p.add_argument('--img-size', type=int, nargs='+', default=[224], help='H (and W)')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--train-batch-size', type=int, default=None)
    p.add_argument('--measures', nargs='+', default=list(MEASURES), choices=MEASURES)
    add_bench_arguments(p)
    p.add_argument('--json', default=None, help='write the report as JSON here')
    p.add_argument('--no-progress', action='store_true')
    args = p.parse_args(argv)

    names = resolve_names(args.models)
    if not names:
        p.error(f'no model matches {args.models}')
    size = args.img_size[0] if len(args.img_size) == 1 else tuple(args.img_size[:2])
    opts = BenchOptions.from_args(args)
    report = profile_models(names, size, args.batch_size, args.measures, opts, args.train_batch_size,
                            progress=not args.no_progress)
    print(format_table(report))
    dump_json(report, args.json)
    return report


if __name__ == '__main__':
    main()
