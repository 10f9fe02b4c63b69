#!/usr/bin/env python
"""Train a zoo_* (or any timm) classifier on an ImageFolder, on timm's training stack.

    python tools/train.py --config configs/cls/swin_tiny.yaml --data-dir /data/imagenet
    torchrun --nproc_per_node 8 tools/train.py --config configs/cls/swin_tiny.yaml --data-dir /data/imagenet
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id job1 \\
        tools/train.py --config configs/cls/swin_tiny.yaml --data-dir /data/imagenet
    python tools/train.py --dataset digits --model zoo_swin_tiny --img-size 32 \\
        --model-kwargs embed_dim=16 depths="(1,1)" num_heads="(1,2)" window_size=4 --epochs 10 -b 64

Options: `python tools/train.py --help`; the loop itself lives in zoo/train/engine.py.
"""
import os
import sys

# tools/ is sys.path[0] when a tool runs as a script, and tools/profile.py would shadow the standard library's
# `profile` module that torch imports: import from the installed packages only.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from zoo.train import UsageError
from zoo.train.config import parse_train_args
from zoo.train.engine import run


def main(argv=None) -> int:
    try:
        summary = run(parse_train_args(argv))
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0 if summary is not None else 1


if __name__ == '__main__':
    sys.exit(main())
