"""Command line of tools/train.py; a YAML recipe (`--config`) supplies defaults that the command line overrides.

Recipe keys are the option names with '_' or '-' (e.g. `batch_size: 1024`, `drop-path: 0.2`); an unknown key is
an error, so a typo in a recipe cannot silently fall back to a default. `batch_size` and `lr` are GLOBAL: the batch
is split over the processes torchrun starts and the learning rate is used as given (no automatic scaling), so a
recipe reproduces the paper's setup on any number of GPUs that divides the batch.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import yaml
from timm.utils import ParseKwargs

from . import UsageError

__all__ = ['train_parser', 'parse_train_args', 'load_recipe']


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Train a zoo_* (or any timm) classifier on an ImageFolder.',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--config', default='', help='YAML recipe (configs/cls/*.yaml) giving defaults for these options')

    g = p.add_argument_group('data')
    g.add_argument('--data-dir', default='', help='ImageFolder root with train/ and val/ sub-folders')
    g.add_argument('--dataset', default='', choices=['', 'digits'],
                   help="'digits': scikit-learn's handwritten digits, written to --data-dir (default data/digits) "
                        "if missing")
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='val')
    g.add_argument('--workers', type=int, default=4, help='data loading processes per training process')
    g.add_argument('--img-size', type=int, default=None, help='train/eval resolution (default: the model\'s)')
    g.add_argument('--crop-pct', type=float, default=None, help='eval center-crop fraction (default: the model\'s)')
    g.add_argument('--interpolation', default='', help='eval resize interpolation (default: the model\'s)')
    g.add_argument('--mean', type=float, nargs=3, default=None)
    g.add_argument('--std', type=float, nargs=3, default=None)

    g = p.add_argument_group('model')
    g.add_argument('--model', default='zoo_swin_tiny')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                   help='extra model arguments, e.g. embed_dim=16 depths="(1,1)" window_size=4')
    g.add_argument('--pretrained', action='store_true', help='start from the model\'s released weights')
    g.add_argument('--pretrained-file', default='', help='start from this checkpoint (any format the model loads)')
    g.add_argument('--drop', type=float, default=0., help='dropout before the classifier')
    g.add_argument('--drop-path', type=float, default=None, help='stochastic depth rate (default: the model\'s)')
    g.add_argument('--grad-checkpointing', action='store_true')
    g.add_argument('--channels-last', action='store_true')
    g.add_argument('--torch-compile', default='', nargs='?', const='default',
                   help='torch.compile the model (optionally with this mode)')

    g = p.add_argument_group('optimization')
    g.add_argument('--epochs', type=int, default=300)
    g.add_argument('--batch-size', '-b', type=int, default=1024, help='GLOBAL batch size (all processes together)')
    g.add_argument('--val-batch-size', type=int, default=0, help='per process; 0 = same as the training batch')
    g.add_argument('--opt', default='adamw')
    g.add_argument('--opt-eps', type=float, default=1e-8)
    g.add_argument('--opt-betas', type=float, nargs=2, default=None)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--lr', type=float, default=1e-3, help='peak learning rate for the global batch')
    g.add_argument('--weight-decay', type=float, default=0.05)
    g.add_argument('--layer-decay', type=float, default=None, help='layer-wise lr decay (uses group_matcher)')
    g.add_argument('--clip-grad', type=float, default=None)
    g.add_argument('--clip-mode', default='norm', choices=['norm', 'value', 'agc'])
    g.add_argument('--sched', default='cosine')
    g.add_argument('--warmup-epochs', type=int, default=20)
    g.add_argument('--warmup-lr', type=float, default=1e-6)
    g.add_argument('--min-lr', type=float, default=1e-5)
    g.add_argument('--cooldown-epochs', type=int, default=0)

    g = p.add_argument_group('augmentation and regularization')
    g.add_argument('--no-aug', action='store_true', help='train transform = eval transform (debugging)')
    g.add_argument('--scale', type=float, nargs=2, default=(0.08, 1.0), help='RandomResizedCrop area range')
    g.add_argument('--ratio', type=float, nargs=2, default=(3 / 4, 4 / 3), help='RandomResizedCrop aspect range')
    g.add_argument('--hflip', type=float, default=0.5)
    g.add_argument('--vflip', type=float, default=0.)
    g.add_argument('--color-jitter', type=float, default=0.4)
    g.add_argument('--aa', default=None, help="auto augment policy, e.g. 'rand-m9-mstd0.5-inc1'")
    g.add_argument('--train-interpolation', default='bicubic')
    g.add_argument('--reprob', type=float, default=0., help='random erasing probability')
    g.add_argument('--remode', default='pixel')
    g.add_argument('--recount', type=int, default=1)
    g.add_argument('--mixup', type=float, default=0., help='mixup alpha (0 = off)')
    g.add_argument('--cutmix', type=float, default=0., help='cutmix alpha (0 = off)')
    g.add_argument('--cutmix-minmax', type=float, nargs=2, default=None)
    g.add_argument('--mixup-prob', type=float, default=1.)
    g.add_argument('--mixup-switch-prob', type=float, default=0.5)
    g.add_argument('--mixup-mode', default='batch')
    g.add_argument('--mixup-off-epoch', type=int, default=0, help='turn mixup/cutmix off from this epoch (0 = never)')
    g.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')
    g.add_argument('--model-ema', action='store_true', help='keep an EMA of the weights (timm ModelEmaV3)')
    g.add_argument('--model-ema-decay', type=float, default=0.9998)
    g.add_argument('--model-ema-warmup', action='store_true')

    g = p.add_argument_group('run')
    g.add_argument('--output', default='output/train', help='folder for checkpoints and logs')
    g.add_argument('--resume', default='', help="checkpoint to continue from ('auto' = OUTPUT/last.pth if present)")
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--deterministic', action='store_true', help='torch.use_deterministic_algorithms (bitwise repeatable)')
    g.add_argument('--device', default='', help="'' = cuda if available, else cpu")
    g.add_argument('--amp', action='store_true', help='mixed precision (autocast)')
    g.add_argument('--default-heap', action='store_true',
                   help="on CPU, leave glibc's heap as it is (by default it keeps freed memory: no page faults for "
                        "each step's large activations, at the cost of keeping the peak resident; zoo.train.heap)")
    g.add_argument('--amp-dtype', default='bfloat16', choices=['bfloat16', 'float16'])
    g.add_argument('--log-interval', type=int, default=50, help='steps between rows of steps.csv')
    g.add_argument('--save-every-steps', type=int, default=0, help='also write last.pth every N steps (mid-epoch)')
    g.add_argument('--stop-after-steps', type=int, default=0,
                   help='debug: save last.pth and exit after this many optimizer steps (resume continues exactly)')
    g.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def load_recipe(path: str, parser: argparse.ArgumentParser) -> dict:
    """Read a YAML recipe into {dest: value}; unknown keys are an error."""
    try:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise UsageError(f'config not found: {path}') from None
    except yaml.YAMLError as e:
        raise UsageError(f'cannot parse config {path}: {str(e).splitlines()[0]}') from None
    dests = {a.dest for a in parser._actions}
    out = {}
    for key, value in recipe.items():
        dest = key.replace('-', '_')
        if dest not in dests or dest == 'config':
            raise UsageError(f'unknown key {key!r} in config {path}')
        out[dest] = tuple(value) if isinstance(value, list) else value
    return out


def parse_train_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = train_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        parser.set_defaults(**load_recipe(first.config, parser))
    return parser.parse_args(argv)
