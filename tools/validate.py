#!/usr/bin/env python
"""Top-1 / top-5 accuracy and loss of a checkpoint on an ImageFolder, with the model's eval transform.

    python tools/validate.py --model zoo_swin_tiny --checkpoint swin_tiny_patch4_window7_224.pth --data-dir /imagenet
    python tools/validate.py --checkpoint output/train/best.pth --data-dir data/digits      # tools/train.py output
    python tools/validate.py --model zoo_swin_tiny --pretrained --data-dir /imagenet --img-size 288 --crop-pct 1.0

Weights go through timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...)), so the
family's checkpoint filter reads zoo, timm and the authors' layouts. The transform is the model's pretrained_cfg
(crop_pct, interpolation, mean/std) or, for a tools/train.py checkpoint, the one that training validated with;
--img-size/--crop-pct/--interpolation override it (any resolution: the zoo's models resample their position
tables to the size they are built for).
"""
import argparse
import os
import sys

# tools/ is sys.path[0] when a tool runs as a script, and tools/profile.py would shadow the standard library's
# `profile` module that torch imports: import from the installed packages only.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from timm.utils import ParseKwargs

from zoo.train import UsageError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', default='', help='model name (default: the one a tools/train.py checkpoint names)')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    p.add_argument('--checkpoint', default='', help='zoo, timm, authors\' or tools/train.py checkpoint')
    p.add_argument('--pretrained', action='store_true', help='the model\'s released weights (no --checkpoint)')
    p.add_argument('--use-ema', action='store_true', help='the EMA weights of a tools/train.py checkpoint')
    p.add_argument('--data-dir', required=True, help='ImageFolder root (or the split folder itself)')
    p.add_argument('--split', default='val', help="sub-folder of --data-dir to evaluate ('' = --data-dir itself)")
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('--crop-pct', type=float, default=None)
    p.add_argument('--interpolation', default='')
    p.add_argument('--mean', type=float, nargs=3, default=None)
    p.add_argument('--std', type=float, nargs=3, default=None)
    p.add_argument('--batch-size', '-b', type=int, default=128)
    p.add_argument('--workers', type=int, default=4)
    p.add_argument('--amp', action='store_true', help='bfloat16 autocast')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--device', default='')
    p.add_argument('--results-file', default='', help='also write the results as JSON here')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from zoo.train.validate import run
        run(args)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
