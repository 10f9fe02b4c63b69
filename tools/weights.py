#!/usr/bin/env python
"""Released weights: list the manifest, fetch a tag, verify a file, convert a checkpoint to timm / safetensors / hf.

    python tools/weights.py list [PATTERN]
    python tools/weights.py fetch zoo_swin_tiny.ms_in1k          # -> $ZOO_CHECKPOINTS or checkpoints/
    python tools/weights.py verify checkpoints/swin_tiny_patch4_window7_224.pth
    python tools/weights.py convert swin_tiny_patch4_window7_224.pth --model zoo_swin_tiny --to hf out/zoo_swin_tiny
    python tools/weights.py manifest --check | --write              # checkpoints/manifest.csv vs the registry

The logic lives in zoo/weights.py; errors are one line `error: ...` (exit status 2).
"""
import argparse
import fnmatch
import os
import sys

# tools/ is sys.path[0] when a tool runs as a script, and tools/profile.py would shadow the standard library's
# `profile` module that torch imports: import from the installed packages only.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from timm.utils import ParseKwargs

from zoo.models._convert import CheckpointMismatchError
from zoo.train import UsageError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest='command', required=True)
    s = sub.add_parser('list', help='tags, layout, input size, top-1, license, whether the file is here')
    s.add_argument('pattern', nargs='?', default='*')
    s = sub.add_parser('fetch', help='download a tag (resumes; checks the sha256 when the manifest has one)')
    s.add_argument('tag')
    s.add_argument('--dir', default=None, help='target folder (default: $ZOO_CHECKPOINTS or checkpoints/)')
    s.add_argument('--no-progress', action='store_true')
    s = sub.add_parser('verify', help='which zoo model/tag a file fits, its sha256 and the manifest\'s verdict')
    s.add_argument('file')
    s.add_argument('--model', nargs='*', default=None, help='only try these models (default: every zoo model)')
    s = sub.add_parser('convert', help='write a checkpoint as the model\'s own (timm-layout) weights')
    s.add_argument('file')
    s.add_argument('--model', required=True)
    s.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    s.add_argument('--to', required=True, choices=('timm', 'safetensors', 'hf'))
    s.add_argument('out', help='output folder')
    s = sub.add_parser('manifest', help='check checkpoints/manifest.csv against the registry, or regenerate it')
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument('--check', action='store_true')
    g.add_argument('--write', action='store_true', help='regenerate; curated columns (mirrors, sha256, top1) kept')
    return p.parse_args(argv)


def run(args) -> int:
    from zoo import weights

    if args.command == 'list':
        rows = [r for r in weights.list_rows() if fnmatch.fnmatch(r[0], args.pattern)]
        header = ('tag', 'layout', 'size', 'top-1', 'license', 'here')
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        for r in [header] + rows:
            print('  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    elif args.command == 'fetch':
        print(weights.fetch(args.tag, args.dir, progress=not args.no_progress))
    elif args.command == 'verify':
        if not os.path.isfile(args.file):
            raise UsageError(f'{args.file}: no such file')
        r = weights.verify(args.file, candidates=args.model)
        print(f'{r["file"]}: {r["tensors"]} tensors, sha256 {r["sha256"]}')
        if r['fits']:
            print(f'  fits: {", ".join(r["fits"])}' + (f' (tags: {", ".join(r["tags"])})' if r['tags'] else ''))
        if r['fits_resampled']:
            print(f'  fits with position tables resampled: {", ".join(r["fits_resampled"])}')
        if not (r['fits'] or r['fits_resampled']):
            print('  fits no zoo model (zoo.load_partial loads what fits)')
        print(f'  {r["status"]}')
    elif args.command == 'convert':
        for path in weights.convert(args.file, args.model, args.to, args.out, **args.model_kwargs):
            print(path)
    elif args.command == 'manifest':
        if args.write:
            print(f'{weights.MANIFEST}: {len(weights.write_manifest())} tags')
        problems = weights.manifest_problems()
        for line in problems:
            print(line)
        return 1 if problems else 0
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (UsageError, CheckpointMismatchError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
