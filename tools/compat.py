#!/usr/bin/env python
"""Does every registered model survive torch.compile, ONNX export (dynamic batch) and TorchScript? -> docs/COMPAT.md

    python tools/compat.py                                   # every registered model
    python tools/compat.py 'zoo_swin_*' --compile-backend inductor
    python tools/compat.py --smallest-per-family --img-size 224 --json docs/compat.json

Each model (random weights) is compared with eager PyTorch: torch.compile at two input sizes with graph
breaks counted by torch._dynamo.explain; ONNX exported with a dynamic batch dimension and run in
onnxruntime at other batch sizes; torch.jit.trace checked at another batch size (torch.jit.script tried
too). Failures name the error, its root cause and the deepest zoo source line. Results are written after
every model, and models already in --json are skipped unless --redo (so a long run can be resumed; with
--redo --checks torchscript only that column is refreshed). docs/compat_notes.md (hand-written: root causes of
the known failures) is appended to docs/COMPAT.md.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import zoo  # noqa: E402
from zoo.profile import BenchOptions, context  # noqa: E402
from zoo.profile.compat import check_model, format_compat, smallest_per_family  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('patterns', nargs='*', default=['*'], help='shell patterns over the zoo registry')
    p.add_argument('--smallest-per-family', action='store_true')
    p.add_argument('--img-size', type=int, default=224, help='first size; the second is (size-32, size+32)')
    p.add_argument('--compile-backend', default='inductor', help="inductor (default), aot_eager, eager")
    p.add_argument('--compile-dynamic', default='auto', choices=['auto', 'false'],
                   help="auto: torch.compile's default (the second size recompiles with dynamic shapes); "
                        "false: static recompile (dynamic-shape tracing of padded windows can take sympy tens of minutes)")
    p.add_argument('--checks', nargs='+', default=['compile', 'torchscript', 'onnx'])
    p.add_argument('--onnx-exporter', default='auto', choices=['auto', 'dynamo', 'torchscript'],
                   help='auto: the dynamo exporter, falling back to the TorchScript one')
    p.add_argument('--atol', type=float, default=1e-4)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--json', default=str(ROOT / 'docs' / 'compat.json'))
    p.add_argument('--out', default=str(ROOT / 'docs' / 'COMPAT.md'))
    p.add_argument('--redo', action='store_true',
                   help='re-check models already in --json (only the --checks given; the other columns are kept)')
    p.add_argument('--notes', default=str(ROOT / 'docs' / 'compat_notes.md'),
                   help='hand-written markdown (root causes of known failures) appended to --out')
    args = p.parse_args(argv)

    names = list(dict.fromkeys(n for pat in args.patterns for n in sorted(zoo.list_models(pat))))
    if args.smallest_per_family:
        names = smallest_per_family(names)
    if not names:
        p.error('no registered model matches')
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [args.img_size, (args.img_size - 32, args.img_size + 32)]
    import onnx
    import onnxruntime
    options = dict(sizes=sizes, compile_backend=args.compile_backend, atol=args.atol, checks=args.checks,
                   onnx_exporter=args.onnx_exporter, compile_dynamic=None if args.compile_dynamic == 'auto' else False,
                   onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    json_path = Path(args.json)
    done = {}
    if json_path.exists():
        old = json.loads(json_path.read_text())
        if old.get('options', {}).get('sizes') == json.loads(json.dumps(sizes)) and \
                old['options'].get('compile_backend') == args.compile_backend and \
                old['options'].get('compile_dynamic') == options['compile_dynamic']:
            done = {r['model']: r for r in old['results']}
            options['checks'] = list(dict.fromkeys(old['options'].get('checks', []) + args.checks))
    notes = Path(args.notes).read_text() if args.notes and Path(args.notes).exists() else ''

    from tqdm.auto import tqdm
    bar = tqdm(names, desc='compat')
    for name in bar:
        if name in done and not args.redo:
            continue
        bar.set_postfix_str(name)
        try:
            row = check_model(name, sizes, args.checks, args.compile_backend, args.atol, progress=bar,
                              onnx_dynamo={'auto': None, 'dynamo': True, 'torchscript': False}[args.onnx_exporter],
                              compile_dynamic=options['compile_dynamic'])
        except Exception as e:  # building the model failed
            row = {'model': name, 'error': f'{type(e).__name__}: {e}'}
        done[name] = dict(done.get(name, {}), **row)  # --redo --checks X replaces only the X columns
        report = {'context': context(BenchOptions(threads=args.threads)), 'options': options,
                  'results': [done[n] for n in sorted(done)]}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1, default=str) + '\n')
        Path(args.out).write_text(format_compat(report, notes))
    print(Path(args.out).read_text())


if __name__ == '__main__':
    main()
