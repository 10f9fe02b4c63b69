#!/usr/bin/env python
"""Write scikit-learn's handwritten digits as an ImageFolder (OUT/train/<digit>/*.png, OUT/val/<digit>/*.png).

    python tools/make_digits.py data/digits --size 32
"""
import argparse
import os
import sys

# tools/ is sys.path[0] when a tool runs as a script, and tools/profile.py would shadow the standard library's
# `profile` module that torch imports: import from the installed packages only.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from zoo.train import UsageError
from zoo.train.digits import make_digits


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out', nargs='?', default='data/digits')
    p.add_argument('--size', type=int, default=32, help='side of the upscaled RGB images')
    p.add_argument('--val-fraction', type=float, default=0.2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--force', action='store_true', help='rewrite even when a complete copy exists')
    args = p.parse_args(argv)
    try:
        counts = make_digits(args.out, args.size, args.val_fraction, args.seed, args.force)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'{args.out}: {counts["train"]} train / {counts["val"]} val images, 10 classes, {args.size}x{args.size} RGB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
